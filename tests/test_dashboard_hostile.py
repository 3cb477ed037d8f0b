"""The dashboard under hostile names, batch ids, Host headers and secrets (issue 11, items 6 and 12).

File names come from ``os.listdir`` (bytes that are not UTF-8 arrive as lone surrogates) and batch
ids from sidecar JSON (any text, any length): every page, the JSON API and ``/metrics`` must still
answer 200 with valid UTF-8, escaped HTML, strict JSON and parseable Prometheus text. Without a
token only loopback ``Host`` names are served (DNS rebinding); nothing shown holds a credential.
In-memory tests use treq's StubTreq; the Host tests run the real DashboardService on 127.0.0.1:0
(and on a unix socket) and talk to it with treq or raw bytes.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import hypothesis.strategies as st
import pytest
import pytest_twisted
import treq
from hypothesis import HealthCheck, given, settings
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.test.requesthelper import DummyRequest

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.dashboard.listener import DashboardService
from seldon_batch_tx.dashboard.metrics import MAX_LABEL
from seldon_batch_tx.dashboard.registry import BatchRegistry
from seldon_batch_tx.dashboard.security import (
    MAX_ID,
    MAX_TEXT,
    REDACTED,
    display_text,
    host_allowed,
    host_name,
    public_id,
)
from seldon_batch_tx.dashboard.site import DashboardRoot
from seldon_batch_tx.pipeline.stats import BatchStats
from tests.test_dashboard import get

reactor: Any = _reactor
TIMEOUT = 10.0

# An undecodable file name as os.listdir returns it, and text that breaks naive renderers.
NOT_UTF8 = b"caf\xe9-\xff\xfe.txt".decode("utf-8", "surrogateescape")
HOSTILE_NAMES = [
    NOT_UTF8,
    'quote"s and \'single\'.txt',
    "new\nline\r\n.txt",
    "<script>alert(1)</script>.txt",
    "back\\slash\\x41\\n.txt",
    "tab\tnul\x00del\x7f.txt",
    "ünïcödé ☃ \u2028 sep.txt",
]
HOSTILE_IDS = [
    'id "quoted"',
    "id\nwith\nnewlines",
    "id\ud800lone-surrogate",
    NOT_UTF8,
    "x" * 100_000,
    "",
    ".",
    "..",
    "a/b?c#d%2F",
    "<b>bold</b>",
]


def strict_utf8(body: bytes) -> str:
    """``body`` decoded as UTF-8, failing on any invalid byte or encoded surrogate."""
    return body.decode("utf-8", "strict")


def strings(value: Any) -> Iterator[str]:
    """Every string (keys too) inside a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def strict_json(body: bytes) -> Any:
    """Parse ``body`` as strict JSON whose strings are all valid Unicode (no lone surrogates)."""
    def no_constants(name: str) -> Any:
        raise AssertionError(f"non-standard JSON constant {name}")

    data = json.loads(strict_utf8(body), parse_constant=no_constants)
    for text in strings(data):
        text.encode("utf-8")  # raises on a lone surrogate escaped as \udXXX
    return data


def registry_with(names: list[str], ids: list[str]) -> BatchRegistry:
    """A registry holding one batch per (name, id) pair, with an error whose reason is hostile too."""
    registry = BatchRegistry(Clock())
    for i, (name, batch_id) in enumerate(zip(names, ids, strict=True)):
        stats = BatchStats(batch_id, name, total=10)
        stats.state, stats.started = "running", 0.0
        stats.succeeded = i
        stats.record_error("http_500", i, f"HTTP 500: {name} {batch_id[:50]}")
        stats.sample(0.0)
        stats.reason = name
        registry.add(stats, source=f"/watch/processing/{name}", output=f"/watch/processing/{name}.out")
    return registry


def check_every_route(stub: StubTreq, registry: BatchRegistry) -> None:
    """/, /api/batches, /metrics and each batch's page and API answer 200 with valid content."""
    code, _, index = get(stub, "/")
    assert code == 200
    page = strict_utf8(index)
    assert "<script>alert" not in page and "<b>bold" not in page
    code, _, body = get(stub, "/api/batches")
    assert code == 200
    listed = strict_json(body)["batches"]
    assert len(listed) == len(registry.entries())
    code, _, metrics = get(stub, "/metrics")
    assert code == 200
    families = {f.name: f for f in text_string_to_metric_families(strict_utf8(metrics))}
    samples = families["seldon_batch_batch_lines_done"].samples
    assert len(samples) == len(listed)
    for sample in samples:
        assert len(sample.labels["batch_id"]) <= MAX_ID and len(sample.labels["name"]) <= MAX_LABEL + 40
    links = [html.unescape(h) for h in re.findall(r'<a href="(batches/[^"]*)"', page)]
    assert len(links) == len(listed)
    for link in links:  # the links the page itself shows lead to the batch page and its JSON
        code, _, batch_page = get(stub, "/" + link)
        assert code == 200, link
        json_links = re.findall(r'<a href="\.\./(api/batches/[^"]*)"', strict_utf8(batch_page))
        assert len(json_links) == 1 and get(stub, "/" + html.unescape(json_links[0]))[0] == 200
    for entry, shown in zip(registry.entries(), listed, strict=True):
        assert shown["id"] == public_id(entry.batch_id) and len(shown["id"]) <= MAX_ID
        assert shown["name"] == display_text(entry.stats.name)
        path = quote(shown["id"], safe="")
        code, _, detail = get(stub, f"/api/batches/{path}")
        assert code == 200, shown["id"]
        assert strict_json(detail)["name"] == shown["name"]
        code, _, detail_page = get(stub, f"/batches/{path}")
        assert code == 200, shown["id"]
        assert "<script>alert" not in strict_utf8(detail_page)


# -- names and ids whatever their bytes ------------------------------------------------------

def test_hostile_names_render_everywhere() -> None:
    """Undecodable, quoted, multi-line, scripted and backslashed names give 200 on every route, shown
    escaped in HTML, as valid JSON strings and as escaped Prometheus labels."""
    ids = [f"batch-{i}" for i in range(len(HOSTILE_NAMES))]
    registry = registry_with(HOSTILE_NAMES, ids)
    stub = StubTreq(DashboardRoot(registry))
    check_every_route(stub, registry)
    page = strict_utf8(get(stub, "/")[2])
    assert "caf\\xe9-\\xff\\xfe.txt" in page  # undecodable bytes shown as \xNN
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.txt" in page and "quote&#34;s and &#39;single&#39;.txt" in page
    listed = strict_json(get(stub, "/api/batches")[2])["batches"]
    assert [b["name"] for b in listed][1:] == HOSTILE_NAMES[1:]  # valid text is kept exactly
    assert listed[0]["name"] == "caf\\xe9-\\xff\\xfe.txt"
    text = strict_utf8(get(stub, "/metrics")[2])
    assert 'name="new\\nline\r\\n.txt"' in text and 'name="quote\\"s and \'single\'.txt"' in text
    assert 'name="back\\\\slash\\\\x41\\\\n.txt"' in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    names = [s.labels["name"] for s in families["seldon_batch_batch_lines_done"].samples]
    assert names[1:] == HOSTILE_NAMES[1:] and names[0] == "caf\\xe9-\\xff\\xfe.txt"


def test_hostile_batch_ids_are_reachable_and_bounded() -> None:
    """Ids from sidecars (quotes, newlines, lone surrogates, 100,000 characters, "", "..", slashes) are
    listed under a public id that is printable, at most MAX_ID long, unique, and opens the batch's page."""
    registry = registry_with([f"f{i}.txt" for i in range(len(HOSTILE_IDS))], HOSTILE_IDS)
    stub = StubTreq(DashboardRoot(registry))
    check_every_route(stub, registry)
    public = [b["id"] for b in strict_json(get(stub, "/api/batches")[2])["batches"]]
    assert len(set(public)) == len(public)
    assert public[0] == 'id "quoted"' and public[8] == "a/b?c#d%2F"  # printable ids are kept
    assert all(p.isprintable() and p not in ("", ".", "..") for p in public)
    long_page = strict_utf8(get(stub, "/")[2])
    assert len(long_page) < 60_000  # the 100,000-character id is not repeated into the page
    metrics = strict_utf8(get(stub, "/metrics")[2])
    assert max(len(line) for line in metrics.splitlines()) < 2 * (MAX_ID + MAX_LABEL) + 200


def test_raw_id_still_finds_its_batch() -> None:
    """The API keeps answering to the batch's own id, not only the public one, and to an id whose
    ``/`` a client left unencoded."""
    registry = registry_with(["a.txt", "b.txt"], ["id\nwith newline", "a/b/c"])
    stub = StubTreq(DashboardRoot(registry))
    assert get(stub, "/api/batches/a/b/c")[0] == 200 and get(stub, "/batches/a/b/c")[0] == 200
    assert get(stub, "/api/batches/a/b/c/")[0] == 200 and get(stub, "/api/batches/a/b")[0] == 404
    code, _, body = get(stub, "/api/batches/" + quote("id\nwith newline", safe=""))
    assert code == 200 and strict_json(body)["name"] == "a.txt"
    code, _, body = get(stub, "/api/batches/" + quote("no such\n<id>", safe=""))
    assert code == 404 and strict_json(body)["error"] == "no such batch: no such\n<id>"


def test_long_text_fields_are_cut() -> None:
    """A megabyte-long error reason is shown cut to MAX_TEXT with a marker, never whole."""
    registry = registry_with(["a.txt"], ["b1"])
    registry.entries()[0].stats.record_error("http_500", 1, "R" * 1_000_000)
    stub = StubTreq(DashboardRoot(registry))
    code, _, body = get(stub, "/api/batches/b1")
    reasons = [e["reason"] for e in strict_json(body)["latest_errors"]]
    assert code == 200 and reasons[-1] == "R" * MAX_TEXT + f"…[{1_000_000 - MAX_TEXT} more characters]"
    code, _, page = get(stub, "/batches/b1")
    assert code == 200 and len(page) < 3 * MAX_TEXT + 20_000


def test_non_finite_numbers_stay_strict_json() -> None:
    """A NaN or infinite value (a clock step, a bug) is null in the API, not a 500 or invalid JSON."""
    registry = registry_with(["a.txt"], ["b1"])
    stats = registry.entries()[0].stats
    stats.latency_sum = float("nan")
    stats.requests = 1
    stub = StubTreq(DashboardRoot(registry))
    code, _, body = get(stub, "/api/batches/b1")
    assert code == 200 and strict_json(body)["mean_latency_ms"] is None
    assert get(stub, "/")[0] == 200 and get(stub, "/metrics")[0] == 200


surrogates = st.integers(0xD800, 0xDFFF).map(chr)
nasty = st.sampled_from(list('"\'\\\n\r\t\x00<>&/%?#.~ \u2028\ufffd'))
hostile_text = st.text(st.one_of(st.characters(), surrogates, nasty), max_size=300)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(hostile_text, hostile_text), min_size=1, max_size=4,
                unique_by=lambda pair: pair[1]))
def test_any_name_and_id_render_everywhere(pairs: list[tuple[str, str]]) -> None:
    """Property: for any names and ids (lone surrogates, controls, quotes, slashes, any length up to
    300), every route answers 200 with valid UTF-8, strict JSON and parseable metrics, and each batch
    opens under its public id."""
    registry = registry_with([n for n, _ in pairs], [i for _, i in pairs])
    check_every_route(StubTreq(DashboardRoot(registry)), registry)


# -- no secrets shown ----------------------------------------------------------------------

CALL_TOKEN = "call-SECRET-one"
HEADER_TOKEN = "hdr-SECRET-two"
API_KEY = "key-SECRET-three"
DASH_TOKEN = "dash-SECRET-four"


def test_secrets_never_shown() -> None:
    """The call token, credential headers and the dashboard token are redacted from every route, even
    when a server echoes them into an error reason or a sidecar puts one in the batch id; ordinary
    header values (a model name) are left alone."""
    registry = BatchRegistry(Clock())
    config = BatchConfig(deployment_name="echo", input_data_path="/in/a.txt", output_data_path="/in/a.out.txt",
                         batch_id="b1", call_credentials_token=CALL_TOKEN,
                         headers=(("Authorization", f"Bearer {HEADER_TOKEN}"), ("X-Api-Key", API_KEY),
                                  ("seldon-model", "mymodel")))
    stats = BatchStats("b1", f"a-{CALL_TOKEN}.txt", total=3)
    stats.state, stats.started = "running", 0.0
    stats.record_error("http_401", 0, f"HTTP 401: echoed Authorization: Bearer {HEADER_TOKEN}, "
                                      f"x-api-key: {API_KEY}, token {CALL_TOKEN}, model mymodel")
    stats.record_error("http_403", 1, f"HTTP 403: you sent ?token={DASH_TOKEN}")
    stats.reason = f"failed with {CALL_TOKEN}"
    registry.add(stats, config=config, source="/in/a.txt", output="/in/a.out.txt")
    registry.add(BatchStats(f"id-{HEADER_TOKEN}", "b.txt"))
    stub = StubTreq(DashboardRoot(registry, token=DASH_TOKEN))
    auth = {"Authorization": f"Bearer {DASH_TOKEN}"}
    pages: dict[str, str] = {}
    for path in ("/", "/batches/b1", "/api/batches", "/api/batches/b1", "/metrics", "/health"):
        code, _, body = get(stub, path, auth)
        assert code == 200, path
        pages[path] = strict_utf8(body)
    for path, text in pages.items():
        for secret in (CALL_TOKEN, HEADER_TOKEN, API_KEY, DASH_TOKEN, "SECRET"):
            assert secret not in text, (path, secret)
    detail = strict_json(pages["/api/batches/b1"].encode())
    assert [e["reason"] for e in detail["latest_errors"]] == [
        f"HTTP 401: echoed Authorization: {REDACTED}, x-api-key: {REDACTED}, token {REDACTED}, "
        "model mymodel", f"HTTP 403: you sent ?token={REDACTED}"]
    assert detail["deployment"] == "echo" and detail["name"] == f"a-{REDACTED}.txt"
    assert REDACTED in pages["/batches/b1"] and "mymodel" in pages["/batches/b1"]


# -- Host header: DNS-rebinding defence ------------------------------------------------------

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



def test_extra_secrets_are_redacted_for_batches_without_config() -> None:
    """A queued or failed batch has no config yet: the daemon's own credentials, passed as secrets=,
    are still redacted from its reason."""
    registry = BatchRegistry(Clock())
    stats = BatchStats("q1", "a.txt")
    stats.state, stats.reason = "failed", "refused: token daemon-SECRET-five is not accepted"
    registry.add(stats)
    stub = StubTreq(DashboardRoot(registry, secrets=["daemon-SECRET-five", ""]))
    for path in ("/", "/api/batches", "/api/batches/q1", "/batches/q1", "/metrics"):
        code, _, body = get(stub, path)
        assert code == 200 and b"SECRET" not in body, path


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
