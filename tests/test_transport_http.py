"""Both REST transports (treq's RestTransport and FastHttpTransport) against real loopback servers.

Every behavioural test runs once per transport, so the lean client is held to exactly what the
treq one promises: the same responses, the same error kinds, the same limits. Servers are a
twisted.web site and raw TCP servers that misbehave on purpose, all on 127.0.0.1 in the test's
reactor; one test talks to the real Seldon microservice.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor as _reactor
from twisted.internet import ssl
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.core.failures import RequestFailed
from seldon_batch_tx.pipeline.batch import Batch
from seldon_batch_tx.transports.base import Transport
from seldon_batch_tx.transports.fast import FastHttpTransport
from seldon_batch_tx.transports.treq_client import RestTransport
from tests.servers import SeldonServer, free_port
from tests.targets import fast_transport, target_of

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


@pytest_twisted.ensureDeferred
async def test_success_and_headers(client: str, web: WebServer) -> None:
    """A 2xx JSON answer comes back decoded; the server gets the body, puid, token and content type."""
    transport = make(client, config_for(web.port, "ok", call_credentials_token="s3cret"))
    transport.start()
    try:
        assert await transport.send(REQUEST, "puid-1") == OK_BODY
    finally:
        await transport.stop()
    [seen] = web.resource.seen
    assert seen["body"] == REQUEST
    assert seen["path"] == "/seldon/ns/ok/api/v1.0/predictions"
    assert seen["headers"]["seldon-puid"] == "puid-1"
    assert seen["headers"]["x-auth-token"] == "s3cret"
    assert seen["headers"]["content-type"] == "application/json"


@pytest_twisted.ensureDeferred
async def test_keep_alive_reuses_one_connection(client: str, web: WebServer) -> None:
    """Requests one after another share one connection, and stop() closes it."""
    transport = make(client, config_for(web.port, "ok"))
    transport.start()
    try:
        for i in range(20):
            assert await transport.send(REQUEST, f"p{i}") == OK_BODY
    finally:
        await transport.stop()
    assert web.stats["made"] == 1
    await wait_for(lambda: web.stats["open"] == 0, what="the server to see the connection closed")


@pytest_twisted.ensureDeferred
async def test_chunked_response(client: str, web: WebServer) -> None:
    """A chunked body (no Content-Length) is reassembled, and the connection is kept."""
    transport = make(client, config_for(web.port, "chunked"))
    transport.start()
    try:
        for _ in range(3):
            assert await transport.send(REQUEST, "p") == {"data": {"ndarray": [[2]]}, "meta": {}}
    finally:
        await transport.stop()
    assert web.stats["made"] == 1


@pytest.mark.parametrize(("status", "kind", "retryable", "retry_after"), [
    (429, "http_429", True, 7.0), (500, "http_500", True, None), (503, "http_503", True, None),
    (404, "http_404", False, None),
])
@pytest_twisted.ensureDeferred
async def test_error_statuses(client: str, web: WebServer, status: int, kind: str, retryable: bool,
                              retry_after: float | None) -> None:
    """HTTP errors become RequestFailed with the status, retryability and Retry-After; connections stay usable."""
    transport = make(client, config_for(web.port, f"status-{status}"))
    transport.start()
    try:
        for _ in range(2):
            error = await failure_of(transport.send(REQUEST, "p"))
            assert (error.kind, error.code, error.retryable, error.retry_after) == (kind, status, retryable,
                                                                                    retry_after)
            assert "busy" in error.reason
    finally:
        await transport.stop()
    assert web.stats["made"] == 1


@pytest_twisted.ensureDeferred
async def test_non_json_200(client: str, web: WebServer) -> None:
    """A 200 whose body is not JSON is a retryable bad_response quoting the body."""
    transport = make(client, config_for(web.port, "notjson"))
    transport.start()
    try:
        error = await failure_of(transport.send(REQUEST, "p"))
    finally:
        await transport.stop()
    assert (error.kind, error.code, error.retryable) == ("bad_response", 200, True)
    assert "<html>hello</html>" in error.reason


@pytest_twisted.ensureDeferred
async def test_connection_close_response(client: str, raw: Any) -> None:
    """``Connection: close`` answers are read whole; the next request opens a new connection."""
    def behave(conn: RawConnection, n: int) -> None:
        conn.transport.write(response(OK_BYTES, b"Connection: close"))  # type: ignore[union-attr]
        conn.transport.loseConnection()  # type: ignore[union-attr]

    port, factory = raw(behave)
    transport = make(client, config_for(port, "x"))
    transport.start()
    try:
        for _ in range(3):
            assert await transport.send(REQUEST, "p") == OK_BODY
    finally:
        await transport.stop()
    assert factory.made == 3


@pytest_twisted.ensureDeferred
async def test_body_until_connection_end(client: str, raw: Any) -> None:
    """A response with neither Content-Length nor chunking ends when the server closes."""
    def behave(conn: RawConnection, n: int) -> None:
        conn.transport.write(response(OK_BYTES, length=False))  # type: ignore[union-attr]
        conn.transport.loseConnection()  # type: ignore[union-attr]

    port, _ = raw(behave)
    transport = make(client, config_for(port, "x"))
    transport.start()
    try:
        assert await transport.send(REQUEST, "p") == OK_BODY
    finally:
        await transport.stop()


@pytest_twisted.ensureDeferred
async def test_reset_mid_response(client: str, raw: Any) -> None:
    """A connection reset halfway through the body is a retryable ``connection`` failure."""
    def behave(conn: RawConnection, n: int) -> None:
        conn.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"data\":")  # type: ignore[union-attr]
        reactor.callLater(0.05, conn.transport.abortConnection)  # type: ignore[union-attr]

    port, _ = raw(behave)
    transport = make(client, config_for(port, "x"))
    transport.start()
    try:
        error = await failure_of(transport.send(REQUEST, "p"))
    finally:
        await transport.stop()
    assert (error.kind, error.code, error.retryable) == ("connection", None, True)


@pytest_twisted.ensureDeferred
async def test_stall_past_timeout(client: str, raw: Any) -> None:
    """A server that never answers gives a ``timeout`` after --timeout, and the connection is dropped."""
    port, factory = raw(lambda conn, n: None)
    transport = make(client, config_for(port, "x", timeout=0.3))
    transport.start()
    started = time.monotonic()
    try:
        error = await failure_of(transport.send(REQUEST, "p"))
        elapsed = time.monotonic() - started
        assert (error.kind, error.retryable) == ("timeout", True)
        assert 0.25 < elapsed < 3.0
        await wait_for(lambda: factory.lost == 1, what="the stalled connection to be closed")
    finally:
        await transport.stop()


@pytest_twisted.ensureDeferred
async def test_server_down(client: str) -> None:
    """Nobody listening: a retryable ``connection`` failure that says it could not connect."""
    transport = make(client, config_for(free_port(), "ok"))
    transport.start()
    try:
        error = await failure_of(transport.send(REQUEST, "p"))
    finally:
        await transport.stop()
    assert (error.kind, error.code, error.retryable) == ("connection", None, True)
    assert "connect" in error.reason


@pytest_twisted.ensureDeferred
async def test_malformed_response(client: str, raw: Any) -> None:
    """Bytes that are not HTTP fail the request as retryable, never hang it."""
    def behave(conn: RawConnection, n: int) -> None:
        conn.transport.write(b"SPDY/9 banana\r\n\r\n")  # type: ignore[union-attr]

    port, _ = raw(behave)
    transport = make(client, config_for(port, "x", timeout=3.0))
    transport.start()
    try:
        error = await failure_of(transport.send(REQUEST, "p"))
    finally:
        await transport.stop()
    assert error.kind in ("bad_response", "connection") and error.retryable


def self_signed(tmp_path: Path) -> tuple[ssl.CertificateOptions, Path]:
    """A server certificate for 127.0.0.1/localhost, and its PEM to use as a custom CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    path = tmp_path / "ca.pem"
    path.write_bytes(cert_pem)
    return ssl.PrivateCertificate.loadPEM(cert_pem + key_pem).options(), path


@pytest_twisted.ensureDeferred
async def test_https_self_signed(client: str, tmp_path: Path) -> None:
    """https to a self-signed server works with ssl_verify off and with the cert as --ca-cert,
    and is refused with the system roots."""
    options, ca = self_signed(tmp_path)
    server = start_web(options)
    try:
        for changes, works in (({"ssl_verify": False}, True), ({"ca_cert": str(ca)}, True), ({}, False)):
            transport = make(client, config_for(server.port, "ok", use_ssl=True, **changes))
            transport.start()
            try:
                if works:
                    assert await transport.send(REQUEST, "p") == OK_BODY
                    assert await transport.send(REQUEST, "p") == OK_BODY
                else:
                    error = await failure_of(transport.send(REQUEST, "p"))
                    assert error.kind == "connection"
            finally:
                await transport.stop()
        assert server.resource.seen[0]["headers"]["seldon-puid"] == "p"
        assert server.stats["made"] == 3  # one per transport; keep-alive over TLS too
    finally:
        await server.listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_never_more_than_workers_through_the_engine(client: str, web: WebServer, tmp_path: Path) -> None:
    """A whole batch against a server that holds requests: at most ``workers`` connections and
    requests in flight, and every line answered."""
    lines = 40
    source = tmp_path / "in.txt"
    source.write_text("".join(f"[[{i}]]\n" for i in range(lines)))
    config = config_for(web.port, "hold", workers=5, input_data_path=str(source),
                        output_data_path=str(tmp_path / "out.txt"))
    batch = Batch(config, reactor, transport=make(client, config))
    done = Deferred.fromCoroutine(batch.run())
    released = 0
    deadline = time.monotonic() + 20
    while not done.called and time.monotonic() < deadline:
        await wait_for(lambda: len(web.resource.held) == 5 or done.called, what="5 held requests")
        released += web.resource.release_all()
    summary = await done
    assert summary.succeeded == lines
    assert released == lines
    assert web.resource.max_held == 5
    assert web.stats["max_open"] <= 5
    out = [json.loads(line) for line in (tmp_path / "out.txt").read_text().splitlines()]
    assert sorted(o["meta"]["tags"]["batch_index"] for o in out) == list(range(lines))


@pytest_twisted.ensureDeferred
async def test_against_the_real_seldon_microservice(client: str, seldon_server: SeldonServer) -> None:
    """The real Seldon model echoes the array and the tags through both transports."""
    config = BatchConfig(deployment_name="echo", input_data_path="-", output_data_path="-", gateway_type="seldon",
                         host=seldon_server.rest_host, workers=4, timeout=10.0)
    transport = make(client, config)
    transport.start()
    try:
        answers = await gatherResults([transport.send(REQUEST, f"p{i}") for i in range(8)])
    finally:
        await transport.stop()
    for answer in answers:
        assert answer["data"]["ndarray"] == [[1.5, 2]]
        assert answer["meta"]["tags"] == {"batch_index": 0}


# -- what only the lean transport promises ------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_fast_pool_queues_beyond_workers(web: WebServer) -> None:
    """Sent directly, more requests than workers wait for a connection instead of opening more."""
    transport = fast_transport(config_for(web.port, "hold", workers=3), reactor)
    transport.start()
    try:
        answers = gatherResults([transport.send(REQUEST, f"p{i}") for i in range(10)])
        for _ in range(10):
            await wait_for(lambda: bool(web.resource.held) or answers.called, what="held requests")
            await deferLater(reactor, 0.02)
            assert len(web.resource.held) <= 3
            web.resource.release_all()
            if answers.called:
                break
        assert await answers == [OK_BODY] * 10
    finally:
        await transport.stop()
    assert web.resource.max_held == 3
    assert web.stats["made"] == 3
    assert transport.connections_made == 3


@pytest_twisted.ensureDeferred
async def test_fast_resends_once_when_a_reused_connection_was_closed(raw: Any) -> None:
    """A keep-alive connection the server dropped without answering is retried once on a fresh one;
    a fresh connection dropped the same way is a ``connection`` failure."""
    count = 0

    def behave(conn: RawConnection, n: int) -> None:
        nonlocal count
        count += 1
        if count in (2, 4, 5):
            conn.transport.loseConnection()  # type: ignore[union-attr]
        else:
            conn.transport.write(response(OK_BYTES))  # type: ignore[union-attr]

    port, factory = raw(behave)
    transport = fast_transport(config_for(port, "x"), reactor)
    transport.start()
    try:
        assert await transport.send(REQUEST, "p") == OK_BODY  # 1: a fresh connection
        assert await transport.send(REQUEST, "p") == OK_BODY  # 2: reused, dropped; 3: resent on a fresh one
        assert factory.made == 2
        error = await failure_of(transport.send(REQUEST, "p"))  # 4: reused, dropped; 5: fresh, dropped
        assert error.kind == "connection"
        assert (count, factory.made) == (5, 3)
    finally:
        await transport.stop()


def test_fast_rejects_header_injection() -> None:
    """A token with a line break cannot smuggle headers into every request."""
    with pytest.raises(ValueError):
        fast_transport(config_for(1, "ok", call_credentials_token="a\r\nX-Evil: 1"), reactor)


@pytest_twisted.ensureDeferred
async def test_fast_cancel_drops_the_request(web: WebServer) -> None:
    """Cancelling a request in flight (the engine abandoning it) closes its connection."""
    transport = fast_transport(config_for(web.port, "hold", workers=2), reactor)
    transport.start()
    try:
        d = transport.send(REQUEST, "p")
        await wait_for(lambda: len(web.resource.held) == 1, what="the held request")
        d.cancel()
        d.addErrback(lambda f: None)
        await wait_for(lambda: web.stats["open"] == 0, what="the server to see the connection closed")
        assert transport.open_connections == 0
    finally:
        await transport.stop()


@pytest_twisted.ensureDeferred
async def test_fast_drops_a_connection_that_talks_while_idle(raw: Any) -> None:
    """A server that sends bytes on an idle keep-alive connection (a 408, say) gets that connection
    closed; the next request goes out on a fresh one and succeeds."""
    def behave(conn: RawConnection, n: int) -> None:
        conn.transport.write(response(OK_BYTES))  # type: ignore[union-attr]
        reactor.callLater(0.01, conn.transport.write,  # type: ignore[union-attr]
                          b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")

    port, factory = raw(behave)
    transport = fast_transport(config_for(port, "x"), reactor)
    transport.start()
    try:
        assert await transport.send(REQUEST, "p") == OK_BODY
        await wait_for(lambda: factory.lost == 1, what="the idle connection to be dropped")
        assert transport.open_connections == 0
        assert await transport.send(REQUEST, "p") == OK_BODY
        assert factory.made == 2
    finally:
        await transport.stop()
