"""What the REST transport tests share: configs, the client under test (``fast`` and ``treq``), a
twisted.web server with behaviours and a raw TCP server that misbehaves on purpose, all on 127.0.0.1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.core.failures import RequestFailed
from seldon_batch_tx.transports.base import Transport
from seldon_batch_tx.transports.fast import FastHttpTransport
from seldon_batch_tx.transports.treq_client import RestTransport
from tests.targets import target_of

reactor: Any = _reactor
CLIENTS = ("treq", "fast")
OK_BODY = {"data": {"ndarray": [[1]]}, "meta": {}}
REQUEST = {"data": {"ndarray": [[1.5, 2]]}, "meta": {"tags": {"batch_index": 0}}}


def make(client: str, config: BatchConfig) -> Transport:
    if client == "fast":
        return FastHttpTransport(config, reactor, target=target_of(config))
    return RestTransport(config, reactor, target=target_of(config))


def config_for(port: int, behaviour: str, **changes: Any) -> BatchConfig:
    """Istio-style path ``/seldon/ns/<behaviour>/...``: the deployment name picks what the server does."""
    values: dict[str, Any] = dict(deployment_name=behaviour, input_data_path="-", output_data_path="-",
                                  gateway_type="istio", namespace="ns", host=f"127.0.0.1:{port}", workers=4,
                                  timeout=5.0)
    values.update(changes)
    return BatchConfig(**values)


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.01)


async def failure_of(d: Deferred[Any]) -> RequestFailed:
    try:
        await d
    except RequestFailed as e:
        return e
    raise AssertionError("the request succeeded")


# -- a twisted.web server that counts its connections ------------------------------------------


class CountingChannel(HTTPChannel):
    def connectionMade(self) -> None:
        super().connectionMade()
        stats = self.factory.stats  # type: ignore[attr-defined]
        stats["made"] += 1
        stats["open"] += 1
        stats["max_open"] = max(stats["max_open"], stats["open"])

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.stats["open"] -= 1  # type: ignore[attr-defined]
        super().connectionLost(reason)


class Behaviours(Resource):
    """Answers by deployment name: ok, chunked, status-NNN, notjson, hold."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, Any]] = []
        self.held: list[Request] = []
        self.max_held = 0

    def render_POST(self, request: Request) -> bytes | int:
        behaviour = request.path.split(b"/")[3].decode()
        body = request.content.read()  # type: ignore[union-attr]
        self.seen.append({"headers": {k.decode().lower(): v[0].decode()
                                      for k, v in request.requestHeaders.getAllRawHeaders()},
                          "body": json.loads(body), "path": request.path.decode()})
        request.setHeader(b"content-type", b"application/json")
        if behaviour == "ok":
            return json.dumps(OK_BODY).encode()
        if behaviour == "chunked":  # no Content-Length: twisted.web sends chunked encoding
            request.write(b'{"data": {"ndarray"')
            request.write(b': [[2]]}, "meta": {}')
            request.write(b"}")
            request.finish()
            return NOT_DONE_YET
        if behaviour.startswith("status-"):
            request.setResponseCode(int(behaviour[7:]))
            if behaviour == "status-429":
                request.setHeader(b"retry-after", b"7")
            return b'{"status": {"status": "FAILURE", "reason": "busy"}}'
        if behaviour == "notjson":
            return b"<html>hello</html>"
        if behaviour == "hold":
            self.held.append(request)
            self.max_held = max(self.max_held, len(self.held))
            return NOT_DONE_YET
        request.setResponseCode(400)
        return b"unknown behaviour"

    def release_all(self) -> int:
        held, self.held = self.held, []
        for request in held:
            if not request.channel:
                continue
            request.write(json.dumps(OK_BODY).encode())
            request.finish()
        return len(held)


class WebServer:
    def __init__(self, port: Any, site: Site, resource: Behaviours) -> None:
        self.listening = port
        self.port: int = port.getHost().port
        self.site = site
        self.resource = resource
        self.stats: dict[str, int] = site.stats  # type: ignore[attr-defined]


def start_web(tls: ssl.CertificateOptions | None = None) -> WebServer:
    resource = Behaviours()
    site = Site(resource)
    site.protocol = CountingChannel  # type: ignore[assignment]
    site.stats = {"made": 0, "open": 0, "max_open": 0}  # type: ignore[attr-defined]
    site.noisy = False
    if tls is None:
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
    else:
        port = reactor.listenSSL(0, site, tls, interface="127.0.0.1")
    return WebServer(port, site, resource)


@pytest.fixture
def web() -> Iterator[WebServer]:
    server = start_web()
    yield server
    pytest_twisted.blockon(server.listening.stopListening())


# -- raw TCP servers that misbehave -------------------------------------------------------------


class RawConnection(Protocol):
    """Reads whole requests (headers + Content-Length body) and lets ``behave`` answer them."""

    def connectionMade(self) -> None:
        self.factory.made += 1  # type: ignore[attr-defined]
        self.buffer = b""
        self.requests = 0

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        for _ in range(100):
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            self.requests += 1
            self.factory.behave(self, self.requests)  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.lost += 1  # type: ignore[attr-defined]


class RawFactory(Factory):
    protocol = RawConnection
    noisy = False

    def __init__(self, behave: Callable[[RawConnection, int], None]) -> None:
        self.behave = behave
        self.made = 0
        self.lost = 0


def response(body: bytes, *extra: bytes, length: bool = True) -> bytes:
    headers = [b"HTTP/1.1 200 OK", b"Content-Type: application/json", *extra]
    if length:
        headers.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(headers) + b"\r\n\r\n" + body


OK_BYTES = json.dumps(OK_BODY).encode()


@pytest.fixture
def raw() -> Iterator[Callable[[Callable[[RawConnection, int], None]], tuple[int, RawFactory]]]:
    ports: list[Any] = []

    def start(behave: Callable[[RawConnection, int], None]) -> tuple[int, RawFactory]:
        factory = RawFactory(behave)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        ports.append(port)
        return port.getHost().port, factory

    yield start
    for port in ports:
        pytest_twisted.blockon(port.stopListening())


# -- behaviour shared by both transports --------------------------------------------------------


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    return str(request.param)
