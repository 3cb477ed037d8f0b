"""The batch engine: read -> build request -> send (with retries) -> write one line per input line.

A single loop reads the input lazily and takes a token from a ``DeferredSemaphore`` sized to
``--workers`` before each request, so at most that many requests are in flight and reading waits
whenever they are all busy: memory stays flat however long the input is. Every unit of work
catches its own failures and writes them as error lines; nothing escapes to end the run.
"""

from __future__ import annotations

import gc
import random
from collections.abc import Iterator
from typing import Any

import attrs
import txaio
from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from .config import BatchConfig
from .ordering import ReorderBuffer
from .payloads import InputError, Parsed, ResponseMismatch
from .payloads_v2 import make_codec
from .reader import Item, chunked
from .stats import BatchStats
from .transport import RequestFailed, Transport
from .writer import LineWriter

txaio.use_twisted()
log = txaio.make_logger()

#: Exit statuses, documented in the README.
EXIT_OK, EXIT_FAILED_LINES, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 3

Record = dict[str, Any]


#: Allocations between young-generation collections (CPython's default is 700).
GC_GEN0_THRESHOLD = 10_000


def tune_gc() -> None:
    """Collect the young generation less often, for the whole process.

    With hundreds of requests in flight the default threshold (700) runs a young collection
    every ~70 requests, each traversing everything those requests hold, and finding nothing
    (their objects are freed by reference counting): at 1,000 workers that was ~20% of the CPU.
    Memory stays flat: cyclic garbage waits for at most 10,000 allocations.
    """
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def reorder_window(workers: int) -> int:
    """Work units (requests) ``--ordered`` may hold back: enough to keep every worker busy."""
    return max(2 * workers, 16)


def backoff_delay(attempt: int, retry_after: float | None, *, base: float = 0.1, cap: float = 10.0,
                  rng: random.Random = random._inst) -> float:  # type: ignore[attr-defined]
    """Full-jitter exponential backoff; a server's Retry-After wins when it asks for longer."""
    delay = rng.uniform(0, min(cap, base * (2 ** attempt)))
    if retry_after is not None:
        delay = max(delay, min(retry_after, 60.0))
    return delay


@attrs.frozen
class Summary:
    """What a finished run reports and how the process should exit."""

    lines: int
    succeeded: int
    failed: int
    retried: int
    not_processed: int
    elapsed: float
    stopped_early: str | None
    #: Lines already in the output when a resumed run started (counted in succeeded/failed).
    resumed: int = 0

    @property
    def rate(self) -> float:
        return (self.succeeded + self.failed - self.resumed) / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.stopped_early:
            return EXIT_STOPPED
        return EXIT_FAILED_LINES if self.failed else EXIT_OK

    def text(self) -> str:
        stopped = f", stopped early: {self.stopped_early}" if self.stopped_early else ""
        resumed = f" ({self.resumed} from an earlier run)" if self.resumed else ""
        return (f"{self.lines} lines{resumed}: {self.succeeded} succeeded, {self.failed} failed, "
                f"{self.retried} retries, {self.not_processed} not processed{stopped}; "
                f"{self.elapsed:.2f} s, {self.rate:.1f} lines/s")


class BatchRun:
    """One pass over an input stream with a transport and a writer it does not own."""

    def __init__(self, config: BatchConfig, items: Iterator[Item], transport: Transport,
                 writer: LineWriter, stats: BatchStats, clock: IReactorTime) -> None:
        self.config = config
        self.codec = make_codec(config)
        self._items = items
        self._transport = transport
        self._writer = writer
        self.stats = stats
        self._clock = clock
        self._semaphore = DeferredSemaphore(config.workers)
        self._in_flight: set[Deferred[None]] = set()
        self._stop_reason: str | None = None
        self._abandoned = False
        self._attempts = 1 + max(config.retries, 0)
        self._pauses: set[Deferred[None]] = set()
        #: ``--ordered``: finished units wait here for earlier ones; None writes in completion order.
        self._reorder = ReorderBuffer(reorder_window(config.workers), writer.write) if config.ordered else None

    # -- control --------------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        """Take no new work; requests in flight still finish and are written."""
        if self._stop_reason is None:
            self._stop_reason = reason
            log.info("stopping batch {batch_id}: {reason}", batch_id=self.config.batch_id, reason=reason)
            for d in list(self._pauses):
                d.cancel()  # no more retries: a line between attempts stays unwritten for a resume
            if self._reorder is not None:
                self._reorder.release()

    def abandon(self) -> None:
        """Give up on requests still in flight: they write nothing and a resume redoes them."""
        self._abandoned = True
        for d in list(self._in_flight):
            d.cancel()

    async def run(self) -> Summary:
        stats = self.stats
        stats.state = "running"
        stats.started = self._clock.seconds()
        try:
            for seq, chunk in enumerate(chunked(self._items, self.codec.batch_size)):
                if self._stop_reason is not None:
                    break
                if self._reorder is not None:
                    await self._reorder.room(seq)  # --ordered: reading waits while earlier lines are pending
                await self._semaphore.acquire()
                if self._stop_reason is not None:
                    self._semaphore.release()
                    break
                d = Deferred.fromCoroutine(self._work(seq, chunk))
                self._in_flight.add(d)
                d.addBoth(self._finished, d)
            await self._drain()
        finally:
            stats.finished = self._clock.seconds()
            self._writer.flush(stats.finished)
        stats.state = "stopped" if self._stop_reason else "done"
        stats.sample(stats.finished)
        done = stats.done
        return Summary(
            lines=stats.total if stats.total is not None else done,
            succeeded=stats.succeeded, failed=stats.failed, retried=stats.retries,
            not_processed=max((stats.total or done) - done, 0),
            elapsed=stats.elapsed(stats.finished), stopped_early=self._stop_reason,
            resumed=stats.resumed,
        )

    def _finished(self, result: Failure | None, d: Deferred[None]) -> None:
        self._in_flight.discard(d)
        self._semaphore.release()
        if isinstance(result, Failure) and not result.check(CancelledError):
            log.failure("unexpected error in a worker", failure=result)

    async def _drain(self) -> None:
        for _ in range(self.config.workers):
            await self._semaphore.acquire()
        for _ in range(self.config.workers):
            self._semaphore.release()

    # -- one unit of work -----------------------------------------------------------------

    async def _work(self, seq: int, chunk: list[Item]) -> None:
        """Unit ``seq`` of the run: its lines' output, written in input order."""
        started = self._clock.seconds()
        out: dict[int, Record] = {}
        parsed: list[Parsed] = []
        for item in chunk:
            try:
                parsed.append(self.codec.parse(item))
            except InputError as e:
                out[item.index] = self._fail(item, str(e), "input_error")
        if parsed:
            body, members, rejected = self.codec.build(parsed)
            for p, reason in rejected:
                out[p.item.index] = self._fail(p.item, reason, "input_error", own_tags=p.own_tags)
            sent = await self._send(body, members)  # empty when stopping before a final answer
            for p, line in zip(members, sent, strict=False):
                out[p.item.index] = line
        lines = [out[item.index] for item in chunk if item.index in out]
        if self._reorder is not None:
            self._reorder.put(seq, lines)
        else:
            for line in lines:
                self._writer.write(line)
        interval = self.config.batch_interval
        if interval > 0 and self._stop_reason is None:
            wait = interval - (self._clock.seconds() - started)
            if wait > 0:
                await deferLater(self._clock, wait)

    async def _send(self, body: dict[str, Any], members: list[Parsed]) -> list[Record]:
        """One output line per member; none when stopped or abandoned before a final answer."""
        puid = members[0].item.instance_id
        clock, stats = self._clock, self.stats
        failure: RequestFailed | None = None
        for attempt in range(self._attempts):
            if attempt:
                stats.retries += 1
                assert failure is not None
                await self._pause(backoff_delay(attempt - 1, failure.retry_after))
                if self._stop_reason is not None or self._abandoned:
                    return []  # stopping: a resume sends these lines again
            sent = clock.seconds()
            try:
                response = await self._transport.send(body, puid)
            except RequestFailed as e:
                stats.observe_latency(clock.seconds() - sent)
                if self._abandoned:
                    return []
                failure = e
                log.debug("attempt {attempt} for line {index} failed: {reason}", attempt=attempt + 1,
                          index=members[0].item.index, reason=e.reason)
                if not e.retryable:
                    break
                if self._stop_reason is not None:
                    return []  # stopping: leave the lines for a resume rather than record a transient error
                continue
            except CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - a transport bug must still end as error lines
                failure = RequestFailed("internal_error", f"{type(e).__name__}: {e}", info="internal_error")
                break
            stats.observe_latency(clock.seconds() - sent)
            try:
                lines = self.codec.results(response, members)
            except ResponseMismatch as e:
                failure = RequestFailed("response_mismatch", str(e), info="response_mismatch")
                break
            stats.succeeded += len(lines)
            return lines
        assert failure is not None
        if attempt + 1 > 1 and failure.retryable and self._stop_reason is None:
            reason = f"{failure.reason} (after {attempt + 1} attempts)"
        else:
            reason = failure.reason
        return [self._fail(p.item, reason, failure.kind, code=failure.code, own_tags=p.own_tags)
                for p in members]

    async def _pause(self, seconds: float) -> None:
        """Backoff between attempts; cut short by :meth:`stop`."""
        d: Deferred[None] = deferLater(self._clock, seconds)
        self._pauses.add(d)
        try:
            await d
        except CancelledError:
            if self._abandoned:
                raise
        finally:
            self._pauses.discard(d)

    def _fail(self, item: Item, reason: str, kind: str, *, code: int | None = None,
              own_tags: dict[str, Any] | None = None) -> Record:
        """The error line for ``item``, counted."""
        record = self.codec.error(item, reason, info=kind, code=code, own_tags=own_tags)
        self.stats.record_error(kind, item.index, reason)
        limit = self.config.max_failures
        if limit is not None and self.stats.failed >= limit:
            self.stop(f"{self.stats.failed} lines failed (--max-failures {limit})")
        return record
