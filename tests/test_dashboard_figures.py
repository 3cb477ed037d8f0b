"""What the dashboard adds to the counters, in process: percentiles, whole-run charts, timing, downloads."""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor as _reactor

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.dashboard.downloads import disposition
from seldon_batch_tx.dashboard.figures import CHART_POINTS, chart, latency_percentiles, quantile, timing
from seldon_batch_tx.dashboard.listener import DashboardService
from seldon_batch_tx.dashboard.registry import BatchRegistry
from seldon_batch_tx.pipeline.history import RunHistory
from seldon_batch_tx.pipeline.stats import LATENCY_BUCKETS, BatchStats
from seldon_batch_tx.pipeline.summary import Summary

reactor: Any = _reactor
TIMEOUT = 10
#: Lines in the output offered for download (about 3 MB: many chunks of the producer).
LINES = 100_000


def exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


def test_quantile_of_a_known_histogram() -> None:
    """Linear inside the bucket, as Prometheus' histogram_quantile; above the last bound, that bound."""
    bounds = (1.0, 2.0, 4.0)
    assert quantile([0, 0, 0, 0], bounds, 0.5) is None
    assert quantile([10, 10, 0, 0], bounds, 0.5) == 1.0
    assert quantile([10, 10, 0, 0], bounds, 0.75) == 1.5
    assert quantile([0, 0, 4, 0], bounds, 0.25) == 2.5
    assert quantile([0, 0, 0, 3], bounds, 0.99) == 4.0


def test_percentiles_from_many_latencies_are_within_a_bucket() -> None:
    """p50/p95/p99 of 20,000 log-normal latencies (ms to s) land within the 1.5x bucket spacing."""
    rng = random.Random(14)
    values = [rng.lognormvariate(math.log(0.02), 1.0) for _ in range(20_000)]
    stats = BatchStats("b", "in.txt")
    assert latency_percentiles(stats) == {"p50": None, "p95": None, "p99": None}
    for value in values:
        stats.observe_latency(value)
    found = latency_percentiles(stats)
    for key, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        truth = 1000 * exact(values, q)
        assert truth / 1.5 <= found[key] <= truth * 1.5, (key, truth, found[key])
    assert max(b / a for a, b in zip(LATENCY_BUCKETS, LATENCY_BUCKETS[1:], strict=False)) <= 1.5 + 1e-9


def test_history_of_a_long_run_is_bounded_and_evenly_spaced() -> None:
    """A week of 1 s samples keeps under 512 points, evenly spaced, the first kept."""
    history = RunHistory()
    for second in range(7 * 24 * 3600):
        history.add(float(second), second * 10, second)
    times = [t for t, _, _ in history.points]
    assert len(times) < history.capacity and times[0] == 0.0
    gaps = {b - a for a, b in zip(times, times[1:], strict=False)}
    assert gaps == {float(history.stride)}


def test_chart_covers_the_whole_run_with_bounded_points() -> None:
    """Three hours at 10 lines/s with 1 error/s, then a quiet hour: at most CHART_POINTS points from
    start to finish, rates exact, the quiet hour visible."""
    stats = BatchStats("b", "in.txt", total=200_000)
    stats.begin(0.0)
    for second in range(4 * 3600 + 1):
        busy = min(second, 3 * 3600)
        stats.succeeded, stats.failed = 9 * busy, busy
        stats.sample(float(second))
    points = chart(stats, now=4 * 3600 + 0.1)
    assert 100 <= len(points) <= CHART_POINTS
    assert points[-1][0] == pytest.approx(4 * 3600, abs=1)
    early = [p for p in points if p[0] <= 3 * 3600 - 600]
    late = [p for p in points if p[0] >= 3 * 3600 + 600]
    assert early and late
    assert all(p[1:] == [10.0, 1.0] for p in early) and all(p[1:] == [0.0, 0.0] for p in late)


def test_chart_has_a_point_in_the_first_second() -> None:
    """No blank first second: the moment asked for counts as a point once a quarter second has passed."""
    stats = BatchStats("b", "in.txt", total=100)
    stats.begin(10.0)
    stats.sample(10.0)
    stats.succeeded = 5
    assert chart(stats, now=10.1) == []
    assert chart(stats, now=10.5) == [[0.5, 10.0, 0.0]]


def test_timing_projects_the_total_while_running_and_is_exact_once_done() -> None:
    stats = BatchStats("b", "in.txt", total=100)
    stats.begin(0.0)
    for second in range(11):
        stats.succeeded = 2 * second
        stats.sample(float(second))
    assert timing(stats, 10.0) == {"elapsed": 10.0, "lines_per_s": 2.0, "projected_total": 50.0}
    stats.finished, stats.state = 12.0, "done"
    assert timing(stats, 30.0)["projected_total"] == 12.0


# -- downloads ------------------------------------------------------------------------------

def finished_registry(tmp_path: Path) -> tuple[BatchRegistry, Path]:
    """A registry with a finished CLI batch (output on disk, summary in memory), a running one and
    a finished daemon batch whose output was replaced by a symbolic link."""
    registry = BatchRegistry(reactor)
    output = tmp_path / "scored.txt"
    output.write_bytes(b"".join(b'{"data": {"ndarray": [%d]}}\n' % i for i in range(LINES)))
    config = BatchConfig(deployment_name="echo", input_data_path=str(tmp_path / "in.txt"),
                         output_data_path=str(output), batch_id="done-1", workers=2, benchmark=True)
    done = BatchStats("done-1", "in.txt", total=LINES)
    done.begin(0.0)
    done.succeeded, done.finished, done.state = LINES, 2.0, "done"
    registry.add(done, config=config, output=str(output)).finish(2.0, Summary.of(done, None))
    running = BatchStats("run-1", "other.txt", total=10)
    running.begin(0.0)
    registry.add(running, output=str(output))
    os.symlink(output, tmp_path / "link.txt")
    linked = BatchStats("linked", "linked.txt", total=1)
    linked.state = "done"
    entry = registry.add(linked, output=str(tmp_path / "link.txt"))
    (tmp_path / "linked.txt.summary.json").write_text('{"lines": 1}\n')
    entry.summary_file = str(tmp_path / "linked.txt.summary.json")
    return registry, output


async def serve(registry: BatchRegistry, token: str | None = None) -> DashboardService:
    service = DashboardService("tcp:0:interface=127.0.0.1", registry, reactor, token=token)
    service.startService()
    assert service.port is not None
    return service


async def fetch(service: DashboardService, path: str, host: str = "127.0.0.1") -> tuple[int, Any, bytes]:
    url = f"http://127.0.0.1:{service.port.getHost().port}{path}"
    response = await treq.get(url, headers={"Host": host}, timeout=TIMEOUT)
    return response.code, response.headers, await response.content()


@pytest_twisted.ensureDeferred
async def test_download_streams_the_recorded_output_with_a_safe_name(tmp_path: Path) -> None:
    """Over a real loopback socket: the output file (megabytes, sent in chunks) with its name, the run's
    summary as JSON, and the daemon's summary file."""
    registry, output = finished_registry(tmp_path)
    service = await serve(registry)
    try:
        api = json.loads((await fetch(service, "/api/batches/done-1"))[2])
        assert api["downloads"] == ["output", "summary"]
        code, headers, body = await fetch(service, "/download/output/done-1")
        assert code == 200 and body == output.read_bytes()
        assert headers.getRawHeaders("content-disposition") == [
            "attachment; filename=\"scored.txt\"; filename*=UTF-8''scored.txt"]
        code, headers, body = await fetch(service, "/download/summary/done-1")
        summary = json.loads(body)
        assert code == 200 and summary["succeeded"] == LINES and summary["exit_code"] == 0
        assert summary["benchmark"].startswith(f"Benchmark: elapsed time 2.000 s for {LINES} lines")
        assert (await fetch(service, "/download/summary/linked"))[2] == b'{"lines": 1}\n'  # the daemon's file
    finally:
        await service.stopService()


REFUSED = [
    ("/download/output/nope", 404),                      # unknown id
    ("/download/output/run-1", 409),                     # still running
    ("/download/output/linked", 404),                    # the recorded file is now a symbolic link
    ("/download/input/done-1", 404),                     # not a kind of download
    ("/download/output/", 404),
    ("/download/output/..%2F..%2Fetc%2Fpasswd", 404),    # a path in the request names no file
]


@pytest_twisted.ensureDeferred
async def test_download_refused(tmp_path: Path) -> None:
    registry, _ = finished_registry(tmp_path)
    service = await serve(registry)
    try:
        for path, expected in REFUSED:
            code, _, body = await fetch(service, path)
            assert code == expected, (path, body)
            assert b"root:" not in body
        assert (await fetch(service, "/download/output/done-1", host="evil.example"))[0] == 421
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_download_needs_the_token(tmp_path: Path) -> None:
    registry, output = finished_registry(tmp_path)
    service = await serve(registry, token="s3cret-token")
    try:
        assert (await fetch(service, "/download/output/done-1"))[0] == 401
        assert (await fetch(service, "/download/output/done-1?token=wrong"))[0] == 401
        assert (await fetch(service, "/download/output/done-1?token=s3cret-token"))[2] == output.read_bytes()
    finally:
        await service.stopService()


def test_disposition_names_are_safe() -> None:
    assert disposition('/x/a "b"\r\n;c.txt') == (b"attachment; filename=\"a__b____c.txt\"; "
                                                 b"filename*=UTF-8''a%20%22b%22%0D%0A%3Bc.txt")
    assert disposition("/x/..") == b"attachment; filename=\"download\"; filename*=UTF-8''.."
    assert disposition("/x/\udcff.txt").startswith(b"attachment; filename=\"_xff.txt\"")
