"""A model server that answers with hostile responses on purpose (loopback only), for the hostile suites.

Run as a subprocess: ``python -m tests.hostile_server --port P [--grpc-port G] [--mode echo]
[--log FILE] [--stall-seconds 120]``; :class:`HostileServer` does that for tests.

Every answer is chosen per request, so one server serves a whole test module:

* REST with ``-g istio|ambassador``: the deployment name in the path is the mode
  (``/seldon/NS/MODE/api/v1.0/predictions``); V2 (``/v2/models/MODE/infer``) likewise; with
  ``-g seldon`` the ``--mode`` default applies.  gRPC: the ``seldon`` metadata (the deployment name).
* Mode ``script``: the answer comes from a script the test stored beforehand with
  ``PUT /_script/BATCH_ID`` (JSON ``{"default": SPEC, "answers": {"FIRST_INDEX": SPEC}}``), looked
  up by the request's ``batch_id`` and the ``batch_index`` of its first line.  A SPEC is a mode name
  or a dict (``{"mode": "raw", "status": 200, "body_b64": "...", "close": false}``,
  ``{"mode": "json", "value": ...}``, ``{"mode": "echo", "extra_rows": -1}``,
  ``{"mode": "truncated"}``, ``{"mode": "oversize", "bytes": N, "chunked": true}``; a raw answer may
  carry ``"headers": [[NAME, VALUE], ...]``, e.g. a redirect's ``Location``).

Every request received is appended to ``--log`` as one JSON line (mode, path, batch tags,
``X-Auth-Token``, size and the first 2,000 bytes), so a test can prove what was, or was never, sent.

The modes (REST) are the hostile answers of issue 11: see ``MODES``.  Why a raw protocol and not
twisted.web: several answers are not valid HTTP (never-ending headers, a truncated body, a
Content-Length the body never reaches), which a real web framework would refuse to produce.
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

from tests.faultserver import echo, encode
from tests.processes import ManagedProcess

REPO_ROOT = Path(__file__).resolve().parent.parent
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


# -- REST: a raw HTTP/1.1 protocol, to be able to break the rules --------------------------------


def make_factory(args: argparse.Namespace, scripts: Scripts, requests: RequestLog, reactor: Any) -> Any:
    from twisted.internet import interfaces
    from twisted.internet.protocol import Factory, Protocol
    from zope.interface import implementer

    @implementer(interfaces.IPullProducer)
    class Stream:
        """Writes `chunk()` each time the client has read the last one: fast, yet bounded by its reading."""

        def __init__(self, proto: Any, chunk: Callable[[], bytes | None]) -> None:
            self.proto, self.chunk = proto, chunk

        def resumeProducing(self) -> None:
            data = self.chunk()
            if data is None or self.proto.gone:
                self.proto.transport.unregisterProducer()
                if not self.proto.gone:
                    self.proto.transport.loseConnection()
                return
            self.proto.transport.write(data)

        def stopProducing(self) -> None:
            self.proto.gone = True

    class Hostile(Protocol):
        transport: Any  # a TCP transport: abortConnection, producers

        def connectionMade(self) -> None:
            self.buf = bytearray()
            self.busy = False
            self.gone = False
            self.calls: list[Any] = []

        def connectionLost(self, reason: Any = None) -> None:
            self.gone = True
            for call in self.calls:
                if call.active():
                    call.cancel()

        def later(self, delay: float, fn: Callable[..., Any], *a: Any) -> None:
            self.calls = [c for c in self.calls if c.active()]
            self.calls.append(reactor.callLater(delay, fn, *a))

        def dataReceived(self, data: bytes) -> None:
            self.buf += data
            if len(self.buf) > MAX_REQUEST:
                self.transport.abortConnection()
                return
            self.parse()

        def parse(self) -> None:
            while not self.busy and not self.gone:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
                try:
                    method, target, _ = lines[0].split(" ", 2)
                except ValueError:
                    self.transport.abortConnection()
                    return
                headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
                start = end + 4
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    parsed = self.dechunk(start)
                    if parsed is None:
                        return
                    body, consumed = parsed
                else:
                    length = int(headers.get("content-length", "0") or 0)
                    if len(self.buf) < start + length:
                        return
                    body, consumed = bytes(self.buf[start:start + length]), start + length
                del self.buf[:consumed]
                self.busy = True
                self.handle(method, target, headers, body)

        def dechunk(self, pos: int) -> tuple[bytes, int] | None:
            parts: list[bytes] = []
            while True:
                eol = self.buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                size = int(bytes(self.buf[pos:eol]).split(b";")[0] or b"0", 16)
                if size == 0:
                    trailer = self.buf.find(b"\r\n", eol + 2)
                    return (b"".join(parts), trailer + 2) if trailer >= 0 else None
                if len(self.buf) < eol + 2 + size + 2:
                    return None
                parts.append(bytes(self.buf[eol + 2:eol + 2 + size]))
                pos = eol + 2 + size + 2

        def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
            path = target.split("?", 1)[0]
            if method == "GET":
                if path not in ("/_ping", "/health/ping"):  # e.g. a client that followed a 303
                    requests.record(proto="rest", method=method, path=path, auth=headers.get("x-auth-token"))
                self.send(Answer(200, b"pong" if path in ("/_ping", "/health/ping") else b"{}"))
                return
            if method == "PUT" and path.startswith("/_script/"):
                scripts.put(path[len("/_script/"):], json.loads(body))
                self.send(Answer(200, b"{}"))
                return
            parts = path.strip("/").split("/")
            v2 = len(parts) >= 4 and parts[0] == "v2" and parts[1] == "models"
            model = parts[2] if v2 or (len(parts) >= 5 and parts[0] == "seldon") else args.mode
            try:
                message: Any = json.loads(body)
            except (ValueError, RecursionError):
                message = None
            tags = request_tags(message)
            spec: Any = scripts.spec(tags) if model == "script" else model
            requests.record(proto="rest", method=method, path=path, mode=spec, batch_id=tags.get("batch_id"),
                            batch_index=tags.get("batch_index"), auth=headers.get("x-auth-token"),
                            bytes=len(body), head=body[:2000].decode("utf-8", "replace"))
            self.send(answer_for(spec, message, model, v2))

        # -- writing ----------------------------------------------------------------------------

        def head(self, status: int, headers: Sequence[tuple[str, str]]) -> bytes:
            lines = [f"HTTP/1.1 {status} Hostile"] + [f"{k}: {v}" for k, v in headers]
            return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

        def done(self, close: bool) -> None:
            if close:
                self.transport.loseConnection()
                return
            self.busy = False
            self.parse()

        def send(self, answer: Answer) -> None:
            special = answer.special
            t = self.transport
            if special is None:
                headers = [("Content-Type", "application/json"), *answer.headers]
                if answer.status not in (204, 304):
                    headers.append(("Content-Length", str(len(answer.body))))
                t.write(self.head(answer.status, headers) + answer.body)
                self.done(answer.close)
            elif special in ("truncated", "reset"):
                t.write(self.head(200, [("Content-Type", "application/json"),
                                        ("Content-Length", str(len(answer.body) + 100))]))
                t.write(answer.body[: max(1, len(answer.body) // 2)])
                if special == "reset":
                    self.later(0.05, t.abortConnection)
                else:
                    self.later(0.05, t.loseConnection)
            elif special == "close":
                t.loseConnection()
            elif special == "garbage":
                t.write(b"HELLO THIS IS NOT HTTP\x00\xff\r\n\r\n")
                self.later(0.05, t.loseConnection)
            elif special == "stall":
                self.later(args.stall_seconds, t.loseConnection)
            elif special == "trickle":
                t.write(self.head(200, [("Content-Type", "application/json"), ("Content-Length", "1000000")]))
                self.trickle(b'{"data": {"ndarray": [' + b" " * 1_000_000, 0, time.monotonic())
            elif special == "trickle_headers":
                t.write(b"HTTP/1.1 200 OK\r\n")
                self.trickle_header(0, time.monotonic())
            elif special == "flood_headers":
                t.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
                line = b"X-Hostile: " + b"h" * 1000 + b"\r\n"
                self.stream(lambda: line * 64)
            elif special == "oversize_length":
                t.write(self.head(200, [("Content-Type", "application/json"), ("Content-Length", str(8 << 30))]))
                t.write(b'{"strData": "')
                self.stream(lambda: b"x" * 65536)
            elif special == "oversize_exact":
                size = max(64, answer.size)
                body = b'{"strData": "' + b"x" * (size - 16) + b'"}\n'
                t.write(self.head(200, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]))
                self.stream_bytes(body)
            elif special == "oversize_chunked":
                t.write(self.head(200, [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")]))
                first = b'{"strData": "'
                t.write(b"%x\r\n%s\r\n" % (len(first), first))
                chunk = b"x" * 65536
                framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
                limit = answer.size if answer.size else 0
                if limit:
                    end = b'"}\n'
                    count = max(1, limit // len(chunk))
                    sent = [0]

                    def next_chunk() -> bytes | None:
                        sent[0] += 1
                        if sent[0] < count:
                            return framed
                        if sent[0] == count:
                            return b"%x\r\n%s\r\n0\r\n\r\n" % (len(end), end)
                        return None
                    self.stream(next_chunk, keep=True)
                else:
                    self.stream(lambda: framed)
            else:  # pragma: no cover - MODES and specials are kept in step
                t.abortConnection()

        def stream(self, chunk: Callable[[], bytes | None], keep: bool = False) -> None:
            sent = [0]
            started = time.monotonic()

            def bounded() -> bytes | None:
                if sent[0] > ENDLESS_BYTES or time.monotonic() - started > args.stall_seconds:
                    return None
                data = chunk()
                if data is None:
                    if keep:
                        self.transport.unregisterProducer()
                        self.done(False)
                        return b""
                    return None
                sent[0] += len(data)
                return data

            self.transport.registerProducer(Stream(self, bounded), False)

        def stream_bytes(self, body: bytes) -> None:
            view = memoryview(body)
            pos = [0]

            def chunk() -> bytes | None:
                if pos[0] >= len(view):
                    return None
                part = bytes(view[pos[0]:pos[0] + 65536])
                pos[0] += len(part)
                return part

            self.stream(chunk, keep=True)

        def trickle(self, body: bytes, pos: int, started: float) -> None:
            if self.gone or pos >= len(body) or time.monotonic() - started > args.stall_seconds:
                if not self.gone:
                    self.transport.loseConnection()
                return
            self.transport.write(body[pos:pos + 1])
            self.later(0.2, self.trickle, body, pos + 1, started)

        def trickle_header(self, n: int, started: float) -> None:
            if self.gone or time.monotonic() - started > args.stall_seconds:
                if not self.gone:
                    self.transport.loseConnection()
                return
            self.transport.write(b"X-Trickle-%d: yes\r\n" % n)
            self.later(0.2, self.trickle_header, n + 1, started)

    return Factory.forProtocol(Hostile)


# -- gRPC -----------------------------------------------------------------------------------------


def make_grpc_server(args: argparse.Namespace, scripts: Scripts, requests: RequestLog) -> Any:
    import grpc
    from google.protobuf import json_format

    from seldon_batch_tx.protos import prediction_pb2, prediction_pb2_grpc

    def tags_of(request: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in request.meta.tags.items():
            kind = value.WhichOneof("kind")
            out[key] = int(value.number_value) if kind == "number_value" else getattr(value, kind or "string_value")
        return out

    def echo_message(request: Any, extra: int) -> Any:
        response = prediction_pb2.SeldonMessage()
        response.CopyFrom(request)
        if extra and response.data.WhichOneof("data_oneof") == "ndarray":
            values = response.data.ndarray.values
            if extra > 0:
                values.add().CopyFrom(values[0])
            elif len(values):
                del values[len(values) - 1]
        elif extra and response.data.WhichOneof("data_oneof") == "tensor":
            tensor = response.data.tensor
            row = len(tensor.values) // tensor.shape[0] if tensor.shape and tensor.shape[0] else 0
            if extra > 0:
                tensor.values.extend(tensor.values[:row])
                tensor.shape[0] += 1
            elif tensor.shape:
                tensor.shape[0] = max(0, tensor.shape[0] - 1)
                del tensor.values[row * tensor.shape[0]:]
        return response

    class Hostile(prediction_pb2_grpc.SeldonServicer, prediction_pb2_grpc.ModelServicer):  # type: ignore[misc]
        def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802
            metadata = dict(context.invocation_metadata())
            tags = tags_of(request)
            mode: Any = metadata.get("seldon", args.mode)
            if mode == "script":
                mode = scripts.spec(tags)
            spec = mode if isinstance(mode, dict) else {"mode": mode}
            name = spec.get("mode", "echo")
            requests.record(proto="grpc", mode=spec, batch_id=tags.get("batch_id"),
                            batch_index=tags.get("batch_index"), auth=metadata.get("x-auth-token"),
                            bytes=request.ByteSize(), head=str(request)[:2000])
            if name in ("echo", "wrong_rows", "few_rows"):
                extra = {"wrong_rows": 1, "few_rows": -1}.get(name, int(spec.get("extra_rows", 0)))
                return echo_message(request, extra)
            response = prediction_pb2.SeldonMessage()
            response.meta.CopyFrom(request.meta)
            if name == "failure":
                response.status.code = -1
                response.status.info = "boom"
                response.status.status = prediction_pb2.Status.FAILURE
            elif name == "bad_shape":
                response.data.tensor.shape.append(2)
                response.data.tensor.values.append(5)
            elif name in ("oversize_body", "oversize"):
                response.strData = "x" * int(spec.get("bytes", 8 << 20))
            elif name == "stall":
                deadline = time.monotonic() + args.stall_seconds
                while context.is_active() and time.monotonic() < deadline:
                    time.sleep(0.02)
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "stalled")
            elif name == "deep":
                # Past protobuf's parse recursion limit (100) on the client, cheap to build here.
                inner: dict[str, Any] | list[Any] = [1.0]
                for _ in range(int(spec.get("depth", 150))):
                    inner = [inner]
                json_format.ParseDict({"data": {"ndarray": inner}}, response)
            elif name == "huge_float":
                json_format.ParseDict({"data": {"ndarray": [[1.0, 2.0]]}}, response)
                response.data.ndarray.values[0].list_value.values[0].number_value = float("inf")
            elif name == "json":
                try:
                    json_format.ParseDict(spec.get("value"), response)
                except (json_format.ParseError, TypeError, ValueError, AttributeError):
                    context.abort(grpc.StatusCode.INTERNAL, "scripted answer is not a SeldonMessage")
            else:
                context.abort(grpc.StatusCode.INTERNAL, f"hostile mode {name}")
            return response

    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=options)
    prediction_pb2_grpc.add_SeldonServicer_to_server(Hostile(), server)
    prediction_pb2_grpc.add_ModelServicer_to_server(Hostile(), server)
    server.add_insecure_port(f"{LOOPBACK}:{args.grpc_port}")
    return server


# -- process --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.hostile_server", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, default=0)
    parser.add_argument("--mode", default="echo", choices=sorted(MODES))
    parser.add_argument("--log", default=None, help="append one JSON line per request received")
    parser.add_argument("--stall-seconds", type=float, default=120.0,
                        help="how long the stalling and endless modes keep going at most")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    scripts, requests = Scripts(), RequestLog(args.log)
    from twisted.internet import reactor

    if args.grpc_port:
        grpc_server = make_grpc_server(args, scripts, requests)
        grpc_server.start()
        reactor.addSystemEventTrigger("before", "shutdown", lambda: grpc_server.stop(0))  # type: ignore[attr-defined]
    reactor.listenTCP(args.port, make_factory(args, scripts, requests, reactor),  # type: ignore[attr-defined]
                      interface=LOOPBACK, backlog=256)
    reactor.run()  # type: ignore[attr-defined]


# -- for tests: the server as a subprocess --------------------------------------------------------


class HostileServer(ManagedProcess):
    """``python -m tests.hostile_server`` as a child process on free loopback ports."""

    name = "hostile server"
    startup_timeout = 20.0
    poll_interval = 0.05
    stop_signal = signal.SIGKILL  # nothing to flush: the request log is flushed line by line

    def __init__(self, log: str | Path, *, grpc: bool = False, mode: str = "echo", stall_seconds: float = 120.0,
                 ) -> None:
        from tests.servers import free_ports

        self.port, grpc_port = free_ports(2)
        self.grpc_port = grpc_port if grpc else 0
        self.mode = mode
        self.request_log = Path(log)
        self.stall_seconds = stall_seconds
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def rest_host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def grpc_host(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    def where(self) -> str:
        return self.rest_host

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tests.hostile_server", "--port", str(self.port), "--grpc-port",
                str(self.grpc_port), "--mode", self.mode, "--log", str(self.request_log),
                "--stall-seconds", str(self.stall_seconds)]

    def start(self, timeout: float = 20.0) -> HostileServer:
        from tests.servers import loopback_env

        self.spawn(self.command(), cwd=REPO_ROOT, env=loopback_env())
        self.wait_ready_or_stop(timeout)
        return self

    def is_ready(self) -> bool:
        from tests.servers import http_request, tcp_accepts

        try:
            ready = http_request("GET", self.rest_host, "/_ping", timeout=1.0)[1] == b"pong"
        except OSError:
            ready = False
        return ready and (not self.grpc_port or tcp_accepts(LOOPBACK, self.grpc_port))

    def script(self, batch_id: str, default: Any = "echo", answers: dict[int, Any] | None = None) -> None:
        """Store the answers for `batch_id`: ``answers[first batch_index]``, else `default`."""
        from tests.servers import http_request

        body = {"default": default, "answers": {str(k): v for k, v in (answers or {}).items()}}
        status, text = http_request("PUT", self.rest_host, f"/_script/{batch_id}", body, timeout=10.0)
        if status != 200:
            raise RuntimeError(f"hostile server refused the script: {status} {text[:200]!r}")

    def received(self) -> list[dict[str, Any]]:
        """Every request recorded so far (a torn last line, being written, is left out)."""
        if not self.request_log.exists():
            return []
        out = []
        for line in self.request_log.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


if __name__ == "__main__":
    main()
