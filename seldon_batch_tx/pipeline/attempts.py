"""One request until it has a final answer: attempts, backoff between them, and the watchdog.

The engine hands :meth:`Attempts.send` one request body and gets back the records of its
lines, the failure to write as their error lines, or ``None`` when the run is stopping and the
lines are left for ``--resume``. Retries follow the transport's verdict
(:attr:`RequestFailed.retryable`) with full-jitter backoff; the watchdog is the engine's own
bound on a request, so a transport that never ends one cannot hold a worker for ever.
Each attempt passes :class:`.Pacing` first (``--max-rate``, ``--adaptive``) and reports back how
it ended; under ``--adaptive`` the server shedding load is not the request's fault, so such an
attempt does not count against ``--retries`` (up to :data:`OVERLOAD_SPARE` of them per request).
"""

from __future__ import annotations

import random
from typing import Any

import txaio
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from ..config import BatchConfig
from ..core.failures import RequestFailed
from ..protocols.base import BadResponse, Codec, Parsed, ResponseMismatch
from ..redaction import Secrets
from ..transports.base import Transport
from .emitter import Record
from .outage import SPARE, Outage, is_outage
from .pacing import Pacing, Permit, outcome_of
from .stats import BatchStats
from .summary import describe

txaio.use_twisted()
log = txaio.make_logger()


#: Seconds between the watchdog's looks at the requests in flight.
WATCHDOG_INTERVAL = 1.0
#: Overload answers per request that, under ``--adaptive``, do not count against ``--retries``:
#: enough to ride out the limit settling, bounded so a model that always refuses still ends.
OVERLOAD_SPARE = 20
#: Longest ``Retry-After`` honoured before a retry (one that spends ``--retries``). A server asking for
#: longer is not shedding load for a moment: its refusal is never an ``--adaptive`` spare try.
MAX_RETRY_AFTER = 60.0
#: Longest ``Retry-After`` honoured before an ``--adaptive`` spare try (the limiter backs off already):
#: with ``-r 0`` a line waits at most OVERLOAD_SPARE x 10 s between its tries.
SPARE_RETRY_AFTER = 10.0


def watchdog_seconds(timeout: float) -> float:
    """How long the engine lets one request run before ending it itself: well past the
    transport's own ``--timeout``, so it only ever catches a transport that failed to end one."""
    return 2 * timeout + 10.0


def backoff_delay(attempt: int, retry_after: float | None, *, base: float = 0.1, cap: float = 10.0,
                  rng: random.Random = random._inst,  # type: ignore[attr-defined]
                  most: float = MAX_RETRY_AFTER) -> float:
    """Full-jitter exponential backoff; a server's Retry-After wins when it asks for longer (up to ``most``)."""
    delay = rng.uniform(0, min(cap, base * (2 ** attempt)))
    if retry_after is not None:
        delay = max(delay, min(retry_after, most))
    return delay


def is_spare(failure: RequestFailed) -> bool:
    """Whether an overload refusal may use an ``--adaptive`` spare try: not when it asks for a long wait."""
    return outcome_of(failure) == "overload" and (failure.retry_after or 0.0) <= MAX_RETRY_AFTER


def cancel(d: Deferred[Any]) -> None:
    """Cancel a request or a unit; a canceller that raises (a transport bug) still ends it with
    ``CancelledError``, so neither the watchdog nor ``abandon`` can be stopped by one."""
    try:
        d.cancel()
    except Exception:  # noqa: BLE001 - logged; the Deferred is ended here instead
        log.failure("a canceller failed", level=LogLevel.error)
        if not d.called:
            d.errback(CancelledError())


def read_answer(codec: Codec, response: Any, members: list[Parsed]) -> list[Record] | RequestFailed:
    """The records of an answer, or why it is unusable: an answer's fault is never retried."""
    try:
        return codec.results(response, members)
    except ResponseMismatch as e:
        return RequestFailed("response_mismatch", str(e), info="response_mismatch")
    except BadResponse as e:
        return RequestFailed("bad_response", str(e), info="bad_response")
    except Exception as e:  # noqa: BLE001 - an answer the codec could not read is the answer's fault
        return RequestFailed("bad_response", f"the answer could not be read: {describe(e)}", info="bad_response")


class Attempts:
    """Sends requests for one run: retries, backoff and the watchdog, cut short by a stop."""

    def __init__(self, config: BatchConfig, codec: Codec, transport: Transport, stats: BatchStats,
                 clock: IReactorTime, pacing: Pacing | None = None, outage: Outage | None = None) -> None:
        self._config = config
        #: The run's outage state (None: failures are retried as they come, as before).
        self._outage = outage
        self._pacing = pacing
        #: Overload attempts per request not counted against --retries (only with --adaptive).
        self._spare = OVERLOAD_SPARE if pacing is not None and pacing.concurrency is not None else 0
        self._codec = codec
        #: Credentials a server may quote back: redacted from every failure reason (logs, outputs).
        self._secrets = Secrets.of(config)
        self._transport = transport
        self._stats = stats
        self._clock = clock
        self._tries = 1 + max(config.retries, 0)
        #: Requests in flight and when the watchdog gives up on each (see :meth:`_sweep`).
        self._deadlines: dict[Deferred[Any], float] = {}
        self._expired: set[Deferred[Any]] = set()
        self._watchdog_after = watchdog_seconds(config.timeout)
        self._watchdog = LoopingCall(self._sweep)
        self._watchdog.clock = clock
        self._pauses: set[Deferred[None]] = set()
        #: Set by :meth:`stop`: no more attempts; a line between attempts stays for a resume.
        self.stopping = False
        #: Set by :meth:`abandon`: requests in flight write nothing.
        self.abandoned = False

    def start(self) -> None:
        self._watchdog.start(WATCHDOG_INTERVAL, now=False)

    def close(self) -> None:
        if self._watchdog.running:
            self._watchdog.stop()
        if self._pacing is not None:
            self._pacing.stop()  # no timer of the rate limiter outlives the run

    def stop(self) -> None:
        """No more retries: a line waiting between attempts (or for admission) stays for a resume."""
        self.stopping = True
        if self._pacing is not None:
            self._pacing.stop()
        for d in list(self._pauses):
            d.cancel()

    def abandon(self) -> None:
        """Requests in flight (cancelled by the engine) write nothing; ``--resume`` redoes them."""
        self.abandoned = True
        if self._pacing is not None:
            self._pacing.stop()

    def send(self, body: dict[str, Any], members: list[Parsed]) -> Deferred[list[Record] | RequestFailed | None]:
        """The records of ``members``, the final failure, or None when stopped before a final answer.

        A transport that raises anything but :class:`RequestFailed` is a bug: it leaves here and
        the engine turns the unit into ``internal_error`` lines. The common case (no pacing, the
        model up, answered at the first attempt) is plain callbacks; anything else goes on in
        :meth:`_retry`.
        """
        outage = self._outage
        if self._pacing is not None or outage is not None and outage.closed:
            return Deferred.fromCoroutine(self._retry(body, members, None))
        first = members[0].item
        return self._request(body, first.instance_id, first.index, 0, None, members)

    def _first_ended(self, outcome: Any, body: dict[str, Any],
                     members: list[Parsed]) -> list[Record] | RequestFailed | Deferred[Any]:
        """The first attempt ended: an answer is read here; a failure goes on to the retries."""
        if isinstance(outcome, RequestFailed):
            return Deferred.fromCoroutine(self._retry(body, members, outcome))
        return self._read(outcome, members)

    def _read(self, response: Any, members: list[Parsed]) -> list[Record] | RequestFailed:
        """An answer came: the model is up (an outage ends), and its records are read."""
        outage = self._outage
        if outage is not None and outage.since is not None:
            outage.answered()
        return read_answer(self._codec, response, members)

    async def _retry(self, body: dict[str, Any], members: list[Parsed],
                     first: RequestFailed | None) -> list[Record] | RequestFailed | None:
        """:meth:`send`'s attempts, from the first (``first``: how it ended, when already made)."""
        item = members[0].item
        failure: RequestFailed | None = None
        budget, spare, outage_spare = self._tries, self._spare, SPARE
        spent_spare = False
        outage = self._outage
        attempt = -1
        while True:  # each pass spends one of budget, spare or outage_spare, or waited out an outage
            attempt += 1
            if attempt:
                self._stats.retries += 1
                assert failure is not None
                if outage is None or not outage.closed:
                    await self._pause(backoff_delay(attempt - 1, failure.retry_after,
                                                    most=SPARE_RETRY_AFTER if spent_spare else MAX_RETRY_AFTER))
                if self.stopping or self.abandoned:
                    return None  # stopping: a resume sends these lines again
            if first is not None:
                outcome, first = first, None
            else:
                if outage is not None and outage.closed and not await self._wait_outage(outage):
                    return None  # stopped while waiting for the model: the lines stay for a resume
                admitted, permit = (True, None) if self._pacing is None else await self._admit()
                if not admitted:
                    return None  # stopped while waiting for admission: the lines stay for a resume
                outcome = await self._request(body, item.instance_id, item.index, attempt, permit)
            if isinstance(outcome, RequestFailed):
                failure = outcome
                if self.abandoned:
                    return None
                if outage is not None and is_outage(failure):
                    outage.failed(failure)
                    spent_spare = False
                    if outage.closed or self.stopping:
                        continue  # not this line's fault: it waits for the model, its budget kept
                    if outage_spare:
                        outage_spare -= 1
                        continue
                elif outage is not None and outage.since is not None and failure.code is not None:
                    outage.answered()  # an HTTP or gRPC status: something answered
                if not failure.retryable or failure.split_first and len(members) > 1:
                    break  # final, or about these lines: the engine splits them (one line alone is retried)
                if self.stopping:
                    return None  # leave the lines for a resume rather than record a transient error
                spent_spare = bool(spare) and is_spare(failure)
                if spent_spare:
                    spare -= 1  # --adaptive: the server shedding load is not this request's fault
                else:
                    budget -= 1
                if budget == 0:
                    break
                continue
            answer = self._read(outcome, members)
            if isinstance(answer, RequestFailed):
                failure = answer
                break
            return answer
        assert failure is not None
        if failure.retryable and (failure.retry_after or 0.0) > MAX_RETRY_AFTER:
            failure = RequestFailed(failure.kind, f"{failure.reason} (it asked to retry after "
                                    f"{failure.retry_after:g} s; at most {MAX_RETRY_AFTER:g} s is waited)",
                                    code=failure.code, retryable=True, info=failure.info,
                                    split_first=failure.split_first)
        if attempt > 0 and failure.retryable and not self.stopping:
            return RequestFailed(failure.kind, f"{failure.reason} (after {attempt + 1} attempts)",
                                 code=failure.code, retryable=True, info=failure.info,
                                 split_first=failure.split_first)  # the engine may still split these lines
        return failure

    async def _wait_outage(self, outage: Outage) -> bool:
        """Wait until the model may be sent to again; False when the run stopped first."""
        return await self._wait(outage.wait()) and not (self.stopping or self.abandoned)

    async def _admit(self) -> tuple[bool, Permit | None]:
        """Wait for the pacing's admission: ``(False, None)`` when the run stopped first."""
        assert self._pacing is not None  # without pacing, send() admits every attempt itself
        try:
            return True, await self._pacing.admit()
        except CancelledError:
            if self.abandoned:
                raise  # abandon(): this unit writes nothing
            return False, None

    def _request(self, body: dict[str, Any], puid: str, index: int, attempt: int,
                 permit: Permit | None, first: list[Parsed] | None = None) -> Deferred[Any]:
        """One attempt: fires with the transport's answer or the :class:`RequestFailed` that ended it;
        for the ``first`` attempt of :meth:`send` (its lines given), with :meth:`_first_ended`'s outcome.

        A cancel passes through (``abandon``) unless the watchdog made it: that is a timeout.
        How the attempt ended is reported once, to the pacing and the load counters.
        """
        sent = self._clock.seconds()
        self._stats.in_flight += 1
        try:
            d = self._transport.send(body, puid)
            if not isinstance(d, Deferred):  # a coroutine is awaited; anything else raises TypeError here
                d = ensureDeferred(d)
        except BaseException as e:  # noqa: BLE001 - a transport bug, or its RequestFailed raised: fired below
            d = fail(e)
        self._deadlines[d] = sent + self._watchdog_after
        return d.addCallbacks(self._succeeded, self._failed, callbackArgs=(d, sent, permit, body, first),
                              errbackArgs=(d, sent, permit, index, attempt, body, first))

    def _succeeded(self, answer: Any, d: Deferred[Any], sent: float, permit: Permit | None, body: dict[str, Any],
                   first: list[Parsed] | None) -> Any:
        self._ended(d, sent, permit, None)
        return answer if first is None else self._first_ended(answer, body, first)

    def _failed(self, failure: Failure, d: Deferred[Any], sent: float, permit: Permit | None, index: int,
                attempt: int, body: dict[str, Any], first: list[Parsed] | None) -> Any:
        error = failure.value
        if isinstance(error, CancelledError) and not self.abandoned and d in self._expired:
            error = RequestFailed(
                "timeout", f"no answer after {self._watchdog_after:g} s: the engine's watchdog ended a request "
                f"its transport had not ended at --timeout {self._config.timeout:g} s", retryable=True,
                info="timeout")
        elif isinstance(error, RequestFailed):
            if self._secrets:
                error.reason = self._secrets.text(error.reason)
                error.args = (error.reason,)
            if not self.abandoned:
                log.debug("attempt {attempt} for line {index} failed: {reason}", attempt=attempt + 1,
                          index=index, reason=error.reason)
        else:
            self._ended(d, sent, permit, error)  # a cancel by abandon(), or a transport bug: it passes on
            return failure
        self._ended(d, sent, permit, error)
        return error if first is None else self._first_ended(error, body, first)

    def _ended(self, d: Deferred[Any] | None, sent: float, permit: Permit | None,
               error: BaseException | None) -> None:
        """An attempt ended: forget its deadline, count its latency and outcome, release its permit."""
        stats = self._stats
        stats.in_flight -= 1
        if d is not None:
            self._deadlines.pop(d, None)
            self._expired.discard(d)
        outcome = outcome_of(error)
        if outcome != "cancelled":
            stats.observe_latency(self._clock.seconds() - sent)
            stats.observe_outcome(outcome == "overload")
        if self._pacing is not None:
            self._pacing.done(permit, error)

    def _sweep(self) -> None:
        """The engine's own bound on a request: one the transport has not ended well past
        ``--timeout`` is cancelled, so a transport bug can never hold a worker (and the run) for ever."""
        if not self._deadlines:
            return
        now = self._clock.seconds()
        for d, deadline in list(self._deadlines.items()):
            if now >= deadline and d not in self._expired:  # fired but waiting on another Deferred counts
                self._expired.add(d)
                cancel(d)  # fires d (or the Deferred it waits on): with CancelledError if no canceller does

    async def _pause(self, seconds: float) -> None:
        """Backoff between attempts; cut short by :meth:`stop`."""
        await self._wait(deferLater(self._clock, seconds))

    async def _wait(self, d: Deferred[Any]) -> bool:
        """Wait for ``d``, which :meth:`stop` cancels: True once it fired, False when a stop came
        first; :meth:`abandon`'s cancel passes through (this unit writes nothing)."""
        self._pauses.add(d)
        try:
            await d
        except CancelledError:
            if self.abandoned:
                raise
            return False
        finally:
            self._pauses.discard(d)
        return True
