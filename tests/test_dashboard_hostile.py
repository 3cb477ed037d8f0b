"""The dashboard under hostile names, batch ids and secrets (issue 11, items 6 and 12).

File names come from ``os.listdir`` (bytes that are not UTF-8 arrive as lone surrogates) and batch
ids from sidecar JSON (any text, any length): every page, the JSON API and ``/metrics`` must still
answer 200 with valid UTF-8, escaped HTML, strict JSON and parseable Prometheus text; nothing shown
holds a credential. In-memory tests use treq's StubTreq. Host headers: test_dashboard_hosts.py.
"""

from __future__ import annotations

import html
import re
from urllib.parse import quote

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.task import Clock

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.dashboard.metrics import MAX_LABEL
from seldon_batch_tx.dashboard.registry import BatchRegistry
from seldon_batch_tx.dashboard.security import (
    MAX_ID,
    MAX_TEXT,
    REDACTED,
    display_text,
    public_id,
)
from seldon_batch_tx.dashboard.site import DashboardRoot
from seldon_batch_tx.pipeline.stats import BatchStats
from tests.dashboard_hostile_helpers import NOT_UTF8, registry_with, strict_json, strict_utf8
from tests.test_dashboard import get

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
