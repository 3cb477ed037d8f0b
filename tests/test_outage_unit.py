"""pipeline/outage.Outage on a fake clock: when the run waits, what it shows, when it gives up (issue 19)."""

from __future__ import annotations

from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.core.failures import RequestFailed
from seldon_batch_tx.pipeline.outage import STREAK, Outage, is_outage
from seldon_batch_tx.pipeline.stats import BatchStats

REFUSED = RequestFailed("connection", "cannot connect: Connection was refused", retryable=True, info="connection")


def make(timeout: float | None = 60.0, ready: bool = False) -> tuple[Outage, Clock, BatchStats, list[str], list[int]]:
    clock, stats, stops, probes = Clock(), BatchStats("B", "in"), [], []
    config = BatchConfig(deployment_name="m", input_data_path="in", output_data_path="out", outage_timeout=timeout)
    outage = Outage(config, clock, stats, stops.append)

    def probe() -> object:
        probes.append(1)
        return succeed(None if ready else "cannot connect to m:80: connection refused")

    outage.probe = probe  # type: ignore[assignment]
    return outage, clock, stats, stops, probes


def test_outage_class() -> None:
    assert is_outage(REFUSED)
    assert is_outage(RequestFailed("grpc_UNAVAILABLE", "failed to connect", code=14))
    assert is_outage(RequestFailed("http_503", "HTTP 503: no healthy upstream", code=503))
    assert not is_outage(RequestFailed("http_503", 'HTTP 503: {"status": {"status": "FAILURE"}}', code=503))
    assert not is_outage(RequestFailed("http_429", "HTTP 429: slow down", code=429))
    assert not is_outage(RequestFailed("grpc_RESOURCE_EXHAUSTED", "busy", code=8))
    assert not is_outage(RequestFailed("connection", "cannot connect: SSL routines: certificate verify failed"))
    assert not is_outage(RequestFailed("timeout", "no response within the request timeout"))


def test_a_streak_closes_an_answer_reopens() -> None:
    outage, clock, stats, stops, probes = make()
    for _ in range(STREAK - 1):
        outage.failed(REFUSED)
    assert not outage.closed and outage.wait().called
    outage.answered()  # one answer in between: the count starts again
    for _ in range(STREAK - 1):
        outage.failed(REFUSED)
    assert not outage.closed
    outage.failed(REFUSED)
    assert outage.closed and stats.waiting.startswith("waiting for the model since ")
    assert stats.waiting.endswith(": cannot connect: Connection was refused")
    waiter = outage.wait()
    assert not waiter.called
    clock.advance(3)
    assert probes and stats.waiting.endswith(": cannot connect to m:80: connection refused")  # the probe's cause
    outage.answered()
    assert waiter.called and not outage.closed and stats.waiting == "" and outage.since is None
    assert not clock.getDelayedCalls() or all(not c.active() for c in clock.getDelayedCalls())


def test_the_timeout_counts_from_the_first_failure_through_false_recoveries() -> None:
    """A probe that says ready while requests still fail does not restart the clock, and probes slow down."""
    outage, clock, stats, stops, probes = make(timeout=60.0, ready=True)
    for second in range(59):
        for _ in range(STREAK):
            outage.failed(REFUSED)
        clock.advance(1)
        assert not stops, second
    assert len(probes) < 20  # backoff kept across the false recoveries, not a probe every 0.5 s
    for _ in range(STREAK):
        outage.failed(REFUSED)
    clock.advance(1.5)
    assert len(stops) == 1 and "could not be reached since" in stops[0] and "--outage-timeout 60 s" in stops[0]


def test_none_waits_for_ever_and_end_leaves_no_timer() -> None:
    outage, clock, stats, stops, probes = make(timeout=None)
    for _ in range(STREAK):
        outage.failed(REFUSED)
    clock.advance(10_000)
    assert outage.closed and not stops
    outage.end()
    clock.advance(100)
    assert not outage.closed and stats.waiting == ""


def test_failures_at_once_after_a_ready_probe_keep_the_probing_going() -> None:
    """Waiters released by a ready probe that fail again at once (in the same call) close it again:
    the probing must go on, or the run would wait for ever."""
    outage, clock, stats, stops, probes = make(timeout=None, ready=True)

    def fail_again(_: object) -> None:
        for _ in range(STREAK):
            outage.failed(REFUSED)
        outage.wait().addCallback(fail_again)

    for _ in range(STREAK):
        outage.failed(REFUSED)
    outage.wait().addCallback(fail_again)
    clock.advance(1)
    seen = len(probes)
    clock.advance(30)
    assert outage.closed and len(probes) > seen


def test_the_progress_line_says_it_waits() -> None:
    from seldon_batch_tx.dashboard.progress import render_bar

    outage, clock, stats, stops, probes = make()
    stats.total = 10
    assert "waiting" not in render_bar(stats, clock.seconds())
    for _ in range(STREAK):
        outage.failed(REFUSED)
    assert render_bar(stats, clock.seconds()).endswith("; " + stats.waiting)


def test_connection_failures_read_plainly() -> None:
    """What the outage line, the dashboard and error lines say of a refused connection or an unknown name."""
    from twisted.internet.error import ConnectionRefusedError as Refused
    from twisted.internet.error import DNSLookupError

    from seldon_batch_tx.transports.http import connection_failure

    assert connection_failure(Refused()).reason == "cannot connect: connection refused"
    assert connection_failure(DNSLookupError("model.local")).reason == \
        "cannot connect: the name does not resolve (model.local)"
