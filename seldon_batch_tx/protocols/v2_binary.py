"""Triton's binary tensor data extension for V2 over REST (``--binary-data``), and reading answers with it.

A request in binary form is its JSON header (each input's ``data`` replaced by ``parameters:
{"binary_data_size": N}``, and ``parameters.binary_data_output: true`` asking for every output in
binary) followed by each input's bytes, with the header's length in the
``Inference-Header-Content-Length`` HTTP header. Elements are little-endian; BYTES elements each
carry a 4-byte length; BF16 is the upper half of the FP32 value (as ``tritonclient`` sends it).
Binary tensors cost no number formatting or parsing and are what Triton needs for FP16 and BF16.

An answer whose outputs carry ``binary_data_size`` (asked for by ``--binary-data``, or by a raw
line's own ``binary_data`` output parameters) is decoded into the same JSON shape as a JSON
answer: each output's ``data`` a flat list, ``binary_data_size`` dropped. An answer that does not
add up (sizes past its end, elements that do not fill the shape, NaN) is ``bad_response``, never
retried (the same answer would come again), with a reason that quotes no binary bytes.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

from ..core import strict_json
from ..core.failures import RequestFailed, not_finite

JSONDict = dict[str, Any]

__all__ = ["HEADER", "decode_answer", "encode_request", "pack", "unpack"]

HEADER = "Inference-Header-Content-Length"
#: What a binary request is (KServe reads a JSON body otherwise; Triton goes by the header alone).
CONTENT_TYPE = "application/octet-stream"
_CODES = {"BOOL": "?", "INT8": "b", "INT16": "h", "INT32": "i", "INT64": "q", "UINT8": "B", "UINT16": "H",
          "UINT32": "I", "UINT64": "Q", "FP16": "e", "FP32": "f", "FP64": "d"}
_FLOATS = frozenset({"FP16", "FP32", "FP64", "BF16"})
_json_end = json.JSONDecoder().raw_decode


def pack(datatype: str, values: list[Any]) -> bytes:
    """The tensor's bytes; ValueError (or struct.error) for a value the datatype cannot hold."""
    if datatype == "BYTES":
        out = []
        for v in values:
            if isinstance(v, str):
                b = v.encode("utf-8")
            elif isinstance(v, list | bytes):  # byte values; a number would be bytes(n): n zero bytes
                b = bytes(v)
            else:
                raise ValueError(f"a BYTES element must be text, not {type(v).__name__}")
            out.append(struct.pack("<I", len(b)) + b)
        return b"".join(out)
    if datatype == "BF16":
        full = struct.pack(f"<{len(values)}f", *values)
        return b"".join(full[i + 2:i + 4] for i in range(0, len(full), 4))
    code = _CODES.get(datatype)
    if code is None:
        raise ValueError(f"unknown datatype {datatype!r}")
    return struct.pack(f"<{len(values)}{code}", *values)


def unpack(datatype: str, raw: bytes) -> list[Any]:
    """The elements of a tensor's bytes (BYTES: UTF-8 text); ValueError when they do not divide evenly."""
    if datatype == "BYTES":
        out, at = [], 0
        while at < len(raw):
            if at + 4 > len(raw):
                raise ValueError("a BYTES element's length is cut off")
            (n,) = struct.unpack_from("<I", raw, at)
            if at + 4 + n > len(raw):
                raise ValueError("a BYTES element runs past its tensor's bytes")
            out.append(raw[at + 4:at + 4 + n].decode("utf-8", errors="replace"))
            at += 4 + n
        return out
    if datatype == "BF16":
        if len(raw) % 2:
            raise ValueError("BF16 bytes are not a whole number of elements")
        halves = struct.unpack(f"<{len(raw) // 2}H", raw)
        return list(struct.unpack(f"<{len(halves)}f", struct.pack(f"<{len(halves)}I", *(h << 16 for h in halves))))
    code = _CODES.get(datatype)
    if code is None:
        raise ValueError(f"cannot read binary data of datatype {datatype!r}")
    size = struct.calcsize(code)
    if len(raw) % size:
        raise ValueError(f"{len(raw)} bytes are not a whole number of {datatype} elements")
    return list(struct.unpack(f"<{len(raw) // size}{code}", raw))


def encode_request(body: JSONDict) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    """A V2 request in binary form: the bytes to send and the extra HTTP header."""
    blobs, inputs = [], []
    for tensor in body.get("inputs") or []:
        data = tensor.get("data")
        try:  # the codec's data are flat; a raw line's may be nested
            raw = pack(str(tensor["datatype"]), data if isinstance(data, list) else [data])
        except (struct.error, TypeError, AttributeError):
            raw = pack(str(tensor["datatype"]), _flat(data))
        blobs.append(raw)
        own = tensor.get("parameters")
        params = {**(own if isinstance(own, dict) else {}), "binary_data_size": len(raw)}
        inputs.append({k: v for k, v in tensor.items() if k != "data"} | {"parameters": params})
    own = body.get("parameters")
    parameters = {**(own if isinstance(own, dict) else {}), "binary_data_output": True}
    header = json.dumps({**body, "inputs": inputs, "parameters": parameters}, separators=(",", ":"),
                        allow_nan=False).encode()
    return b"".join([header, *blobs]), ((HEADER, str(len(header))),)


def _flat(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    return [x for item in data for x in _flat(item)]


def _bad(reason: str) -> RequestFailed:
    return RequestFailed("bad_response", f"HTTP 200 with an answer that is not a V2 response: {reason}",
                         code=200, retryable=False, info="bad_response")


def decode_answer(body: bytes) -> tuple[Any, bytes]:
    """A 2xx answer's JSON value (binary outputs decoded into ``data``), and the JSON text it came from.

    strict_json's errors for JSON that is not strict; RequestFailed ``bad_response`` (not retried)
    for binary outputs that do not add up.
    """
    try:
        value = strict_json.decode(body, any_encoding=True)
    except strict_json.TooDeep:
        raise
    except ValueError:
        if not body.startswith(b"{") or b"binary_data_size" not in body:
            raise
    else:  # binary outputs that are all JSON whitespace (bytes 9, 10, 13, 32) make the whole body JSON too
        if not _binary_outputs(value):
            return value, body
    try:  # JSON header then bytes: latin-1 maps each byte to one character, so the end is a byte offset
        _, end = _json_end(body.decode("latin-1"))
    except ValueError:
        raise _bad("neither JSON nor a JSON header followed by binary outputs") from None
    header = body[:end]
    answer = strict_json.decode(header)
    if not isinstance(answer, dict):
        raise _bad("its JSON header is not an object")
    return _with_binary_outputs(answer, body[end:]), header


def _binary_outputs(answer: Any) -> bool:
    """Whether any output of ``answer`` says its data follow the JSON header."""
    outputs = answer.get("outputs") if isinstance(answer, dict) else None
    return isinstance(outputs, list) and any(
        isinstance(o, dict) and isinstance(o.get("parameters"), dict) and "binary_data_size" in o["parameters"]
        for o in outputs)


def _with_binary_outputs(answer: JSONDict, rest: bytes) -> JSONDict:
    outputs = answer.get("outputs")
    if not isinstance(outputs, list):
        raise _bad("binary data without outputs")
    at, decoded = 0, []
    for output in outputs:
        params = output.get("parameters") if isinstance(output, dict) else None
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is None or not isinstance(params, dict):
            decoded.append(output)
            continue
        name = output.get("name", "?")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or at + size > len(rest):
            raise _bad(f"output {name}: binary_data_size {size!r} does not fit the {len(rest) - at} bytes left")
        datatype = str(output.get("datatype"))
        try:
            values = unpack(datatype, rest[at:at + size])
        except ValueError as e:
            raise _bad(f"output {name}: {e}") from None
        at += size
        shape = output.get("shape")
        count = math.prod(shape) if isinstance(shape, list) and all(isinstance(d, int) for d in shape) else -1
        if count != len(values):
            raise _bad(f"output {name}: {len(values)} {datatype} elements do not fill its shape {shape}")
        if datatype in _FLOATS and not all(map(math.isfinite, values)):
            raise not_finite(200)
        rest_params = {k: v for k, v in params.items() if k != "binary_data_size"}
        tensor = {k: v for k, v in output.items() if k not in ("parameters", "data")}
        if rest_params:
            tensor["parameters"] = rest_params
        tensor["data"] = values
        decoded.append(tensor)
    if at != len(rest):
        raise _bad(f"{len(rest) - at} bytes after the last binary output")
    return {**answer, "outputs": decoded}
