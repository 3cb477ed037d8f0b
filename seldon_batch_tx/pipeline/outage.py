"""An outage pauses the run instead of consuming its lines.

When :data:`STREAK` attempts in a row fail with an outage-class error (:func:`is_outage`: no
connection, gRPC UNAVAILABLE, a gateway's 502/503/504 that is not a model's answer) and none
answers in between, the run is *waiting for the model*: :class:`Outage` closes, attempts wait
in :meth:`Outage.wait` (keeping their lines and their retry budgets), and one probe
(:mod:`.readiness`) is repeated with backoff. A ready probe reopens it; the outage is over with
the first real answer. After ``--outage-timeout`` seconds from its start the run stops (exit 3)
and the lines not answered keep no output line, so ``--resume`` sends them.

All of this is per failure and per run: an answered attempt costs :meth:`answered` only when
an outage is under way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import txaio
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import deferLater

from ..config import BatchConfig
from ..core.failures import RequestFailed
from .readiness import FIRST_PAUSE, LONGEST_PAUSE, clock_time, probe
from .stats import BatchStats

txaio.use_twisted()
log = txaio.make_logger()

#: Outage-class failures in a row, with no answer in between, that make the run wait for the model.
STREAK = 3
#: Outage-class failures one request may have while the run is not waiting, before they count
#: against ``--retries`` (one replica refusing while others answer is that request's trouble).
SPARE = 2 * STREAK
#: Words of a TLS failure's reason (a certificate refused or a handshake that cannot succeed).
TLS_WORDS = ("certificate", "ssl", "handshake", "tls")
#: Gateway statuses that mean "nothing behind me" when their body is not a model's JSON answer.
GATEWAY_STATUSES = frozenset({"http_502", "http_503", "http_504"})


def is_outage(failure: RequestFailed) -> bool:
    """Whether a failure says the model cannot be reached, rather than anything about the request."""
    kind = failure.kind
    if kind == "connection" or kind == "grpc_UNAVAILABLE":
        reason = failure.reason.lower()
        # a certificate refused is a setting to fix, not a model to wait for
        return failure.reason != "the transport was stopped" and not any(w in reason for w in TLS_WORDS)
    if kind in GATEWAY_STATUSES:
        body = failure.reason.partition(": ")[2].lstrip()
        return not body.startswith("{")  # a JSON body is the model's (or its server's) own answer
    return False


Probe = Callable[[], Awaitable["str | None"]]


class Outage:
    """The run's view of whether the model can be reached; closed while waiting for it."""

    def __init__(self, config: BatchConfig, clock: Any, stats: BatchStats, on_timeout: Callable[[str], None],
                 probe_once: Probe | None = None) -> None:
        self._clock = clock
        self._stats = stats
        self._timeout = config.outage_timeout
        self._on_timeout = on_timeout
        #: Asks whether the model is ready (:func:`.readiness.probe`; tests give their own).
        self.probe: Probe = probe_once or (lambda: probe(config, clock))
        #: True while sending is paused (attempts wait in :meth:`wait`).
        self.closed = False
        #: When the current run of outage-class failures began (None: the model answers).
        self.since: float | None = None
        self.cause = ""
        self._streak = 0
        self._waiters: list[Deferred[None]] = []
        self._timer: IDelayedCall | None = None
        self._probing = False
        self._ended = False
        #: Pause before the next probe: it keeps growing while one outage lasts, however often the
        #: model says ready and then fails again, so neither probes nor log lines come faster.
        self._pause = FIRST_PAUSE
        #: The outage was logged as "waiting for the model" (once per outage).
        self._announced = False
        #: The probe loop's pause, cancelled when the wait ends some other way.
        self._sleeping: Deferred[None] | None = None

    @property
    def text(self) -> str:
        """``waiting for the model since HH:MM:SS: cause`` while paused, else ``""``."""
        if not self.closed or self.since is None:
            return ""
        return f"waiting for the model since {clock_time(self.since)}: {self.cause}"

    def answered(self) -> None:
        """An attempt got an answer from the model (any answer): the outage, if any, is over."""
        self._streak = 0
        if self.since is not None:
            if self._announced:
                log.info("the model answers again (no answer since {since}: {cause})",
                         since=clock_time(self.since), cause=self.cause)
            self.since, self._announced, self._pause = None, False, FIRST_PAUSE
            self._open()

    def failed(self, failure: RequestFailed) -> None:
        """An attempt failed with an outage-class error (:func:`is_outage`)."""
        self._streak += 1
        self.cause = failure.reason
        if self.since is None:
            self.since = self._clock.seconds()
        if self._streak >= STREAK and not self.closed and not self._ended:
            self._close()

    def wait(self) -> Deferred[None]:
        """Fires when sending may go on; the caller cancels it to give up (the run stopped)."""
        d: Deferred[None] = Deferred(lambda d: self._waiters.remove(d) if d in self._waiters else None)
        if not self.closed:
            d.callback(None)
        else:
            self._waiters.append(d)
        return d

    def end(self) -> None:
        """The run is over: no more probes or timers."""
        self._ended = True
        self.closed = False
        self._stats.waiting = ""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._sleeping is not None:
            self._sleeping.cancel()

    def _close(self) -> None:
        assert self.since is not None
        self.closed = True
        self._stats.waiting = self.text
        if not self._announced:
            self._announced = True
            log.warn("{waiting}; sending paused", waiting=self.text)
        if self._timeout is not None and self._timer is None:
            left = max(self.since + self._timeout - self._clock.seconds(), 0.0)
            self._timer = self._clock.callLater(left, self._expired)
        if not self._probing:
            Deferred.fromCoroutine(self._probe_until_open())

    def _open(self) -> None:
        if self._timer is not None and self._timer.active() and self.since is None:
            self._timer.cancel()
        if self.since is None:
            self._timer = None
        self.closed = False
        self._stats.waiting = ""
        if self._sleeping is not None:
            self._sleeping.cancel()
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            if not d.called:  # an earlier waiter's callbacks may have cancelled it (a stop)
                d.callback(None)

    async def _probe_until_open(self) -> None:
        """Probe with backoff while closed; a ready model reopens (the outage ends at its first answer)."""
        self._probing = True
        try:
            while self.closed and not self._ended:
                self._sleeping = deferLater(self._clock, self._pause)
                try:
                    await self._sleeping
                except CancelledError:  # reopened or ended meanwhile: no timer is left behind
                    return
                finally:
                    self._sleeping = None
                self._pause = min(2 * self._pause, LONGEST_PAUSE)
                if not self.closed or self._ended:
                    return
                try:
                    reason = await self.probe()
                except Exception as e:  # noqa: BLE001 - a probe bug must not end the wait silently
                    reason = f"the readiness probe failed: {type(e).__name__}: {e}"
                if not self.closed or self._ended:
                    return
                if reason is None:
                    log.info("the model is ready again; sending resumes")
                    self._streak = 0
                    self._open()
                    continue  # the waiters it released may have closed it again at once: then this loop goes on
                self.cause = reason
                self._stats.waiting = self.text
        finally:
            self._probing = False

    def _expired(self) -> None:
        self._timer = None
        if self.since is None or self._ended:
            return
        reason = (f"the model could not be reached since {clock_time(self.since)} "
                  f"(--outage-timeout {self._timeout:g} s): {self.cause}")
        log.error("{reason}", reason=reason)
        self.end()
        self._on_timeout(reason)
