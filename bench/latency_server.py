"""A fixed-latency HTTP/1.1 server for bench/: every answer leaves `--delay` seconds after its request.

    .venv/bin/python bench/latency_server.py --port PORT [--delay 0.01] [--reuseport]

Why not twisted.web: its per-request cost (~0.3 ms) caps one process near 3,000 answers/s,
below the 20,000/s and 100,000/s that 200 and 1,000 workers at 10 ms ask for.  This server
speaks just enough HTTP/1.1 on Twisted's protocol layer (keep-alive, Content-Length bodies,
`Connection: close`) and answers from ``reactor.callLater``, so thousands of requests wait
at once without a thread each.  With ``--reuseport`` several processes share the port
(SO_REUSEPORT), which bench/servers.py uses to spread the load over the cores.

Answers: the Seldon paths get a one-row SeldonMessage, ``/v2/models/*/infer`` a one-row V2
response, ``GET /health/ping`` gets ``pong``.  Prints ``READY <port>`` once listening.
Loopback only.
"""

from __future__ import annotations

import argparse
import socket
from typing import Any

from twisted.internet import protocol

SELDON_BODY = (
    b'{"data":{"names":["t:0","t:1","t:2","t:3"],"ndarray":[[1.0,2.0,3.0,4.0]]},'
    b'"meta":{"tags":{"model":"bench"}}}'
)
V2_BODY = (
    b'{"model_name":"bench","id":"bench","outputs":[{"name":"output-0","shape":[1,4],'
    b'"datatype":"FP64","data":[1.0,2.0,3.0,4.0]}]}'
)
MAX_HEADER = 64 * 1024


def response(status: bytes, body: bytes, close: bool) -> bytes:
    """One whole HTTP/1.1 response, built once per kind of answer."""
    connection = b"close" if close else b"keep-alive"
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode() + b"\r\nConnection: " + connection + b"\r\n\r\n" + body
    )


ANSWERS: dict[tuple[str, bool], bytes] = {
    (kind, close): response(status, body, close)
    for kind, status, body in (
        ("seldon", b"200 OK", SELDON_BODY),
        ("v2", b"200 OK", V2_BODY),
        ("pong", b"200 OK", b"pong"),
        ("missing", b"404 Not Found", b'{"error":"not found"}'),
    )
    for close in (False, True)
}


def kind_of(path: bytes) -> str:
    """Which fixed answer a request path gets."""
    path = path.split(b"?", 1)[0]
    if path.endswith(b"/api/v1.0/predictions"):
        return "seldon"
    if path.startswith(b"/v2/models/") and path.endswith(b"/infer"):
        return "v2"
    if path == b"/health/ping":
        return "pong"
    return "missing"


class DelayedHTTP(protocol.Protocol):
    """Parses requests one after another; each answer is written `delay` seconds after its
    request arrived (equal delays keep pipelined answers in order)."""

    def __init__(self, reactor: Any, delay: float) -> None:
        self.reactor = reactor
        self.delay = delay
        self.buffer = b""
        self.pending: list[Any] = []
        self.closing = False

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        for _ in range(10_000):  # bounded: at most this many pipelined requests per read
            if self.closing or not self.take_request():
                break
        if len(self.buffer) > MAX_HEADER and b"\r\n\r\n" not in self.buffer:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def take_request(self) -> bool:
        """Consume one whole request from the buffer and schedule its answer."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = self.buffer[:end]
        lines = head.split(b"\r\n")
        request_line = lines[0].split(b" ")
        length = 0
        close = request_line[-1] == b"HTTP/1.0"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip() or b"0")
            elif name == b"connection":
                close = value.strip().lower() == b"close"
        if len(self.buffer) < end + 4 + length:
            return False
        self.buffer = self.buffer[end + 4 + length :]
        path = request_line[1] if len(request_line) > 1 else b"/"
        answer = ANSWERS[(kind_of(path), close)]
        if close:
            self.closing = True
        self.pending.append(self.reactor.callLater(self.delay, self.answer, answer, close))
        return True

    def answer(self, data: bytes, close: bool) -> None:
        if self.pending:
            self.pending.pop(0)
        self.transport.write(data)  # type: ignore[union-attr]
        if close:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        for call in self.pending:
            if call.active():
                call.cancel()
        self.pending = []


class DelayedHTTPFactory(protocol.Factory):
    def __init__(self, reactor: Any, delay: float) -> None:
        self.reactor = reactor
        self.delay = delay

    def buildProtocol(self, addr: Any) -> DelayedHTTP:
        return DelayedHTTP(self.reactor, self.delay)


def listen(reactor: Any, port: int, delay: float, reuseport: bool) -> int:
    """Listen on 127.0.0.1:port (SO_REUSEPORT when asked); returns the bound port."""
    factory = DelayedHTTPFactory(reactor, delay)
    if not reuseport:
        return int(reactor.listenTCP(port, factory, backlog=4096, interface="127.0.0.1").getHost().port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(4096)
    sock.setblocking(False)
    listening = reactor.adoptStreamPort(sock.fileno(), socket.AF_INET, factory)
    sock.close()  # the reactor holds its own duplicate of the descriptor
    return int(listening.getHost().port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.01, help="seconds before each answer")
    parser.add_argument("--reuseport", action="store_true", help="share the port with other processes")
    args = parser.parse_args(argv)

    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor

    bound = listen(reactor, args.port, args.delay, args.reuseport)
    print(f"READY {bound}", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
