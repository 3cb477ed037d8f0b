"""The hostile server's REST side: a raw HTTP/1.1 protocol (not twisted.web, which would refuse to
produce answers that are not valid HTTP) writing the answer :func:`.hostile_answers.answer_for` chose.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from tests.hostile_answers import (
    ENDLESS_BYTES,
    MAX_REQUEST,
    Answer,
    RequestLog,
    Scripts,
    answer_for,
    request_tags,
)


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
