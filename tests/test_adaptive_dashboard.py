"""The load on the model as the dashboard shows it: API fields, the batch page, /metrics series.

In memory (StubTreq on the real site); a live command's /metrics is read in tests/test_adaptive_cli.py.
"""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.task import Clock

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.dashboard.registry import BatchRegistry
from seldon_batch_tx.dashboard.site import DashboardRoot
from seldon_batch_tx.pipeline.pacing import Pacing
from seldon_batch_tx.pipeline.stats import BatchStats
from tests.test_dashboard import get
from tests.test_pacing import granted


def paced_registry(clock: Clock) -> tuple[BatchRegistry, BatchStats, Pacing]:
    """One running batch under --adaptive --max-rate 50 (16 workers) that met overload, one plain."""
    registry = BatchRegistry(clock, keep=0)
    config = BatchConfig(deployment_name="echo", input_data_path="/in/a.txt", output_data_path="/in/a.out.txt",
                         batch_id="paced", workers=16, max_rate=50.0, adaptive=True)
    stats = BatchStats("paced", "a.txt", total=100)
    stats.begin(0.0)
    pacing = Pacing(clock, workers=16, max_rate=50.0, adaptive=True)
    stats.pacing = pacing
    assert pacing.concurrency is not None
    permits = [granted(pacing.concurrency.acquire()) for _ in range(8)]
    for permit in permits[:3]:
        pacing.done(permit, None)
        stats.observe_outcome(False)
    pacing.concurrency.release(permits[3], "overload")  # grown to 9 by the answers, then 9 * 0.7 -> 6
    stats.observe_outcome(True)
    stats.in_flight = 4
    registry.add(stats, config=config)
    plain = BatchStats("plain", "b.txt", total=10)
    plain.begin(0.0)
    plain.observe_outcome(False)
    registry.add(plain, config=config.replace(batch_id="plain", max_rate=None, adaptive=False, workers=4))
    return registry, stats, pacing


def test_api_and_batch_page_show_concurrency_rate_and_overload_share() -> None:
    registry, _, _ = paced_registry(Clock())
    stub = StubTreq(DashboardRoot(registry))
    code, _, body = get(stub, "/api/batches")
    assert code == 200
    batches = {b["id"]: b for b in json.loads(body)["batches"]}
    assert {k: batches["paced"][k] for k in ("in_flight", "concurrency_limit", "adaptive", "rate_limit",
                                               "answers", "overloads", "overload_share")} == {
        "in_flight": 4, "concurrency_limit": 6, "adaptive": True, "rate_limit": 50.0, "answers": 4,
        "overloads": 1, "overload_share": 0.25}
    assert (batches["plain"]["concurrency_limit"], batches["plain"]["rate_limit"]) == (4, None)
    code, _, page = get(stub, "/batches/paced")
    text = page.decode()
    assert code == 200 and "4 / 6 (adaptive)" in text and "50.0 requests/s" in text and "25.0%" in text


def test_metrics_expose_the_load_series_and_counters_survive_retirement() -> None:
    clock = Clock()
    registry, stats, _ = paced_registry(clock)
    stub = StubTreq(DashboardRoot(registry))
    families = {f.name: f for f in text_string_to_metric_families(get(stub, "/metrics")[2].decode())}

    def by_batch(name: str) -> dict[str, float]:
        assert families[name].type == "gauge"
        return {s.labels["batch_id"]: s.value for s in families[name].samples}

    assert by_batch("seldon_batch_concurrency_limit") == {"paced": 6.0, "plain": 4.0}
    assert by_batch("seldon_batch_requests_in_flight") == {"paced": 4.0, "plain": 0.0}
    assert by_batch("seldon_batch_rate_limit") == {"paced": 50.0}
    assert by_batch("seldon_batch_overload_share") == {"paced": 0.25, "plain": 0.0}
    assert families["seldon_batch_answers"].type == "counter"
    assert families["seldon_batch_answers"].samples[0].value == 5
    assert families["seldon_batch_overload_answers"].samples[0].value == 1
    stats.state = "done"  # retired (keep=0) when the next batch is added: the counters keep its counts
    registry.add(BatchStats("next", "c.txt"))
    families = {f.name: f for f in text_string_to_metric_families(get(stub, "/metrics")[2].decode())}
    assert families["seldon_batch_answers"].samples[0].value == 5
    assert families["seldon_batch_overload_answers"].samples[0].value == 1
