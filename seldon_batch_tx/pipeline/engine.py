"""The batch engine: read -> build request -> send (with retries) -> write one line per input line.

:mod:`.feed` reads the input lazily and starts each unit of work (``--batch-size`` lines) once a
token of a ``DeferredSemaphore`` sized to ``--workers`` is free, so at most that many requests
are in flight and reading waits whenever they are all busy: memory stays flat however long the
input is.

The promise is one output line per input line, kept by structure rather than by a list of
catches: each unit of work (one request's lines) runs inside one guard, and whatever escapes it
(a codec, the transport, a bug) becomes an ``internal_error`` line for every line of the unit
that has none yet. Lines are written and counted in one place (:class:`.emitter.Emitter`), which
never raises: a record that cannot be encoded is replaced by an error line, and an output that
cannot be written stops the run (exit 3) instead of losing lines silently. Only
:meth:`BatchRun.abandon` leaves lines without output, on purpose, for ``--resume``.

Sending one request until its final answer (retries, backoff, the watchdog) is
:mod:`.attempts` (admitted by :mod:`.pacing` under ``--max-rate``/``--adaptive``); what the run
reports is :mod:`.summary`. The engine also takes the batch's rate
samples (every second), the only sampler of :class:`.BatchStats`.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import txaio
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from ..config import BatchConfig
from ..core.failures import RequestFailed
from ..core.items import Item
from ..outputs.writer import LineWriter
from ..protocols.base import InputError, Parsed
from ..protocols.choose import make_codec
from ..transports.base import Transport
from .attempts import Attempts
from .emitter import Emitter, Line, Record
from .feed import Feed
from .ordering import ReorderBuffer
from .outage import Outage
from .pacing import Pacing
from .reader import OffThreadItems
from .splitting import carry_on, splittable
from .stats import BatchStats
from .summary import Summary, describe

txaio.use_twisted()
log = txaio.make_logger()

#: Internal-error tracebacks logged per run: enough to debug, not a log that grows with the input.
MAX_TRACEBACKS = 5
#: Seconds between the rate samples taken while a run goes (the one sampler of its stats).
SAMPLE_INTERVAL = 1.0


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


class BatchRun:
    """One pass over an input stream with a transport and a writer it does not own."""

    def __init__(self, config: BatchConfig, items: Iterator[Item] | OffThreadItems, transport: Transport,
                 writer: LineWriter, stats: BatchStats, clock: IReactorTime) -> None:
        self.config = config
        self.codec = make_codec(config)
        self._transport = transport
        self._writer = writer
        self.stats = stats
        self._clock = clock
        #: --batch-interval pauses, ended at once by a stop (a stopping file never waits them out).
        self._pauses: dict[Deferred[None], Any] = {}
        self._stop_reason: str | None = None
        #: --max-rate / --adaptive for this run (per daemon batch); None costs nothing.
        self.pacing = Pacing.from_config(config, clock)
        stats.pacing = self.pacing  # the dashboard and /metrics read the limits through the stats
        #: Each request until its final answer: pacing, retries, backoff, the watchdog.
        #: Waiting through outages of the model (``--outage-timeout``; None with 0: no pausing).
        self.outage = self._outage_watch()
        self._attempts = Attempts(config, self.codec, transport, stats, clock, self.pacing, self.outage)
        #: Every output line is written and counted there (an unwritable output stops the run).
        self._lines = Emitter(config, self.codec, writer, stats, self.stop)
        #: Internal errors whose traceback is still logged; the others are error lines only.
        self._tracebacks_left = MAX_TRACEBACKS
        #: ``--ordered``: finished units wait here for earlier ones; None writes in completion order.
        self._reorder: ReorderBuffer[Line] | None = (
            ReorderBuffer(reorder_window(config.workers), self._lines.emit) if config.ordered else None)
        #: The input's units to the workers, each started by :meth:`_work`.
        self._feed = Feed(items, self.codec.batch_size, config, self._reorder, self._work, self._worker_failed)

    # -- control --------------------------------------------------------------------------

    def _outage_watch(self) -> Outage | None:
        """The run's outage state; after ``--outage-timeout`` it stops the run (exit 3)."""
        if self.config.outage_timeout == 0:
            return None
        return Outage(self.config, self._clock, self.stats, self.stop)

    @property
    def stop_reason(self) -> str | None:
        """Why the run stopped taking lines (``None`` while it has not)."""
        return self._stop_reason

    @property
    def output_error(self) -> OSError | None:
        """The error that made the output unwritable (the run then stopped), else ``None``: the
        caller's own close of the writer will meet it again and should only log it."""
        return self._lines.write_error

    def output_failed(self, error: OSError) -> None:
        """The output cannot take more lines (the caller's final flush or close): stop the run (exit 3)."""
        self._lines.output_failed(error)

    def stop(self, reason: str) -> None:
        """Take no new work; requests in flight still finish and are written."""
        if self._stop_reason is None:
            self._stop_reason = reason
            log.info("stopping batch {batch_id}: {reason}", batch_id=self.config.batch_id, reason=reason)
            self._feed.stop()
            self._attempts.stop()  # no more retries: a line between attempts stays unwritten for a resume
            for pause in list(self._pauses):
                self._end_pause(pause)

    def abandon(self) -> None:
        """Give up on requests still in flight: they write nothing and a resume redoes them."""
        self._attempts.abandon()
        self._feed.cancel()

    async def run(self) -> Summary:
        stats = self.stats
        stats.begin(self._clock.seconds())
        sampler = LoopingCall(lambda: stats.sample(self._clock.seconds()))
        sampler.clock = self._clock
        sampler.start(SAMPLE_INTERVAL, now=True)
        self._attempts.start()
        try:
            try:
                await self._feed.run()
            except Exception as e:  # noqa: BLE001 - reading failed (EIO, a bug): stop, never end silently
                log.failure("batch {batch_id}: reading the input failed", batch_id=self.config.batch_id,
                            level=LogLevel.error)
                self.stop(f"cannot read the input: {describe(e)}")
            await self._feed.drain()
        finally:
            self._attempts.close()
            if self.outage is not None:
                self.outage.end()
            sampler.stop()
            stats.finished = self._clock.seconds()
            if self._lines.write_error is None:
                try:
                    self._writer.flush(stats.finished)
                except OSError as e:
                    self._lines.output_failed(e)
        summary = Summary.of(stats, self._stop_reason)
        stats.conclude(summary)
        stats.sample(stats.finished)
        return summary

    def _worker_failed(self, failure: Failure) -> None:
        """A unit failed past :meth:`_work`'s own handling of errors: a bug in that handling. It
        stops the run (exit 3, lines left for ``--resume``) as well as being logged."""
        log.failure("batch {batch_id}: unexpected error in a worker", failure=failure,
                    batch_id=self.config.batch_id, level=LogLevel.error)
        error = failure.value
        self.stop(f"internal error: {describe(error) if error is not None else failure.getErrorMessage()}")

    # -- one unit of work -----------------------------------------------------------------

    def _work(self, seq: int, chunk: list[Item]) -> Deferred[None]:
        """Unit ``seq`` of the run: exactly one output line for each of its lines, in input order.

        Whatever escapes :meth:`_compute` gives every line still without a line an
        ``internal_error`` line; only :meth:`abandon` (a cancel) leaves them unwritten. Plain
        callbacks, no coroutine: a unit answered at its first attempt costs no resumption.
        """
        started = self._clock.seconds()
        out: dict[int, Line] = {}
        try:
            d = self._compute(chunk, out)
        except Exception as e:  # noqa: BLE001 - the same guard as for an asynchronous error, below
            d = fail(e)
        return d.addCallbacks(self._unit_done, self._unit_failed, callbackArgs=(seq, chunk, out, started),
                              errbackArgs=(seq, chunk, out, started))

    def _unit_failed(self, failure: Failure, seq: int, chunk: list[Item], out: dict[int, Line],
                     started: float) -> Failure | Deferred[None] | None:
        """What escaped a unit: a cancel by :meth:`abandon` writes nothing (``--resume`` redoes
        the lines); anything else makes the lines without an output line ``internal_error``, then
        the unit ends as one answered (:meth:`_unit_done`)."""
        error = failure.value if failure.value is not None else Exception(failure.getErrorMessage())
        if failure.check(CancelledError):
            if self._attempts.abandoned:
                self._commit(seq, chunk, {})  # nothing written: --resume sends these lines again
                return failure
        elif not failure.check(Exception):
            return failure  # KeyboardInterrupt and the like: not the lines' business
        elif self._tracebacks_left > 0:  # a bug: its traceback, a few times per run (the log stays small)
            self._tracebacks_left -= 1
            log.failure("batch {batch_id}: lines {first}..{last} failed: {error}", failure=failure,
                        batch_id=self.config.batch_id, first=chunk[0].index, last=chunk[-1].index,
                        error=describe(error), level=LogLevel.error)
        self._fill(chunk, out, error)
        return self._unit_done(None, seq, chunk, out, started)

    def _unit_done(self, _: None, seq: int, chunk: list[Item], out: dict[int, Line],
                   started: float) -> Deferred[None] | None:
        """Write the unit's lines; with ``--batch-interval``, hold its worker for the rest of the interval."""
        self._commit(seq, chunk, out)
        interval = self.config.batch_interval
        if interval <= 0 or self._stop_reason is not None:
            return None
        wait = interval - (self._clock.seconds() - started)
        if wait <= 0:
            return None
        pause: Deferred[None] = Deferred(self._end_pause)
        self._pauses[pause] = self._clock.callLater(wait, self._end_pause, pause)
        return pause

    def _end_pause(self, pause: Deferred[None]) -> None:
        """A ``--batch-interval`` pause ends: its time is up, the run stops, or it is cancelled."""
        timer = self._pauses.pop(pause, None)
        if timer is not None and timer.active():
            timer.cancel()
        if not pause.called:
            pause.callback(None)

    def _compute(self, chunk: list[Item], out: dict[int, Line]) -> Deferred[None]:
        """Fill ``out`` with the output line of each line of ``chunk`` (none when stopping first)."""
        parsed: list[Parsed] = []
        limit = self.config.max_line_bytes
        for item in chunk:
            size = item.oversize or len(item.line)
            if size > limit:
                out[item.index] = self._lines.error_line(item, f"line {item.index + 1} is {size} bytes, over "
                                                   f"--max-line-bytes {limit}", "input_too_large")
                continue
            try:
                parsed.append(self.codec.parse(item))
            except InputError as e:
                out[item.index] = self._lines.error_line(item, str(e), "input_error")
            except RecursionError:
                out[item.index] = self._lines.error_line(item, "line is not valid input: JSON nested too deeply",
                                             "input_error")
        if not parsed:
            return succeed(None)
        body, members, rest = self.codec.build(parsed)
        return self._attempts.send(body, members).addCallback(self._answered, members, rest, out)

    def _answered(self, outcome: list[Record] | RequestFailed | None, members: list[Parsed],
                  rest: list[tuple[Parsed, str]], out: dict[int, Line]) -> Deferred[None] | None:
        """The unit's first request ended (``None``: stopping before a final answer)."""
        if outcome is None:
            return None
        if rest or isinstance(outcome, RequestFailed) and splittable(outcome, len(members)):
            # lines left out of the request, or a request refused for what one of its lines carries
            return Deferred.fromCoroutine(self._split(members, outcome, rest, out))
        self._record(members, outcome, out)
        return None

    async def _split(self, members: list[Parsed], outcome: list[Record] | RequestFailed,
                     rest: list[tuple[Parsed, str]], out: dict[int, Line]) -> None:
        """The unit's further requests (:mod:`.splitting`) until each of its lines has an outcome."""
        attempts, stats, most = self._attempts, self.stats, self.config.max_failures
        answered = await carry_on(self.codec, attempts.send, members, outcome, rest,
                                  lambda: attempts.stopping or attempts.abandoned,
                                  lambda failed: most is not None and stats.failed + failed >= most)
        for lines, ended in answered:
            self._record(lines, ended, out)

    def _record(self, members: list[Parsed], outcome: list[Record] | RequestFailed, out: dict[int, Line]) -> None:
        """The output lines of one request's lines: their records, or its failure for each."""
        if isinstance(outcome, RequestFailed):
            for p in members:
                out[p.item.index] = self._lines.error_line(p.item, outcome.reason, outcome.kind, code=outcome.code,
                                               own_tags=p.own_tags)
        else:
            if len(outcome) != len(members):  # a codec bug: no line gets a record that may be another's
                raise ValueError(f"the codec gave {len(outcome)} records for {len(members)} lines")
            for p, record in zip(members, outcome, strict=True):
                out[p.item.index] = (p.item, record, None, "")

    def _fill(self, chunk: list[Item], out: dict[int, Line], error: BaseException) -> None:
        """An ``internal_error`` line for every line of the unit that has no output line yet."""
        reason = describe(error)
        for item in chunk:
            if item.index not in out:
                out[item.index] = self._lines.error_line(item, reason, "internal_error")

    def _commit(self, seq: int, chunk: list[Item], out: dict[int, Line]) -> None:
        """Hand the unit's lines, in input order, to the writer (or to ``--ordered``'s buffer)."""
        lines = [out[item.index] for item in chunk if item.index in out]
        if self._reorder is not None:
            self._reorder.put(seq, lines)
        else:
            for line in lines:
                self._lines.emit(line)
