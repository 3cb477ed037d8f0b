"""JSON V2 (Open Inference Protocol) requests <-> ``inference.ModelInferRequest``/``ModelInferResponse``.

The engine builds every V2 request in its REST JSON shape; over gRPC it is converted here, and
the response converted back to the REST JSON shape, so the output file looks the same whichever
transport ran (as :mod:`seldon_batch_tx.protocols.seldon_pb` does for the Seldon protocol).

Tensor data travel in the typed ``contents`` fields (``int64_contents``, ``fp64_contents``...),
which every V2 server reads. FP16 and BF16 have no typed field: a request with such an input sends
all its inputs as little-endian ``raw_input_contents`` instead (the specification allows one or the
other per request; BF16 is the upper half of each FP32). Responses are read from either form
(Triton answers with raw contents).

What the wire cannot carry back unchanged:

* FP32 values are 32-bit (``0.1`` comes back as ``0.10000000149011612``);
* BYTES elements are bytes: those that are valid UTF-8 come back as strings (as over REST),
  others as base64 text;
* parameters: bool, int64, double and string values; other JSON values (lists, objects, null)
  are sent as their JSON text in a ``string_param``. MLServer 1.7's proto has no ``double_param``
  and drops such parameters.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Callable
from typing import Any

import grpc

from ..core.failures import RequestFailed, not_finite
from ..protos import grpc_service_pb2, grpc_service_pb2_grpc
from . import v2_binary

JSONDict = dict[str, Any]

__all__ = ["model_infer_call", "request_builder", "request_from_dict", "response_to_dict"]

#: datatype -> the typed ``InferTensorContents`` field that carries it.
CONTENT_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
#: datatype -> little-endian ``struct`` code of one element in raw contents.
RAW_CODES = {"BOOL": "?", "INT8": "b", "INT16": "h", "INT32": "i", "INT64": "q", "UINT8": "B", "UINT16": "H",
             "UINT32": "I", "UINT64": "Q", "FP16": "e", "FP32": "f", "FP64": "d"}
_INT64 = 2**63


def model_infer_call(channel: grpc.Channel) -> Any:
    """The ``inference.GRPCInferenceService/ModelInfer`` multi-callable on ``channel``."""
    return grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer


def _flat(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    stack = [iter(data)]
    while stack:  # iterative: deep nesting cannot hit the recursion limit
        for x in stack[-1]:
            if isinstance(x, list):
                stack.append(iter(x))
                break
            out.append(x)
        else:
            stack.pop()
    return out


def _set_parameters(target: Any, parameters: Any, where: str) -> None:
    if parameters is None:
        return
    if not isinstance(parameters, dict):
        raise ValueError(f"{where}: parameters must be an object")  # noqa: TRY004 - becomes an error line
    for key, value in parameters.items():
        param = target[str(key)]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int) and -_INT64 <= value < _INT64:
            param.int64_param = value
        elif isinstance(value, float):
            param.double_param = value
        elif isinstance(value, str):
            param.string_param = value
        else:
            param.string_param = json.dumps(value)


class _NonFinite(ValueError):
    """A NaN or infinite number in a response: no strict JSON output line can carry it."""


#: Datatypes whose values may be NaN or infinite.
_FLOAT_TYPES = frozenset({"FP16", "BF16", "FP32", "FP64"})


def _parameters_to_dict(parameters: Any) -> JSONDict:
    out: JSONDict = {}
    for key, param in parameters.items():
        which = param.WhichOneof("parameter_choice")
        value = getattr(param, which) if which else None
        if type(value) is float and value - value != 0.0:
            raise _NonFinite(key)
        out[key] = value
    return out


def _bytes(x: Any) -> bytes:
    if isinstance(x, str):
        return x.encode("utf-8")
    if isinstance(x, (bytes, bytearray)):
        return bytes(x)
    raise ValueError(f"BYTES element {json.dumps(x)[:40]} is not a string")


def _raw(datatype: str, values: list[Any]) -> bytes:
    if datatype == "BF16":
        return v2_binary.pack(datatype, values)
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in map(_bytes, values))
    code = RAW_CODES.get(datatype)
    if code is None:
        raise ValueError(f"unknown datatype {datatype!r}")
    return struct.pack(f"<{len(values)}{code}", *values)


def _unraw(datatype: str, raw: bytes) -> list[Any]:
    if datatype == "BF16":
        return v2_binary.unpack(datatype, raw)
    if datatype == "BYTES":
        out, at = [], 0
        while at + 4 <= len(raw):
            (n,) = struct.unpack_from("<I", raw, at)
            out.append(raw[at + 4:at + 4 + n])
            at += 4 + n
        return out
    code = RAW_CODES.get(datatype)
    if code is None:
        raise ValueError(f"cannot decode raw contents of datatype {datatype!r}")
    return list(struct.unpack(f"<{len(raw) // struct.calcsize(code)}{code}", raw))


def _text(b: bytes) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(b).decode("ascii")


def request_from_dict(body: JSONDict, model_name: str, model_version: str | None = None
                      ) -> grpc_service_pb2.ModelInferRequest:
    """The ``ModelInferRequest`` for a REST-shaped V2 request; ValueError if it cannot be one."""
    try:
        return _request(body, model_name, model_version)
    except RecursionError:
        raise ValueError("invalid V2 request: nested too deeply") from None
    except ValueError:
        raise
    except (TypeError, OverflowError, KeyError, AttributeError, struct.error) as e:
        raise ValueError(f"invalid V2 request: {type(e).__name__}: {e}") from None


def _request(body: JSONDict, model_name: str, model_version: str | None) -> grpc_service_pb2.ModelInferRequest:
    request = grpc_service_pb2.ModelInferRequest(model_name=model_name, model_version=model_version or "",
                                                 id=str(body.get("id") or ""))
    _set_parameters(request.parameters, body.get("parameters"), "request")
    inputs = body.get("inputs") or []
    raw = any(t.get("datatype") in ("FP16", "BF16") for t in inputs)
    for t in inputs:
        datatype = str(t["datatype"])
        tensor = request.inputs.add(name=str(t["name"]), datatype=datatype, shape=[int(d) for d in t["shape"]])
        _set_parameters(tensor.parameters, t.get("parameters"), f"input {t['name']}")
        values = _flat(t["data"])
        if raw:
            request.raw_input_contents.append(_raw(datatype, values))
            continue
        field = CONTENT_FIELDS.get(datatype)
        if field is None:
            raise ValueError(f"input {t['name']}: unknown datatype {datatype!r}")
        if datatype == "BYTES":
            values = [_bytes(x) for x in values]
        getattr(tensor.contents, field).extend(values)
    for o in body.get("outputs") or []:
        wanted = request.outputs.add(name=str(o["name"]))
        _set_parameters(wanted.parameters, o.get("parameters"), f"output {o['name']}")
    return request


def response_to_dict(response: grpc_service_pb2.ModelInferResponse) -> JSONDict:
    """The REST JSON shape of a ``ModelInferResponse``; RequestFailed if it cannot be read."""
    try:
        return _response(response)
    except RecursionError:
        raise RequestFailed("bad_response", "answer nested too deeply", info="bad_response") from None
    except _NonFinite:
        raise not_finite() from None
    except RequestFailed:
        raise
    except Exception as e:  # a conversion error must fail this request, not the worker
        raise RequestFailed("bad_response", f"cannot convert the gRPC V2 response: {e}",
                            info="bad_response") from e


def _response(response: grpc_service_pb2.ModelInferResponse) -> JSONDict:
    out: JSONDict = {"model_name": response.model_name}
    if response.model_version:
        out["model_version"] = response.model_version
    if response.id:
        out["id"] = response.id
    if response.parameters:
        out["parameters"] = _parameters_to_dict(response.parameters)
    outputs = []
    raw = list(response.raw_output_contents)
    _one_kind_of_contents(response, raw)
    for i, t in enumerate(response.outputs):
        if raw:
            values = _unraw(t.datatype, raw[i])
        else:
            field = CONTENT_FIELDS.get(t.datatype)
            values = list(getattr(t.contents, field)) if field else []
        if t.datatype == "BYTES":
            values = [_text(b) for b in values]
        elif t.datatype in _FLOAT_TYPES and not all(map(math.isfinite, values)):
            raise _NonFinite(t.name)
        tensor: JSONDict = {"name": t.name, "shape": list(t.shape), "datatype": t.datatype}
        if t.parameters:
            tensor["parameters"] = _parameters_to_dict(t.parameters)
        tensor["data"] = values
        outputs.append(tensor)
    out["outputs"] = outputs
    return out


def _one_kind_of_contents(response: grpc_service_pb2.ModelInferResponse, raw: list[bytes]) -> None:
    """The protocol's rule: outputs in ``raw_output_contents`` (one entry per output) or in typed
    ``contents``, never both; an answer breaking it is ``bad_response``, not a guess at which to read."""
    if not raw:
        return
    if any(t.contents.ByteSize() for t in response.outputs):
        raise RequestFailed("bad_response", "the V2 answer has both raw_output_contents and typed contents (the "
                            "protocol allows one or the other)", info="bad_response")
    if len(raw) != len(response.outputs):
        raise RequestFailed("bad_response", f"the V2 answer has {len(raw)} raw_output_contents for "
                            f"{len(response.outputs)} outputs", info="bad_response")


RequestBuilder = Callable[[JSONDict], grpc_service_pb2.ModelInferRequest]


def request_builder(model_name: str, model_version: str | None) -> RequestBuilder:
    """``body -> ModelInferRequest`` for one model, as the gRPC transport's ``_build``."""
    return lambda body: request_from_dict(body, model_name, model_version)


def readiness_routes(model: str, version: str | None) -> list[tuple[str, Any]]:
    """``(method name, GrpcRoute)`` of ``ServerReady`` then ``ModelReady``: answers ``{"ready": bool}``."""
    from ..core.target import GrpcRoute

    def server(channel: Any, _service: str) -> Any:
        return grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel).ServerReady

    def model_ready(channel: Any, _service: str) -> Any:
        return grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelReady

    def ready(message: Any) -> dict[str, Any]:
        return {"ready": bool(message.ready)}

    return [("ServerReady", GrpcRoute(server, lambda _body: grpc_service_pb2.ServerReadyRequest(), ready)),
            ("ModelReady", GrpcRoute(model_ready, lambda _body: grpc_service_pb2.ModelReadyRequest(
                name=model, version=version or ""), ready))]


def metadata_route(model: str, version: str | None) -> Any:
    """The ``GrpcRoute`` of ``ModelMetadata``: answers ``{"metadata": ModelMetadataResponse}`` (read by
    :func:`.v2_metadata.from_grpc`), sent through the gRPC transport like the readiness calls."""
    from ..core.target import GrpcRoute
    from ..protos import v2_metadata_pb2

    def method(channel: Any, _service: str) -> Any:
        return channel.unary_unary("/inference.GRPCInferenceService/ModelMetadata",
                                   request_serializer=v2_metadata_pb2.ModelMetadataRequest.SerializeToString,
                                   response_deserializer=v2_metadata_pb2.ModelMetadataResponse.FromString)

    return GrpcRoute(method, lambda _body: v2_metadata_pb2.ModelMetadataRequest(name=model, version=version or ""),
                     lambda message: {"metadata": message}, service="inference.GRPCInferenceService",
                     rpc="ModelMetadata")
