"""The batch engine: read -> build request -> send (with retries) -> write one line per input line.

A single loop reads the input lazily and takes a token from a ``DeferredSemaphore`` sized to
``--workers`` before each request, so at most that many requests are in flight and reading waits
whenever they are all busy: memory stays flat however long the input is. Every unit of work
catches its own failures and writes them as error lines; nothing escapes to end the run.
"""

from __future__ import annotations

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
from .payloads import InputError, Parsed, ResponseMismatch, SeldonCodec
from .reader import Item, chunked
from .stats import BatchStats
from .transport import RequestFailed, Transport
from .writer import LineWriter

txaio.use_twisted()
log = txaio.make_logger()

#: Exit statuses, documented in the README.
EXIT_OK, EXIT_FAILED_LINES, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 3


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

    @property
    def rate(self) -> float:
        return (self.succeeded + self.failed) / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.stopped_early:
            return EXIT_STOPPED
        return EXIT_FAILED_LINES if self.failed else EXIT_OK

    def text(self) -> str:
        stopped = f", stopped early: {self.stopped_early}" if self.stopped_early else ""
        return (f"{self.lines} lines: {self.succeeded} succeeded, {self.failed} failed, "
                f"{self.retried} retries, {self.not_processed} not processed{stopped}; "
                f"{self.elapsed:.2f} s, {self.rate:.1f} lines/s")


class BatchRun:
    """One pass over an input stream with a transport and a writer it does not own."""

    def __init__(self, config: BatchConfig, items: Iterator[Item], transport: Transport,
                 writer: LineWriter, stats: BatchStats, clock: IReactorTime) -> None:
        self.config = config
        self.codec = SeldonCodec(config)
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

    # -- control --------------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        """Take no new work; requests in flight still finish and are written."""
        if self._stop_reason is None:
            self._stop_reason = reason
            log.info("stopping batch {batch_id}: {reason}", batch_id=self.config.batch_id, reason=reason)

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
            for chunk in chunked(self._items, self.codec.batch_size):
                if self._stop_reason is not None:
                    break
                await self._semaphore.acquire()
                if self._stop_reason is not None:
                    self._semaphore.release()
                    break
                d = Deferred.fromCoroutine(self._work(chunk))
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

    async def _work(self, chunk: list[Item]) -> None:
        started = self._clock.seconds()
        parsed: list[Parsed] = []
        for item in chunk:
            try:
                parsed.append(self.codec.parse(item))
            except InputError as e:
                self._fail(item, str(e), "input_error")
        if parsed:
            body, members, rejected = self.codec.build(parsed)
            for p, reason in rejected:
                self._fail(p.item, reason, "input_error", own_tags=p.own_tags)
            await self._send(body, members)
        interval = self.config.batch_interval
        if interval > 0 and self._stop_reason is None:
            wait = interval - (self._clock.seconds() - started)
            if wait > 0:
                await deferLater(self._clock, wait)

    async def _send(self, body: dict[str, Any], members: list[Parsed]) -> None:
        puid = members[0].item.instance_id
        clock, stats = self._clock, self.stats
        failure: RequestFailed | None = None
        for attempt in range(self._attempts):
            if attempt:
                stats.retries += 1
                assert failure is not None
                await deferLater(clock, backoff_delay(attempt - 1, failure.retry_after))
            sent = clock.seconds()
            try:
                response = await self._transport.send(body, puid)
            except RequestFailed as e:
                stats.observe_latency(clock.seconds() - sent)
                if self._abandoned:
                    return
                failure = e
                log.debug("attempt {attempt} for line {index} failed: {reason}", attempt=attempt + 1,
                          index=members[0].item.index, reason=e.reason)
                if not e.retryable or self._stop_reason is not None:
                    break
                continue
            stats.observe_latency(clock.seconds() - sent)
            try:
                lines = self.codec.results(response, members)
            except ResponseMismatch as e:
                failure = RequestFailed("response_mismatch", str(e), info="response_mismatch")
                break
            for line in lines:
                self._writer.write(line)
            stats.succeeded += len(lines)
            return
        assert failure is not None
        if attempt + 1 > 1 and failure.retryable and self._stop_reason is None:
            reason = f"{failure.reason} (after {attempt + 1} attempts)"
        else:
            reason = failure.reason
        for p in members:
            self._fail(p.item, reason, failure.kind, code=failure.code, own_tags=p.own_tags)

    def _fail(self, item: Item, reason: str, kind: str, *, code: int | None = None,
              own_tags: dict[str, Any] | None = None) -> None:
        self._writer.write(self.codec.error(item, reason, info=kind, code=code, own_tags=own_tags))
        self.stats.record_error(kind, item.index, reason)
        limit = self.config.max_failures
        if limit is not None and self.stats.failed >= limit:
            self.stop(f"{self.stats.failed} lines failed (--max-failures {limit})")
