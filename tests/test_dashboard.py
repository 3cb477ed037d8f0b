"""The dashboard's HTTP surface, in memory: JSON API, metrics text, health, escaping, token."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.python import usage

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.dashboard.registry import BatchRegistry
from seldon_batch_tx.dashboard.security import check_endpoint, endpoint_is_loopback
from seldon_batch_tx.dashboard.site import DashboardRoot
from seldon_batch_tx.pipeline.stats import LATENCY_BUCKETS, BatchStats
from seldon_batch_tx.tap import Options

HOSTILE_NAME = "<script>alert(1)</script>.txt"
HOSTILE_REASON = 'HTTP 500: <img src=x onerror="alert(2)"> & \'quotes\''
BASE = "http://127.0.0.1:8080"  # a tokenless dashboard answers loopback Host names only


def make_registry(clock: Clock) -> tuple[BatchRegistry, BatchStats, BatchStats]:
    registry = BatchRegistry(clock)
    config = BatchConfig(deployment_name="echo", input_data_path="/in/a.txt", output_data_path="/in/a.out.txt",
                         batch_id="batch-1", workers=4)
    running = BatchStats("batch-1", "a.txt", total=100)
    running.state, running.started = "running", 0.0
    running.succeeded, running.retries = 40, 3
    for i, seconds in enumerate([0.004, 0.02, 0.3, 0.3, 20.0]):
        running.observe_latency(seconds)
        running.sample(float(i))
    running.record_error("http_500", 7, HOSTILE_REASON)
    registry.add(running, config=config, source="/in/a.txt", output="/in/a.out.txt")
    hostile = BatchStats("batch-<2>", HOSTILE_NAME, total=10)
    hostile.state, hostile.started, hostile.finished = "done", 1.0, 3.0
    hostile.succeeded = 10
    entry = registry.add(hostile)
    entry.finish(3.0)
    clock.advance(5)
    return registry, running, hostile


def get(stub: Any, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    """GET path on the in-memory site: (status, headers, body)."""
    out: list[tuple[int, Any, bytes]] = []
    d = stub.get(BASE + path, headers=headers)

    def read(response: Any) -> Any:
        return response.content().addCallback(lambda body: out.append((response.code, response.headers, body)))

    d.addCallback(read)
    for _ in range(50):  # static files are produced in several writes
        stub.flush()
        if out:
            break
    assert out, f"no answer for {path}"
    return out[0]


@pytest.fixture
def site() -> tuple[StubTreq, BatchRegistry]:
    registry, _, _ = make_registry(Clock())
    return StubTreq(DashboardRoot(registry)), registry


def test_api_lists_batches_with_progress_and_counts(site: tuple[StubTreq, BatchRegistry]) -> None:
    """GET /api/batches gives every batch with progress, counts by state and the benchmark once done."""
    stub, _ = site
    code, headers, body = get(stub, "/api/batches")
    assert code == 200
    assert headers.getRawHeaders("content-type") == ["application/json; charset=utf-8"]
    data = json.loads(body)
    assert data["counts"]["running"] == 1 and data["counts"]["done"] == 1
    first, second = data["batches"]
    assert (first["id"], first["done"], first["total"], first["percent"]) == ("batch-1", 41, 100, 41.0)
    assert first["errors_by_kind"] == {"http_500": 1} and first["retries"] == 3
    assert first["benchmark"] is None and first["eta"] is not None and len(first["spark"]) == 5
    assert second["name"] == HOSTILE_NAME
    assert second["benchmark"] == {"elapsed": 2.0, "lines": 10, "lines_per_s": 5.0, "workers": None,
                                   "batch_size": None, "line": "Benchmark: elapsed time 2.000 s for 10 lines, "
                                   "5.0 lines/s, None workers, batch size None"}


def test_api_batch_detail_has_errors_and_chart_samples(site: tuple[StubTreq, BatchRegistry]) -> None:
    """GET /api/batches/{id} adds the latest error reasons, the whole-run chart and latency buckets."""
    stub, _ = site
    code, _, body = get(stub, "/api/batches/batch-1")
    assert code == 200
    data = json.loads(body)
    assert data["latest_errors"] == [{"batch_index": 7, "kind": "http_500", "reason": HOSTILE_REASON}]
    assert data["chart"] == [[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [3.0, 0.0, 0.0], [4.0, 0.0, 0.0], [5.0, 1.0, 1.0]]
    assert data["deployment"] == "echo" and data["output"] == "/in/a.out.txt"
    assert len(data["latency_counts"]) == len(LATENCY_BUCKETS) + 1
    code, _, body = get(stub, "/api/batches/nope")
    assert code == 404 and json.loads(body)["error"] == "no such batch: nope"


def test_metrics_are_valid_prometheus_text(site: tuple[StubTreq, BatchRegistry]) -> None:
    """/metrics parses as Prometheus text: counters, a cumulative latency histogram, escaped labels."""
    stub, _ = site
    code, headers, body = get(stub, "/metrics")
    assert code == 200
    assert headers.getRawHeaders("content-type")[0].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    lines = {s.labels["result"]: s.value for s in families["seldon_batch_lines"].samples}
    assert families["seldon_batch_lines"].type == "counter"
    assert lines == {"succeeded": 50, "failed": 1}
    assert [s.value for s in families["seldon_batch_errors"].samples] == [1]
    histogram = families["seldon_batch_request_duration_seconds"]
    assert histogram.type == "histogram"
    buckets = [(s.labels["le"], s.value) for s in histogram.samples if s.name.endswith("_bucket")]
    values = [v for _, v in buckets]
    assert values == sorted(values) and buckets[-1] == ("+Inf", 5)
    assert dict(buckets)["0.005"] == 1 and dict(buckets)["0.5"] == 4 and dict(buckets)["10.0"] == 4
    count = next(s.value for s in histogram.samples if s.name.endswith("_count"))
    total = next(s.value for s in histogram.samples if s.name.endswith("_sum"))
    assert count == 5 and total == pytest.approx(20.624)
    names = {s.labels["name"] for s in families["seldon_batch_batch_lines_done"].samples}
    assert names == {"a.txt", HOSTILE_NAME}


def test_health_answers_ok(site: tuple[StubTreq, BatchRegistry]) -> None:
    """/health is a cheap JSON ok with the batch counts."""
    stub, _ = site
    code, _, body = get(stub, "/health")
    data = json.loads(body)
    assert code == 200 and data["status"] == "ok" and data["batches"]["running"] == 1


def test_hostile_file_name_and_reason_are_escaped(site: tuple[StubTreq, BatchRegistry]) -> None:
    """A file name and an error reason holding HTML come out escaped on every page, never as markup."""
    stub, _ = site
    code, headers, index = get(stub, "/")
    assert code == 200
    page = index.decode()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;.txt" in page
    assert "script-src 'self'" in headers.getRawHeaders("content-security-policy")[0]
    code, _, detail = get(stub, "/batches/batch-1")
    assert code == 200
    text = detail.decode()
    assert 'onerror="alert(2)"' not in text and "<img" not in text
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt; &amp; &#39;quotes&#39;" in text
    code, _, hostile = get(stub, "/batches/batch-%3C2%3E")
    assert code == 200 and b"<script>alert" not in hostile and b"batch-&lt;2&gt;" in hostile
    code, _, missing = get(stub, "/batches/%3Cb%3Ex")
    assert code == 404 and b"<b>x" not in missing and b"&lt;b&gt;x" in missing


def test_static_files_are_served_without_listing(site: tuple[StubTreq, BatchRegistry]) -> None:
    """The page script and style come from /static; the directory itself is not listed."""
    stub, _ = site
    code, _, script = get(stub, "/static/dashboard.js")
    assert code == 200 and b"textContent" in script
    code, _, _ = get(stub, "/static/")
    assert code == 404


def test_web_files_are_package_data() -> None:
    """Templates and static files are the package's data (web/ at the top, installed as seldon_batch_tx/web):
    found through the package, the same files as the repository's web/, with no search path to configure."""
    import jinja2

    from seldon_batch_tx.dashboard.site import static_directory, templates

    top = Path(__file__).resolve().parents[1] / "web"
    loader = templates().loader
    assert isinstance(loader, jinja2.PackageLoader) and loader.package_name == "seldon_batch_tx"
    for name in ("base.html", "index.html", "batch.html"):
        source = Path(templates().get_template(name).filename or "")
        assert source.read_bytes() == (top / "templates" / name).read_bytes()
    shipped = {item.name: item.read_bytes() for item in static_directory().iterdir()}
    assert shipped == {p.name: p.read_bytes() for p in (top / "static").iterdir()}


def test_token_is_required_everywhere_but_health_and_static() -> None:
    """With a token set, pages, API and metrics answer 401 unless the token is in a header or ?token=."""
    registry, _, _ = make_registry(Clock())
    stub = StubTreq(DashboardRoot(registry, token="s3cret"))
    for path in ("/", "/api/batches", "/api/batches/batch-1", "/batches/batch-1", "/metrics"):
        code, headers, _ = get(stub, path)
        assert code == 401, path
        assert headers.getRawHeaders("www-authenticate") == ['Bearer realm="seldon-batch"']
    assert get(stub, "/api/batches", {"Authorization": "Bearer s3cret"})[0] == 200
    assert get(stub, "/metrics", {"X-Dashboard-Token": "s3cret"})[0] == 200
    assert get(stub, "/?token=s3cret")[0] == 200
    assert get(stub, "/api/batches?token=wrong")[0] == 401
    assert get(stub, "/api/batches", {"Authorization": "Bearer s3cre"})[0] == 401
    assert get(stub, "/health")[0] == 200
    assert get(stub, "/static/dashboard.css")[0] == 200


@pytest.mark.parametrize(("endpoint", "loopback"), [
    ("tcp:8080:interface=127.0.0.1", True),
    ("tcp:port=8080:interface=127.0.0.2", True),
    ("tcp6:8080:interface=\\:\\:1", True),
    ("tcp:8080:interface=localhost", True),
    ("unix:/tmp/dash.sock", True),
    ("tcp:8080", False),
    ("tcp:8080:interface=0.0.0.0", False),
    ("tcp:8080:interface=192.168.1.5", False),
    ("tcp6:8080", False),
    ("systemd:domain=INET:index=0", False),
])
def test_loopback_detection(endpoint: str, loopback: bool) -> None:
    """Only endpoints that accept local connections alone count as loopback."""
    assert endpoint_is_loopback(endpoint) is loopback


def test_non_loopback_dashboard_needs_a_token(tmp_path: Any) -> None:
    """Binding the dashboard to other hosts without a token is refused before anything starts."""
    with pytest.raises(ValueError, match="not loopback-only"):
        check_endpoint("tcp:8080", None)
    check_endpoint("tcp:8080", "t")
    check_endpoint("none", None)
    args = ["-d", "m", "--watch-dir", str(tmp_path)]
    options = Options()
    with pytest.raises(usage.UsageError, match="--dashboard-token"):
        options.parseOptions([*args, "--dashboard", "tcp:0:interface=0.0.0.0"])
    options = Options()
    options.parseOptions([*args, "--dashboard", "tcp:0:interface=0.0.0.0", "--dashboard-token", "t"])
    assert options["dashboard-token"] == "t"
    options = Options()
    options.parseOptions([*args, "--dashboard", "none"])
    assert options["dashboard"] is None
