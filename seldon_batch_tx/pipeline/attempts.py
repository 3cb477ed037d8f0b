"""One request until it has a final answer: attempts, backoff between them, and the watchdog.

The engine hands :meth:`Attempts.send` one request body and gets back the records of its
lines, the failure to write as their error lines, or ``None`` when the run is stopping and the
lines are left for ``--resume``. Retries follow the transport's verdict
(:attr:`RequestFailed.retryable`) with full-jitter backoff; the watchdog is the engine's own
bound on a request, so a transport that never ends one cannot hold a worker for ever.
"""

from __future__ import annotations

import random
from typing import Any

import txaio
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall, deferLater

from ..config import BatchConfig
from ..protocols.base import BadResponse, Codec, Parsed, ResponseMismatch
from ..transports.base import RequestFailed, Transport
from .stats import BatchStats
from .summary import describe

txaio.use_twisted()
log = txaio.make_logger()

Record = dict[str, Any]

#: Seconds between the watchdog's looks at the requests in flight.
WATCHDOG_INTERVAL = 1.0


def watchdog_seconds(timeout: float) -> float:
    """How long the engine lets one request run before ending it itself: well past the
    transport's own ``--timeout``, so it only ever catches a transport that failed to end one."""
    return 2 * timeout + 10.0


def backoff_delay(attempt: int, retry_after: float | None, *, base: float = 0.1, cap: float = 10.0,
                  rng: random.Random = random._inst) -> float:  # type: ignore[attr-defined]
    """Full-jitter exponential backoff; a server's Retry-After wins when it asks for longer."""
    delay = rng.uniform(0, min(cap, base * (2 ** attempt)))
    if retry_after is not None:
        delay = max(delay, min(retry_after, 60.0))
    return delay


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
                 clock: IReactorTime) -> None:
        self._config = config
        self._codec = codec
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

    def stop(self) -> None:
        """No more retries: a line waiting between attempts stays unwritten for a resume."""
        self.stopping = True
        for d in list(self._pauses):
            d.cancel()

    def abandon(self) -> None:
        """Requests in flight (cancelled by the engine) write nothing; ``--resume`` redoes them."""
        self.abandoned = True

    async def send(self, body: dict[str, Any], members: list[Parsed]) -> list[Record] | RequestFailed | None:
        """The records of ``members``, the final failure, or None when stopped before a final answer.

        A transport that raises anything but :class:`RequestFailed` is a bug: it leaves here and
        the engine turns the unit into ``internal_error`` lines.
        """
        first = members[0].item
        failure: RequestFailed | None = None
        for attempt in range(self._tries):
            if attempt:
                self._stats.retries += 1
                assert failure is not None
                await self._pause(backoff_delay(attempt - 1, failure.retry_after))
                if self.stopping or self.abandoned:
                    return None  # stopping: a resume sends these lines again
            outcome = await self._request(body, first.instance_id, first.index, attempt)
            if isinstance(outcome, RequestFailed):
                failure = outcome
                if self.abandoned:
                    return None
                if not failure.retryable:
                    break
                if self.stopping:
                    return None  # leave the lines for a resume rather than record a transient error
                continue
            answer = read_answer(self._codec, outcome, members)
            if isinstance(answer, RequestFailed):
                failure = answer
                break
            return answer
        assert failure is not None
        if attempt > 0 and failure.retryable and not self.stopping:
            return RequestFailed(failure.kind, f"{failure.reason} (after {attempt + 1} attempts)",
                                 code=failure.code, retryable=True, info=failure.info)
        return failure

    async def _request(self, body: dict[str, Any], puid: str, index: int, attempt: int) -> Any:
        """One attempt: the transport's answer, or the :class:`RequestFailed` that ended it.

        A cancel passes through (``abandon``) unless the watchdog made it: that is a timeout.
        """
        clock = self._clock
        sent = clock.seconds()
        d = self._transport.send(body, puid)
        self._deadlines[d] = sent + self._watchdog_after
        try:
            response = await d
        except CancelledError:
            if self.abandoned or d not in self._expired:
                raise  # abandon(): this unit writes nothing
            return RequestFailed(
                "timeout", f"no answer after {self._watchdog_after:g} s: the engine's watchdog ended a request "
                f"its transport had not ended at --timeout {self._config.timeout:g} s", retryable=True,
                info="timeout")
        except RequestFailed as e:
            self._stats.observe_latency(clock.seconds() - sent)
            if not self.abandoned:
                log.debug("attempt {attempt} for line {index} failed: {reason}", attempt=attempt + 1,
                          index=index, reason=e.reason)
            return e
        finally:
            del self._deadlines[d]
            if self._expired:
                self._expired.discard(d)
        self._stats.observe_latency(clock.seconds() - sent)
        return response

    def _sweep(self) -> None:
        """The engine's own bound on a request: one the transport has not ended well past
        ``--timeout`` is cancelled, so a transport bug can never hold a worker (and the run) for ever."""
        if not self._deadlines:
            return
        now = self._clock.seconds()
        for d, deadline in list(self._deadlines.items()):
            if now >= deadline and not d.called:
                self._expired.add(d)
                d.cancel()  # fires d: with CancelledError if the transport's canceller does not

    async def _pause(self, seconds: float) -> None:
        """Backoff between attempts; cut short by :meth:`stop`."""
        d: Deferred[None] = deferLater(self._clock, seconds)
        self._pauses.add(d)
        try:
            await d
        except CancelledError:
            if self.abandoned:
                raise
        finally:
            self._pauses.discard(d)
