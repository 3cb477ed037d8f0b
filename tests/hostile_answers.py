"""What the hostile server answers: the modes (issue 11's hostile answers), the per-request choice of one
(``answer_for``, test scripts), and the request log both its REST and gRPC sides write.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Sequence
from typing import Any

from tests.faultserver import echo, encode

LOOPBACK = "127.0.0.1"
DEEP = 100_000
#: Largest request accepted (a hostile client test never sends more; past it the connection is dropped).
MAX_REQUEST = 256 << 20
#: Upper bound of what the endless modes send before giving up on a client that keeps reading.
ENDLESS_BYTES = 2 << 30

#: Mode -> what it answers (REST).  gRPC understands the ones in ``GRPC_MODES``.
MODES = {
    "echo": "the echo model's answer (the request's data back, its tags)",
    "deep": f"200 with a JSON answer nested {DEEP:,} deep",
    "bad_shape": '200 with {"data":{"tensor":{"shape":[2],"values":5}}}',
    "wrong_rows": "200 with the echo answer plus one row",
    "few_rows": "200 with the echo answer minus its last row",
    "wrong_type": '200 with {"data": "not an object"}',
    "not_object": "200 with a JSON array",
    "not_json": "200 with an HTML body",
    "truncated": "200, a Content-Length, half of the body, then the connection is closed",
    "reset": "200, a Content-Length, part of the body, then the connection is aborted (RST)",
    "close": "the connection is closed without any answer",
    "garbage": "bytes that are not HTTP",
    "oversize_length": "200 with Content-Length 8 GiB and a body streamed as fast as the client reads",
    "oversize_body": "200 with a real 8 MiB valid JSON answer (Content-Length)",
    "oversize_chunked": "200 chunked, chunks streamed without end as fast as the client reads",
    "trickle": "200, Content-Length 1 MB, then one byte every 0.2 s",
    "trickle_headers": "a status line, then one header line every 0.2 s, never ending the headers",
    "flood_headers": "a status line, then header lines as fast as the client reads, never ending",
    "stall": "no answer at all",
    "huge_int": "200 with an integer of 100,000 digits in the data",
    "huge_float": "200 with 1e999 (infinity for most parsers) in the data",
    "non_utf8": "200 with a body that is not UTF-8",
    "status_201": "201 with the echo answer",
    "status_204": "204 with no body",
    "status_302": "302 to 127.0.0.1:1",
    "status_418": "418 with a JSON error",
    "failure": '200 with {"status": {"status": "FAILURE", ...}}',
    "script": "the answer the test scripted for this batch id and index",
}
GRPC_MODES = ("echo", "failure", "bad_shape", "wrong_rows", "few_rows", "oversize_body", "stall", "deep",
              "huge_float", "abort_internal", "script")


# -- answers --------------------------------------------------------------------------------------


def request_tags(message: Any) -> dict[str, Any]:
    """The batch tags of a Seldon or V2 request (or of a Feedback's request), {} when there are none."""
    if not isinstance(message, dict):
        return {}
    for holder in (message, message.get("request")):
        if isinstance(holder, dict):
            meta = holder.get("meta")
            if isinstance(meta, dict) and isinstance(meta.get("tags"), dict):
                return dict(meta["tags"])
    params = message.get("parameters")
    return dict(params) if isinstance(params, dict) else {}


def change_rows(answer: dict[str, Any], extra: int) -> dict[str, Any]:
    """The answer with `extra` rows more (or fewer) than the model gave: a mini-batch mismatch."""
    data = answer.get("data")
    if isinstance(data, dict) and isinstance(data.get("ndarray"), list):
        rows = data["ndarray"]
        data["ndarray"] = rows + rows[:1] * extra if extra > 0 else rows[: max(0, len(rows) + extra)]
    elif isinstance(data, dict) and isinstance(data.get("tensor"), dict):
        tensor = data["tensor"]
        shape = list(tensor.get("shape") or [1])
        values = list(tensor.get("values") or [])
        row = len(values) // shape[0] if shape[0] else 0
        shape[0] = max(0, shape[0] + extra)
        tensor["shape"], tensor["values"] = shape, (values + values[:row] * extra if extra > 0
                                                    else values[: row * shape[0]])
    outputs = answer.get("outputs")
    if isinstance(outputs, list):
        for output in outputs:
            shape = list(output.get("shape") or [1])
            values = list(output.get("data") or [])
            row = len(values) // shape[0] if shape[0] else 0
            shape[0] = max(0, shape[0] + extra)
            output["shape"], output["data"] = shape, (values + values[:row] * extra if extra > 0
                                                      else values[: row * shape[0]])
    return answer


def v2_echo(message: dict[str, Any], model: str) -> dict[str, Any]:
    """A V2 server's echo: every input back as an output of the same name, shape and data."""
    inputs: list[Any] = message["inputs"] if isinstance(message.get("inputs"), list) else []
    return {"model_name": model, "id": message.get("id", ""), "parameters": message.get("parameters", {}),
            "outputs": [{k: i.get(k) for k in ("name", "shape", "datatype", "data")} for i in inputs]}


def deep_json(depth: int = DEEP) -> bytes:
    """A Seldon answer whose ndarray is nested `depth` deep."""
    return b'{"data":{"ndarray":' + b"[" * depth + b"1" + b"]" * depth + b"}}"


class Answer:
    """What one request gets: a status, headers, body bytes and what happens to the connection."""

    def __init__(self, status: int = 200, body: bytes = b"", *, headers: Sequence[tuple[str, str]] = (),
                 special: str | None = None, close: bool = False, size: int = 0) -> None:
        self.status = status
        self.body = body
        self.headers = list(headers)
        self.special = special  # None: a normal answer; else the name of a misbehaviour
        self.close = close
        self.size = size


def json_answer(value: Any, status: int = 200) -> Answer:
    return Answer(status, encode(value) if isinstance(value, dict) else json.dumps(value).encode())


def answer_for(spec: Any, message: Any, model: str, v2: bool) -> Answer:
    """The REST answer a mode name or script SPEC gives to `message` (the decoded request, or None)."""
    if isinstance(spec, str):
        spec = {"mode": spec}
    mode = spec.get("mode", "echo")
    if mode in ("echo", "wrong_rows", "few_rows", "status_201"):
        if not isinstance(message, dict):
            return json_answer({"status": {"code": -1, "info": "request is not JSON", "status": "FAILURE"}}, 400)
        try:
            answer = v2_echo(message, model) if v2 else echo(message)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            return json_answer({"status": {"code": -1, "info": str(e)[:200], "status": "FAILURE"}}, 400)
        extra = {"wrong_rows": 1, "few_rows": -1}.get(mode, int(spec.get("extra_rows", 0)))
        if extra:
            answer = change_rows(answer, extra)
        return json_answer(answer, 201 if mode == "status_201" else int(spec.get("status", 200)))
    tags = request_tags(message)
    if mode == "deep":
        return Answer(200, deep_json(int(spec.get("depth", DEEP))))
    if mode == "bad_shape":
        return json_answer({"data": {"tensor": {"shape": [2], "values": 5}}, "meta": {"tags": tags}})
    if mode == "wrong_type":
        return json_answer({"data": "not an object", "meta": {"tags": tags}})
    if mode == "not_object":
        return Answer(200, b"[1, 2, 3]\n")
    if mode == "not_json":
        return Answer(200, b"<html><body>502 upstream hiccup</body></html>", headers=[("Content-Type", "text/html")])
    if mode == "huge_int":
        return Answer(200, b'{"data":{"ndarray":[[' + b"9" * 100_000 + b"]]}}")
    if mode == "huge_float":
        return Answer(200, b'{"data":{"ndarray":[[1e999, -1e999]]}}')
    if mode == "non_utf8":
        return Answer(200, b'{"data":{"ndarray":[["\xff\xfe\xc3\x28"]]}}')
    if mode == "status_204":
        return Answer(204, b"")
    if mode == "status_302":
        return Answer(302, b"", headers=[("Location", "http://127.0.0.1:1/elsewhere")])
    if mode == "status_418":
        return json_answer({"status": {"code": 418, "info": "teapot", "status": "FAILURE"}}, 418)
    if mode == "failure":
        return json_answer({"status": {"code": -1, "info": "boom", "reason": "MICROSERVICE_INTERNAL_ERROR",
                                       "status": "FAILURE"}, "meta": {"tags": tags}})
    if mode == "json":
        return json_answer(spec.get("value"), int(spec.get("status", 200)))
    if mode == "raw":
        body = base64.b64decode(spec["body_b64"]) if "body_b64" in spec else str(spec.get("body", "")).encode()
        return Answer(int(spec.get("status", 200)), body, close=bool(spec.get("close")),
                      headers=[(str(k), str(v)) for k, v in spec.get("headers", [])],
                      special="truncated" if spec.get("truncate") else None)
    if mode == "oversize":
        special = "oversize_chunked" if spec.get("chunked") else "oversize_exact"
        return Answer(200, special=special, size=int(spec.get("bytes", 8 << 20)))
    if mode == "oversize_body":
        return Answer(200, special="oversize_exact", size=8 << 20)
    if mode in MODES or mode == "truncated":
        return Answer(200, encode({"data": {"ndarray": [[1, 2, 3]]}, "meta": {"tags": tags}}), special=mode)
    return json_answer({"status": {"code": -1, "info": f"unknown mode {mode!r}", "status": "FAILURE"}}, 400)


class Scripts:
    """Per-batch-id answer scripts, shared by the REST and gRPC sides (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, dict[str, Any]] = {}

    def put(self, batch_id: str, script: dict[str, Any]) -> None:
        with self._lock:
            self._scripts[batch_id] = script

    def spec(self, tags: dict[str, Any]) -> Any:
        with self._lock:
            script = self._scripts.get(str(tags.get("batch_id")))
        if script is None:
            return {"mode": "json", "status": 404, "value": {"status": {"code": 404, "info": "no script",
                                                                        "status": "FAILURE"}}}
        return script.get("answers", {}).get(str(tags.get("batch_index")), script.get("default", "echo"))


class RequestLog:
    """Appends one JSON line per request received (flushed at once: tests read it while we run)."""

    def __init__(self, path: str | None) -> None:
        self._lock = threading.Lock()
        self._file = open(path, "a") if path else None  # noqa: SIM115 - lives as long as the process

    def record(self, **fields: Any) -> None:
        if self._file is None:
            return
        with self._lock:
            self._file.write(json.dumps(fields, default=str) + "\n")
            self._file.flush()
