"""Counters of one batch, written by the engine and only read by progress, summary and dashboard.

A batch's state changes only through :meth:`BatchStats.begin`, :meth:`~BatchStats.conclude` and
:meth:`~BatchStats.fail`, and its rate samples are taken only by the engine running it (every
second, :meth:`~BatchStats.sample`): the progress bar, the dashboard and /metrics all read the
same samples, so they show the same rate.
"""

from __future__ import annotations

import bisect
from collections import Counter, deque
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from .history import RunHistory

if TYPE_CHECKING:
    from .pacing import Pacing

#: Upper bounds (seconds) of the request latency histogram (/metrics, the dashboard's percentiles):
#: 100 us to 100 s, neighbours at most 1.5x apart, so an interpolated percentile is within that.
LATENCY_BUCKETS = tuple(round(m * 10.0 ** e, 6) for e in range(-4, 2) for m in (1, 1.5, 2, 3, 4, 5, 7.5)) + (100.0,)


class Ending(Protocol):
    """What :meth:`BatchStats.conclude` reads of a run's :class:`.summary.Summary` (made from these
    counters, so it stands above them and is named here by what it holds, not imported)."""

    @property
    def stopped_early(self) -> str | None: ...


@attrs.define
class BatchStats:
    """Live state of one batch; cheap to update on the per-request path."""

    batch_id: str
    name: str
    total: int | None = None
    #: Whether ``total`` is still an estimate (an input not counted, not yet read to its end).
    total_estimated: bool = False
    state: str = "queued"  # queued | running | done | failed | stopped
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    requests: int = 0
    errors_by_kind: Counter[str] = attrs.field(factory=Counter)
    #: The first reason met of each error kind, for the summary line.
    error_samples: dict[str, str] = attrs.field(factory=dict)
    latest_errors: deque[dict[str, Any]] = attrs.field(factory=lambda: deque(maxlen=20))
    started: float | None = None
    finished: float | None = None
    latency_counts: list[int] = attrs.field(factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0
    #: (time, lines done) samples for "rate now" and the throughput chart; bounded.
    samples: deque[tuple[float, int]] = attrs.field(factory=lambda: deque(maxlen=600))
    #: The whole run's (time, done, failed), thinned to a bounded size, for the dashboard's charts.
    history: RunHistory = attrs.field(factory=RunHistory)
    reason: str | None = None
    #: Lines found in the output when a resumed run started; included in succeeded/failed.
    resumed: int = 0
    #: Load on the model: attempts in flight, attempts ended (cancelled ones aside), and of those
    #: the overload signals (429/503, UNAVAILABLE/RESOURCE_EXHAUSTED, timeouts).
    in_flight: int = 0
    answers: int = 0
    overloads: int = 0
    #: "waiting for the model since HH:MM:SS: cause" while an outage pauses the run, else "".
    waiting: str = ""
    #: The run's :class:`.Pacing` (``--max-rate``/``--adaptive``), set by the engine; None without.
    pacing: Pacing | None = attrs.field(default=None, repr=False, eq=False)

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    def begin(self, now: float) -> None:
        """The engine started sending this batch's lines."""
        self.state, self.started = "running", now

    def conclude(self, summary: Ending) -> None:
        """The run ended: ``stopped`` when it stopped early (``--resume`` finishes it), else ``done``."""
        self.state = "stopped" if summary.stopped_early else "done"

    def fail(self, reason: str) -> None:
        """The batch could not run (or its file could not be settled): ``failed``, saying why."""
        self.state, self.reason = "failed", reason

    def observe_latency(self, seconds: float) -> None:
        self.requests += 1
        self.latency_sum += seconds
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def observe_outcome(self, overload: bool) -> None:
        """An attempt ended (answered or failed); ``overload``: the server was shedding load."""
        self.answers += 1
        self.overloads += overload

    @property
    def overload_share(self) -> float:
        """Share of ended attempts that were overload signals (0 before any)."""
        return self.overloads / self.answers if self.answers else 0.0

    def record_error(self, kind: str, index: int, reason: str) -> None:
        self.failed += 1
        self.errors_by_kind[kind] += 1
        if kind not in self.error_samples:
            self.error_samples[kind] = reason
        self.latest_errors.append({"batch_index": index, "kind": kind, "reason": reason})

    def sample(self, now: float) -> None:
        """Record (time, lines done) for the rates; the engine calls it while the batch runs."""
        self.samples.append((now, self.done))
        self.history.add(now, self.done, self.failed)

    def elapsed(self, now: float) -> float:
        if self.started is None:
            return 0.0
        return (self.finished if self.finished is not None else now) - self.started

    def rate_overall(self, now: float) -> float:
        elapsed = self.elapsed(now)
        return (self.done - self.resumed) / elapsed if elapsed > 0 else 0.0

    def rate_now(self, window: float = 5.0) -> float:
        """Lines/s over roughly the last ``window`` seconds of samples."""
        if len(self.samples) < 2:
            return 0.0
        t1, n1 = self.samples[-1]
        t0, n0 = t1, n1
        for t, n in reversed(self.samples):
            t0, n0 = t, n
            if t1 - t >= window:
                break
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def eta(self, now: float) -> float | None:
        rate = self.rate_now() or self.rate_overall(now)
        if self.total is None or rate <= 0 or self.state != "running":
            return None
        return max(self.total - self.done, 0) / rate

    def snapshot(self, now: float) -> dict[str, Any]:
        """A JSON-ready view for the API, the dashboard and the summary file."""
        total = self.total
        return {
            "id": self.batch_id,
            "name": self.name,
            "state": self.state,
            "total": total,
            "done": self.done,
            "percent": round(100.0 * self.done / total, 1) if total else (100.0 if self.state == "done" else 0.0),
            "succeeded": self.succeeded,
            "failed": self.failed,
            "retries": self.retries,
            "requests": self.requests,
            "errors_by_kind": dict(self.errors_by_kind),
            "elapsed": round(self.elapsed(now), 3),
            "rate_now": round(self.rate_now(), 1),
            "rate_overall": round(self.rate_overall(now), 1),
            "eta": None if (eta := self.eta(now)) is None else round(eta, 1),
            "mean_latency_ms": round(1000 * self.latency_sum / self.requests, 2) if self.requests else None,
            "reason": self.reason,
            "waiting": self.waiting,
        }
