"""Load a production model can bear: a smooth request rate and an adaptive number of requests in flight.

A batch often shares its model with online traffic. ``--max-rate R`` (:class:`RateLimiter`) caps the
requests per second of a whole run, spread evenly rather than in bursts; ``--adaptive``
(:class:`AdaptiveConcurrency`) finds how many concurrent requests the model bears, by AIMD as TCP
does: it backs off by a factor on overload signals (HTTP 429/503, gRPC UNAVAILABLE or
RESOURCE_EXHAUSTED, timeouts) and grows again by one per round of successes, never above
``--workers``. Both hand out admissions as Deferreds that a stop cancels; neither polls.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from typing import Any, Literal

import attrs
import txaio
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from seldon_batch_tx.config import BatchConfig

txaio.use_twisted()
log = txaio.make_logger()

#: Failure kinds (``RequestFailed.kind``) that mean "the server is overloaded": back off.
OVERLOAD_KINDS = frozenset({"http_429", "http_503", "grpc_UNAVAILABLE", "grpc_RESOURCE_EXHAUSTED", "timeout"})
#: HTTP statuses that say the same whatever kind the transport gave (a 503 whose body is not JSON).
OVERLOAD_HTTP_CODES = frozenset({429, 503})
#: The reactor's lateness (timers fire late by a few ms) forgiven to a backlog, so the long-run rate
#: stays exact; a longer stall (a blocked reactor) is not made up for with a burst.
CATCH_UP = 0.1
#: Multiplicative decrease on an overload signal (at most once per round trip).
DECREASE = 0.7

Outcome = Literal["ok", "overload", "error", "cancelled"]


def is_overload(kind: str, code: int | None, *, retryable: bool = True) -> bool:
    """Whether a failed attempt is the server shedding load (slow down) rather than a bad request.

    ``retryable=False`` rules it out: a RESOURCE_EXHAUSTED for a message over the size limit
    would come again at any load.
    """
    if not retryable:
        return False
    if kind in OVERLOAD_KINDS:
        return True
    return not kind.startswith("grpc_") and code in OVERLOAD_HTTP_CODES


def outcome_of(error: BaseException | None) -> Outcome:
    """The outcome to release with, from what an attempt raised (``None``: it was answered).

    Reads ``kind``/``code``/``retryable`` as ``RequestFailed`` carries them; a cancel is neither
    an answer nor a signal.
    """
    if error is None:
        return "ok"
    if isinstance(error, CancelledError):
        return "cancelled"
    kind = getattr(error, "kind", None)
    if isinstance(kind, str):
        code = getattr(error, "code", None)
        if is_overload(kind, code if isinstance(code, int) else None,
                       retryable=bool(getattr(error, "retryable", True))):
            return "overload"
    return "error"


class RateLimiter:
    """At most ``rate`` admissions per second over a run, evenly spaced (GCRA), ``burst`` at once.

    Waiters queue in order; one timer (never a loop) admits the head when its slot comes. A
    cancelled waiter frees its place; :meth:`stop` cancels every waiter and refuses new ones.
    """

    def __init__(self, rate: float, clock: IReactorTime, burst: float = 1.0) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a positive number of requests per second, not {rate!r}")
        if not (math.isfinite(burst) and burst >= 1):
            raise ValueError(f"burst must be at least 1, not {burst!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._interval = 1.0 / self.rate
        self._tolerance = (self.burst - 1.0) * self._interval
        #: The theoretical time of the next slot: GCRA's whole state.
        self._tat = clock.seconds()
        self._waiters: deque[Deferred[None]] = deque()
        self._timer: IDelayedCall | None = None
        self._stopped = False
        #: Admissions so far (for the dashboard: the rate actually reached).
        self.granted = 0

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def acquire(self) -> Deferred[None]:
        """Fires when the next request may go; CancelledError after :meth:`stop`."""
        if self._stopped:
            return fail(CancelledError("the rate limiter was stopped"))
        now = self._clock.seconds()
        if not self._waiters and now >= self._tat - self._tolerance:
            self._tat = max(self._tat, now) + self._interval
            self.granted += 1
            return succeed(None)
        d: Deferred[None] = Deferred(canceller=self._forget)
        self._waiters.append(d)
        self._schedule()
        return d

    def stop(self) -> None:
        """Cancel every waiter (their Deferreds fail with CancelledError) and refuse new ones."""
        self._stopped = True
        self._cancel_timer()
        waiters, self._waiters = self._waiters, deque()
        for d in waiters:
            d.cancel()

    def snapshot(self) -> dict[str, Any]:
        return {"rate_limit": self.rate, "granted": self.granted, "waiting": len(self._waiters)}

    def _forget(self, d: Deferred[None]) -> None:
        """Canceller: the waiter leaves the queue and takes no slot."""
        try:
            self._waiters.remove(d)
        except ValueError:
            return
        if not self._waiters:
            self._cancel_timer()

    def _schedule(self) -> None:
        if self._timer is None and self._waiters:
            delay = max(self._tat - self._tolerance - self._clock.seconds(), 0.0)
            self._timer = self._clock.callLater(delay, self._tick)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _tick(self) -> None:
        """Admit every waiter whose slot has come (several when the reactor was late), then re-arm."""
        self._timer = None
        now = self._clock.seconds()
        ready: list[Deferred[None]] = []
        for _ in range(len(self._waiters)):  # bounded by the queue
            if now < self._tat - self._tolerance:
                break
            ready.append(self._waiters.popleft())
            # Backlog: the next slot follows the last one, not "now", so timer lateness costs nothing.
            self._tat = max(self._tat, now - CATCH_UP) + self._interval
        self.granted += len(ready)
        self._schedule()
        for d in ready:
            d.callback(None)


@attrs.define
class Permit:
    """One admission of :class:`AdaptiveConcurrency`; hand it back with ``release(permit, outcome)``."""

    epoch: int
    granted_at: float
    released: bool = False


class AdaptiveConcurrency:
    """How many requests may be in flight, found by AIMD between ``min_workers`` and ``max_workers``.

    Slow start (one more per success) until the first overload, then one more per ``limit``
    successes; an overload signal multiplies the limit by :data:`DECREASE`, at most once per
    round trip: signals from permits granted before the last decrease do not count again, so a
    burst of errors shrinks the limit once. Lowering the limit never touches requests in flight;
    it only delays new ones until enough have finished.
    """

    def __init__(self, max_workers: int, clock: IReactorTime, *, min_workers: int = 1,
                 initial: int | None = None) -> None:
        if max_workers < 1 or not 1 <= min_workers <= max_workers:
            raise ValueError(f"need 1 <= min_workers ({min_workers}) <= max_workers ({max_workers})")
        self.max_workers = max_workers
        self.min_workers = min_workers
        self._clock = clock
        start = min(max_workers, max(min_workers, 8)) if initial is None else initial
        self._limit = float(min(max(start, min_workers), max_workers))
        self._threshold = float(max_workers)  # slow start below this
        self._epoch = 0
        self._waiters: deque[Deferred[Permit]] = deque()
        self._stopped = False
        #: Requests admitted and not yet released.
        self.current = 0
        #: Counters for the dashboard: answers, overload signals among failures, other failures.
        self.answers = 0
        self.overloads = 0
        self.errors = 0
        self.decreases = 0
        #: Smoothed time from admission to release (s), an estimate of the round trip.
        self.rtt: float | None = None

    @property
    def limit(self) -> int:
        """Requests allowed in flight now."""
        return max(self.min_workers, min(self.max_workers, int(self._limit)))

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def overload_share(self) -> float:
        """Share of outcomes that were overload signals (0 before any)."""
        total = self.answers + self.overloads + self.errors
        return self.overloads / total if total else 0.0

    def acquire(self) -> Deferred[Permit]:
        """Fires with a :class:`Permit` once fewer than :attr:`limit` requests are in flight."""
        if self._stopped:
            return fail(CancelledError("the concurrency limiter was stopped"))
        if not self._waiters and self.current < self.limit:
            return succeed(self._grant())
        d: Deferred[Permit] = Deferred(canceller=self._forget)
        self._waiters.append(d)
        return d

    def release(self, permit: Permit, outcome: Outcome) -> None:
        """The request ``permit`` admitted ended with ``outcome``; a second release is ignored."""
        if permit.released:
            return
        permit.released = True
        self.current -= 1
        now = self._clock.seconds()
        if outcome != "cancelled":
            sample = max(now - permit.granted_at, 0.0)
            self.rtt = sample if self.rtt is None else 0.8 * self.rtt + 0.2 * sample
        if outcome == "ok":
            self.answers += 1
            self._grow()
        elif outcome == "overload":
            self.overloads += 1
            if permit.epoch == self._epoch:
                self._shrink()
        elif outcome == "error":
            self.errors += 1
        self._admit()

    def stop(self) -> None:
        """Cancel every waiter and refuse new admissions; requests in flight release as usual."""
        self._stopped = True
        waiters, self._waiters = self._waiters, deque()
        for d in waiters:
            d.cancel()

    def snapshot(self) -> dict[str, Any]:
        return {"concurrency_limit": self.limit, "in_flight": self.current, "max_workers": self.max_workers,
                "waiting": len(self._waiters), "answers": self.answers, "overloads": self.overloads,
                "errors": self.errors, "decreases": self.decreases, "overload_share": self.overload_share}

    def _grant(self) -> Permit:
        self.current += 1
        return Permit(self._epoch, self._clock.seconds())

    def _grow(self) -> None:
        """Additive increase, only while the limit is what holds requests back (else it proves nothing)."""
        if self.current + 1 < self.limit and not self._waiters:
            return
        step = 1.0 if self._limit < self._threshold else 1.0 / max(self._limit, 1.0)
        self._limit = min(float(self.max_workers), self._limit + step)

    def _shrink(self) -> None:
        old = self.limit
        self._limit = max(float(self.min_workers), self._limit * DECREASE)
        self._threshold = self._limit
        self._epoch += 1
        self.decreases += 1
        log.debug("overload signal: concurrency limit {old} -> {new} ({in_flight} in flight)",
                  old=old, new=self.limit, in_flight=self.current)

    def _admit(self) -> None:
        """Wake waiters while there is room (bounded by the queue)."""
        for _ in range(len(self._waiters)):
            if self.current >= self.limit:
                break
            self._waiters.popleft().callback(self._grant())

    def _forget(self, d: Deferred[Permit]) -> None:
        """Canceller: a waiter that leaves takes no place."""
        with contextlib.suppress(ValueError):
            self._waiters.remove(d)


class Pacing:
    """What the engine holds per run (or per daemon batch): ``--adaptive`` then ``--max-rate``.

    :meth:`admit` before each attempt, :meth:`done` after it, :meth:`stop` when the run stops.
    A concurrency permit is taken before the rate slot, so a slot is never spent on a request
    that then waits: requests leave exactly at the rate's pace.
    """

    def __init__(self, clock: IReactorTime, *, workers: int, max_rate: float | None = None,
                 adaptive: bool = False) -> None:
        self.rate = RateLimiter(max_rate, clock) if max_rate else None
        self.concurrency = AdaptiveConcurrency(workers, clock) if adaptive else None

    @classmethod
    def from_config(cls, config: BatchConfig, clock: IReactorTime) -> Pacing | None:
        """The run's pacing from ``--max-rate``/``--adaptive`` (``None`` without either: no cost)."""
        max_rate: float | None = getattr(config, "max_rate", None)
        adaptive = bool(getattr(config, "adaptive", False))
        if not max_rate and not adaptive:
            return None
        return cls(clock, workers=config.workers, max_rate=max_rate, adaptive=adaptive)

    async def admit(self) -> Permit | None:
        """Wait until this attempt may be sent; CancelledError when stopped (or cancelled) first."""
        concurrency = self.concurrency
        permit = await concurrency.acquire() if concurrency is not None else None
        if self.rate is not None:
            try:
                await self.rate.acquire()
            except BaseException:
                if concurrency is not None and permit is not None:
                    concurrency.release(permit, "cancelled")
                raise
        return permit

    def done(self, permit: Permit | None, error: BaseException | None) -> None:
        """The attempt ``permit`` admitted ended: answered (``error`` None) or with ``error``."""
        if permit is not None and self.concurrency is not None:
            self.concurrency.release(permit, outcome_of(error))

    def stop(self) -> None:
        for part in (self.rate, self.concurrency):
            if part is not None:
                part.stop()

    def snapshot(self) -> dict[str, Any]:
        """For the dashboard and /metrics: rate limit, concurrency, share of overload answers."""
        out: dict[str, Any] = {"rate_limit": None, "adaptive": self.concurrency is not None}
        if self.rate is not None:
            out.update(self.rate.snapshot())
        if self.concurrency is not None:
            out.update(self.concurrency.snapshot())
        return out
