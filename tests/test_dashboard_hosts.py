"""The dashboard's Host and token rules (issue 11, item 12): without a token only loopback ``Host``
names are served (DNS rebinding); with one, any host. These run the real DashboardService on
127.0.0.1:0 (and on a unix socket) and talk to it with treq or raw bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.test.requesthelper import DummyRequest

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.dashboard.listener import DashboardService
from seldon_batch_tx.dashboard.registry import BatchRegistry
from seldon_batch_tx.dashboard.security import (
    REDACTED,
    host_allowed,
    host_name,
)
from seldon_batch_tx.pipeline.stats import BatchStats
from tests.dashboard_hostile_helpers import NOT_UTF8, registry_with, strict_json

reactor: Any = _reactor
TIMEOUT = 10.0


@pytest.mark.parametrize(("header", "name"), [
    (b"localhost", "localhost"), (b"LocalHost:8080", "localhost"), (b"localhost.:1", "localhost"),
    (b"127.0.0.1:8080", "127.0.0.1"), (b"[::1]:8080", "::1"), (b"[::1]", "::1"), (b"::1", "::1"),
    (b"evil.example", "evil.example"), (b"", None), (b"localhost:abc", None), (b"[::1]x", None),
    (b"[::1", None), (b"caf\xc3\xa9", None), (b":80", None), (b"localhost:\xd9\xa1", None),
])
def test_host_header_parsing(header: bytes, name: str | None) -> None:
    """The host part of a Host header: port and brackets dropped, malformed ones None."""
    assert host_name(header) == name


def dummy(host_header: bytes | None, local: Any) -> Any:
    request: Any = DummyRequest([b""])
    if host_header is not None:
        request.requestHeaders.setRawHeaders(b"host", [host_header])
    request.getHost = lambda: local
    return request


@pytest.mark.parametrize(("header", "allowed"), [
    (b"localhost", True), (b"127.0.0.1", True), (b"127.9.8.7:80", True), (b"[::1]:80", True), (b"::1", True),
    (b"[::ffff:127.0.0.1]", True), (b"10.0.0.7:8080", True), (b"10.0.0.7", True),
    (b"10.0.0.8:8080", False), (b"evil.example", False), (b"localhost.evil.example", False),
    (b"127.0.0.1.evil.example", False), (b"0.0.0.0", False), (b"evil.localhost", False), (None, False),
])
def test_host_allowed_for_loopback_names_and_the_bound_address(header: bytes | None, allowed: bool) -> None:
    """Loopback names and the address the connection came in on pass; any other name does not."""
    assert host_allowed(dummy(header, IPv4Address("TCP", "10.0.0.7", 8080))) is allowed


def test_host_allowed_for_a_bound_ipv6_address() -> None:
    """An IPv6 bound address matches its bracketed Host form, however it is spelled."""
    local = IPv6Address("TCP", "fd00::7", 8080)
    assert host_allowed(dummy(b"[fd00:0::7]:8080", local))
    assert not host_allowed(dummy(b"[fd00::8]:8080", local))


class Raw(Protocol):
    """Sends bytes, collects the whole answer until the server closes."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._data)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.done.callback(self.received)


async def raw_exchange(endpoint: Any, data: bytes) -> bytes:
    """One raw HTTP/1.0-style exchange over ``endpoint``, bounded by TIMEOUT."""
    protocol = Raw(data)
    await connectProtocol(endpoint, protocol)
    answer = protocol.done
    answer.addTimeout(TIMEOUT, reactor)
    return await answer


@pytest.fixture
def listening() -> Iterator[DashboardService]:
    """The real DashboardService, tokenless, on a free loopback port."""
    registry = registry_with([NOT_UTF8], ["b1"])
    service = DashboardService("tcp:0:interface=127.0.0.1", registry, reactor)
    service.startService()
    assert service.port is not None
    yield service
    pytest_twisted.blockon(service.stopService())


async def fetch(port: int, path: str, host: str) -> tuple[int, bytes]:
    headers: dict[bytes | str, bytes | str] = {"Host": host}
    response = await treq.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=TIMEOUT)
    return response.code, await response.content()


@pytest_twisted.ensureDeferred
async def test_tokenless_dashboard_serves_only_loopback_hosts(listening: DashboardService) -> None:
    """On a real socket: loopback Host names get the pages, any other name gets a short 421 on every
    route (a DNS-rebinding page cannot read even /health), and the refusal is logged once."""
    port = listening.port.getHost().port
    for host in ("localhost", f"localhost:{port}", f"127.0.0.1:{port}", "127.3.2.1", "[::1]:1", "::1"):
        for path in ("/", "/api/batches", "/metrics", "/health", "/batches/b1", "/static/dashboard.js"):
            code, _ = await fetch(port, path, host)
            assert code == 200, (host, path)
    events: list[dict[str, Any]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        for host in ("evil.example", f"evil.example:{port}", "attacker.localhost", "192.168.1.9", "0.0.0.0"):
            for path in ("/", "/api/batches", "/metrics", "/health", "/static/dashboard.js"):
                code, body = await fetch(port, path, host)
                assert code == 421, (host, path)
                assert body.startswith(b"421 Misdirected Request") and len(body) < 300
                assert b"caf" not in body
    finally:
        globalLogPublisher.removeObserver(observer)
    refusals = [e for e in events if "refused a request for Host" in e.get("log_format", "")]
    assert len(refusals) == 1 and refusals[0]["host"] == "evil.example"
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=TIMEOUT)
    no_host = await raw_exchange(endpoint, b"GET /api/batches HTTP/1.0\r\n\r\n")
    assert no_host.startswith(b"HTTP/1.0 421") or no_host.startswith(b"HTTP/1.1 421")
    bad_bytes = await raw_exchange(endpoint, b"GET / HTTP/1.0\r\nHost: \xff\xfe\r\n\r\n")
    assert re.match(rb"HTTP/1\.[01] 421", bad_bytes)
    ok = await raw_exchange(endpoint, b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    assert re.match(rb"HTTP/1\.[01] 200", ok) and b"caf\\\\xe9" in ok


@pytest_twisted.ensureDeferred
async def test_token_rules_unchanged_for_any_host() -> None:
    """With a token the Host is not checked: the token decides, as before (a proxy may use any name)."""
    service = DashboardService("tcp:0:interface=127.0.0.1", registry_with(["a.txt"], ["b1"]), reactor,
                               token="t0k3n")
    service.startService()
    try:
        port = service.port.getHost().port
        code, _ = await fetch(port, "/api/batches?token=t0k3n", "dashboard.example.com")
        assert code == 200
        code, _ = await fetch(port, "/api/batches", "dashboard.example.com")
        assert code == 401
        code, _ = await fetch(port, "/health", "dashboard.example.com")
        assert code == 200
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_unix_socket_dashboard_answers_any_host(tmp_path: Path) -> None:
    """Over a unix socket no browser page can connect, so any Host is served."""
    path = tmp_path / "dash.sock"
    service = DashboardService(f"unix:{path}", registry_with(["a.txt"], ["b1"]), reactor)
    service.startService()
    try:
        endpoint = UNIXClientEndpoint(reactor, str(path), timeout=TIMEOUT)
        answer = await raw_exchange(endpoint, b"GET /api/batches HTTP/1.0\r\nHost: anything.example\r\n\r\n")
        assert re.match(rb"HTTP/1\.[01] 200", answer) and b'"b1"' in answer
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_single_batch_dashboard_takes_a_token_argument() -> None:
    """The command's dashboard (its one batch registered as the runner does) with token=... (e.g. from
    --dashboard-token-file) guards the API, and the batch's call token never shows even to a client
    holding the dashboard token."""
    config = BatchConfig(deployment_name="echo", input_data_path="/in/a.txt", output_data_path="/in/a.out.txt",
                         batch_id="b1", call_credentials_token="call-SECRET-six")
    stats = BatchStats("b1", "a.txt")
    stats.reason = "echo call-SECRET-six"
    registry = BatchRegistry(reactor)
    registry.add(stats, config=config, source=config.input_data_path, output=config.output_data_path)
    service = DashboardService("tcp:0:interface=127.0.0.1", registry, reactor, token="file-t0k3n")
    service.startService()
    try:
        port = service.port.getHost().port
        assert (await fetch(port, "/api/batches", "127.0.0.1"))[0] == 401
        code, body = await fetch(port, "/api/batches/b1?token=file-t0k3n", "127.0.0.1")
        assert code == 200 and b"SECRET" not in body and strict_json(body)["reason"] == f"echo {REDACTED}"
    finally:
        await service.stopService()
