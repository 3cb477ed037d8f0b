"""Outages pause the engine (issue 19), property-tested: a fault transport on a fake clock follows a
random outage schedule (refusals, resets, gateway 503 bursts, slow recoveries where readiness says yes
before requests work). Every line ends exactly once; an error line only for a line the server called
bad; with the model gone for good, ``--outage-timeout`` stops the run and the lines not answered
keep no output line."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.core.failures import RequestFailed
from seldon_batch_tx.outputs.writer import LineWriter
from seldon_batch_tx.pipeline.engine import BatchRun
from seldon_batch_tx.pipeline.reader import read_items
from seldon_batch_tx.pipeline.stats import BatchStats
from seldon_batch_tx.pipeline.summary import Summary

FAULTS = {
    "refuse": lambda: RequestFailed("connection", "cannot connect: Connection was refused", retryable=True,
                                    info="connection"),
    "reset": lambda: RequestFailed("connection", "connection lost during the response: reset", retryable=True,
                                   info="connection"),
    "503": lambda: RequestFailed("http_503", "HTTP 503: no healthy upstream", code=503, retryable=True,
                                 info="http_503"),
}
BAD = -1  # a line holding this value is refused by the "server" as bad input


class Schedule:
    """Segments of (seconds, fault or None) from time 0; up for ever after the last (unless ``down_after``)."""

    def __init__(self, segments: list[tuple[float, str | None, float]], down_for_good: bool) -> None:
        self.segments, self.down_for_good = segments, down_for_good

    def state(self, now: float, probing: bool) -> str | None:
        start = 0.0
        for seconds, fault, ready_early in self.segments:
            if now < start + seconds:
                # a slow recovery: readiness says yes ``ready_early`` seconds before requests work
                if probing and fault is not None and now >= start + seconds - ready_early:
                    return None
                return fault
            start += seconds
        return "refuse" if self.down_for_good else None


class FaultTransport:
    def __init__(self, clock: Clock, schedule: Schedule) -> None:
        self.clock, self.schedule = clock, schedule

    def start(self) -> None:
        pass

    def stop(self) -> Deferred[None]:
        return succeed(None)

    def send(self, body: dict[str, Any], puid: str) -> Deferred[dict[str, Any]]:
        d: Deferred[dict[str, Any]] = Deferred()
        fault = self.schedule.state(self.clock.seconds(), probing=False)

        def answer() -> None:
            if fault is not None:
                d.errback(FAULTS[fault]())
            elif BAD in body["data"]["ndarray"][0]:
                d.errback(RequestFailed("http_400", 'HTTP 400: {"error": "bad value"}', code=400, info="http_400"))
            else:
                d.callback(body)

        self.clock.callLater(0.05, answer)
        return d


segments = st.lists(st.tuples(st.sampled_from([0.5, 2.0, 7.0, 20.0]), st.sampled_from([None, "refuse", "reset", "503"]),
                              st.sampled_from([0.0, 0.0, 1.5])), max_size=5)


def run_scheduled(schedule: Schedule, lines: list[int], workers: int, retries: int,
                  outage_timeout: float | None) -> tuple[Summary, list[dict[str, Any]]]:
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        config = BatchConfig(deployment_name="m", input_data_path="in", output_data_path=str(out), batch_id="B",
                             workers=workers, retries=retries, outage_timeout=outage_timeout)
        stream = io.BufferedReader(io.BytesIO(b"".join(b"[[%d]]\n" % v for v in lines)))  # type: ignore[arg-type]
        writer = LineWriter(config.output_data_path)
        run = BatchRun(config, read_items(stream, "B"), FaultTransport(clock, schedule), writer,  # type: ignore[arg-type]
                       BatchStats("B", "in", total=len(lines)), clock)
        assert run.outage is not None
        run.outage.probe = lambda: succeed(None if schedule.state(clock.seconds(), probing=True) is None else "down")
        got: list[Summary] = []
        Deferred.fromCoroutine(run.run()).addCallback(got.append)
        for _ in range(20_000):
            if got:
                break
            clock.advance(0.05)
        writer.close()
        assert got, "the run did not finish"
        return got[0], [json.loads(x) for x in out.read_bytes().split(b"\n") if x]


def failed_indexes(records: list[dict[str, Any]]) -> set[int]:
    return {r["meta"]["tags"]["batch_index"] for r in records if r.get("status", {}).get("status") == "FAILURE"}


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(segs=segments, lines=st.lists(st.sampled_from([1, 2, 3, BAD]), min_size=1, max_size=15),
       workers=st.integers(1, 4), retries=st.integers(0, 2))
def test_outages_spend_no_line(segs: list[tuple[float, str | None, float]], lines: list[int], workers: int,
                               retries: int) -> None:
    summary, records = run_scheduled(Schedule(segs, down_for_good=False), lines, workers, retries, None)
    indexes = sorted(r["meta"]["tags"]["batch_index"] for r in records)
    assert indexes == list(range(len(lines))), "every line exactly once"
    assert failed_indexes(records) == {i for i, v in enumerate(lines) if v == BAD}
    assert summary.stopped_early is None


@SETTINGS
@given(segs=segments, lines=st.lists(st.sampled_from([1, 2, BAD]), min_size=1, max_size=15),
       workers=st.integers(1, 4))
def test_an_outage_past_the_timeout_stops_and_leaves_lines_for_resume(
        segs: list[tuple[float, str | None, float]], lines: list[int], workers: int) -> None:
    summary, records = run_scheduled(Schedule(segs, down_for_good=True), lines, workers, 1, 30.0)
    indexes = [r["meta"]["tags"]["batch_index"] for r in records]
    assert len(indexes) == len(set(indexes)), "no line twice"
    assert failed_indexes(records) <= {i for i, v in enumerate(lines) if v == BAD}
    if len(records) < len(lines):
        assert summary.stopped_early is not None and "--outage-timeout 30 s" in summary.stopped_early
        assert summary.exit_code == 3
