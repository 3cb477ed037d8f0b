"""The batch engine: read -> build request -> send (with retries) -> write one line per input line.

A single loop reads the input lazily and takes a token from a ``DeferredSemaphore`` sized to
``--workers`` before each request, so at most that many requests are in flight and reading waits
whenever they are all busy: memory stays flat however long the input is.

The promise is one output line per input line, kept by structure rather than by a list of
catches: each unit of work (one request's lines) runs inside one guard, and whatever escapes it
(a codec, the transport, a bug) becomes an ``internal_error`` line for every line of the unit
that has none yet. Lines are written and counted in one place (:meth:`BatchRun._emit`), which
never raises: a record that cannot be encoded is replaced by an error line, and an output that
cannot be written stops the run (exit 3) instead of losing lines silently. Only
:meth:`BatchRun.abandon` leaves lines without output, on purpose, for ``--resume``.
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
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from ..config import BatchConfig
from ..outputs.writer import LineWriter
from ..protocols.seldon import BadResponse, InputError, Parsed, ResponseMismatch
from ..protocols.v2 import make_codec
from ..transports.base import RequestFailed, Transport
from .ordering import ReorderBuffer
from .reader import Item, chunked
from .stats import BatchStats

txaio.use_twisted()
log = txaio.make_logger()

#: Exit statuses, documented in the README.
EXIT_OK, EXIT_FAILED_LINES, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 3

Record = dict[str, Any]
#: One output line ready to be written: its item, its record, and for an error line its kind and
#: reason (``None`` and ``""`` for an answer). Counted as succeeded or failed only once written.
Line = tuple[Item, Record, "str | None", str]

#: Internal-error tracebacks logged per run: enough to debug, not a log that grows with the input.
MAX_TRACEBACKS = 5
#: Longest exception text kept in an ``internal_error`` reason (messages can quote whole bodies).
MAX_REASON_CHARS = 500


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


#: Seconds between the watchdog's looks at the requests in flight.
WATCHDOG_INTERVAL = 1.0


def watchdog_seconds(timeout: float) -> float:
    """How long the engine lets one request run before ending it itself: well past the
    transport's own ``--timeout``, so it only ever catches a transport that failed to end one."""
    return 2 * timeout + 10.0


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


def describe(error: BaseException) -> str:
    """``TypeName: message`` of an exception, cut to :data:`MAX_REASON_CHARS` for an error line."""
    try:
        message = str(error)
    except Exception:  # noqa: BLE001 - an exception whose message itself fails still gets a line
        message = "(its message could not be read)"
    text = f"{type(error).__name__}: {message}"
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS] + "..."


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
        """3 stopped early; 1 when any line failed or has no output line; else 0.

        A run that was not stopped yet left lines without an output line broke the engine's
        promise: that is never success, whatever the counts of failed lines say.
        """
        if self.stopped_early:
            return EXIT_STOPPED
        return EXIT_FAILED_LINES if self.failed or self.not_processed else EXIT_OK

    def text(self) -> str:
        stopped = f", stopped early: {self.stopped_early}" if self.stopped_early else ""
        missing = (" (these lines have no output line: an error; --resume sends them again)"
                   if self.not_processed and not self.stopped_early else "")
        resumed = f" ({self.resumed} from an earlier run)" if self.resumed else ""
        return (f"{self.lines} lines{resumed}: {self.succeeded} succeeded, {self.failed} failed, "
                f"{self.retried} retries, {self.not_processed} not processed{missing}{stopped}; "
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
        #: The error that made the output unwritable; once set, nothing more is written.
        self._write_error: OSError | None = None
        self._attempts = 1 + max(config.retries, 0)
        #: Requests in flight and when the watchdog gives up on each (see :meth:`_sweep`).
        self._deadlines: dict[Deferred[Any], float] = {}
        self._expired: set[Deferred[Any]] = set()
        self._watchdog_after = watchdog_seconds(config.timeout)
        #: Internal errors whose traceback is still logged; the others are error lines only.
        self._tracebacks_left = MAX_TRACEBACKS
        self._pauses: set[Deferred[None]] = set()
        #: ``--ordered``: finished units wait here for earlier ones; None writes in completion order.
        self._reorder: ReorderBuffer[Line] | None = (
            ReorderBuffer(reorder_window(config.workers), self._emit) if config.ordered else None)

    # -- control --------------------------------------------------------------------------

    @property
    def stop_reason(self) -> str | None:
        """Why the run stopped taking lines (``None`` while it has not)."""
        return self._stop_reason

    @property
    def output_error(self) -> OSError | None:
        """The error that made the output unwritable (the run then stopped), else ``None``: the
        caller's own close of the writer will meet it again and should only log it."""
        return self._write_error

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
        watchdog = LoopingCall(self._sweep)
        watchdog.clock = self._clock
        watchdog.start(WATCHDOG_INTERVAL, now=False)
        try:
            try:
                await self._feed()
            except Exception as e:  # noqa: BLE001 - reading failed (EIO, a bug): stop, never end silently
                log.failure("batch {batch_id}: reading the input failed", batch_id=self.config.batch_id,
                            level=LogLevel.error)
                self.stop(f"cannot read the input: {describe(e)}")
            await self._drain()
        finally:
            if watchdog.running:
                watchdog.stop()
            stats.finished = self._clock.seconds()
            if self._write_error is None:
                try:
                    self._writer.flush(stats.finished)
                except OSError as e:
                    self.output_failed(e)
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

    async def _feed(self) -> None:
        """Read units and start each as soon as a worker is free, until the input ends or a stop."""
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

    def _finished(self, result: Failure | None, d: Deferred[None]) -> None:
        """A unit ended. :meth:`_work` handles its own errors, so a failure here is a bug in that
        handling: it stops the run (exit 3, lines left for ``--resume``) as well as being logged."""
        self._in_flight.discard(d)
        self._semaphore.release()
        if isinstance(result, Failure) and not result.check(CancelledError):
            log.failure("batch {batch_id}: unexpected error in a worker", failure=result,
                        batch_id=self.config.batch_id, level=LogLevel.error)
            error = result.value
            self.stop(f"internal error: {describe(error) if error is not None else result.getErrorMessage()}")

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

    async def _drain(self) -> None:
        for _ in range(self.config.workers):
            await self._semaphore.acquire()
        for _ in range(self.config.workers):
            self._semaphore.release()

    # -- one unit of work -----------------------------------------------------------------

    async def _work(self, seq: int, chunk: list[Item]) -> None:
        """Unit ``seq`` of the run: exactly one output line for each of its lines, in input order.

        Whatever escapes :meth:`_compute` gives every line still without a line an
        ``internal_error`` line; only :meth:`abandon` (a cancel) leaves them unwritten.
        """
        started = self._clock.seconds()
        out: dict[int, Line] = {}
        try:
            await self._compute(chunk, out)
        except CancelledError as e:
            if self._abandoned:
                self._commit(seq, chunk, {})  # nothing written: --resume sends these lines again
                raise
            self._fill(chunk, out, e)
        except Exception as e:  # noqa: BLE001 - the structural guarantee: no line of the unit is lost
            if self._tracebacks_left > 0:  # a bug: its traceback, a few times per run (the log stays small)
                self._tracebacks_left -= 1
                log.failure("batch {batch_id}: lines {first}..{last} failed: {error}",
                            batch_id=self.config.batch_id, first=chunk[0].index, last=chunk[-1].index,
                            error=describe(e), level=LogLevel.error)
            self._fill(chunk, out, e)
        self._commit(seq, chunk, out)
        interval = self.config.batch_interval
        if interval > 0 and self._stop_reason is None:
            wait = interval - (self._clock.seconds() - started)
            if wait > 0:
                await deferLater(self._clock, wait)

    async def _compute(self, chunk: list[Item], out: dict[int, Line]) -> None:
        """Fill ``out`` with the output line of each line of ``chunk`` (none when stopping first)."""
        parsed: list[Parsed] = []
        limit = self.config.max_line_bytes
        for item in chunk:
            size = item.oversize or len(item.line)
            if size > limit:
                out[item.index] = self._fail(item, f"line {item.index + 1} is {size} bytes, over "
                                                   f"--max-line-bytes {limit}", "input_too_large")
                continue
            try:
                parsed.append(self.codec.parse(item))
            except InputError as e:
                out[item.index] = self._fail(item, str(e), "input_error")
            except RecursionError:
                out[item.index] = self._fail(item, "line is not valid input: JSON nested too deeply",
                                             "input_error")
        if parsed:
            body, members, rejected = self.codec.build(parsed)
            for p, reason in rejected:
                out[p.item.index] = self._fail(p.item, reason, "input_error", own_tags=p.own_tags)
            sent = await self._send(body, members)  # empty when stopping before a final answer
            for p, line in zip(members, sent, strict=False):
                out[p.item.index] = line

    def _fill(self, chunk: list[Item], out: dict[int, Line], error: BaseException) -> None:
        """An ``internal_error`` line for every line of the unit that has no output line yet."""
        reason = describe(error)
        for item in chunk:
            if item.index not in out:
                out[item.index] = self._fail(item, reason, "internal_error")

    def _commit(self, seq: int, chunk: list[Item], out: dict[int, Line]) -> None:
        """Hand the unit's lines, in input order, to the writer (or to ``--ordered``'s buffer)."""
        lines = [out[item.index] for item in chunk if item.index in out]
        if self._reorder is not None:
            self._reorder.put(seq, lines)
        else:
            for line in lines:
                self._emit(line)

    async def _send(self, body: dict[str, Any], members: list[Parsed]) -> list[Line]:
        """One output line per member; none when stopped or abandoned before a final answer.

        A transport that raises anything but :class:`RequestFailed` is a bug: it leaves here and
        :meth:`_work` turns the unit into ``internal_error`` lines.
        """
        puid = members[0].item.instance_id
        clock, stats, deadlines = self._clock, self.stats, self._deadlines
        failure: RequestFailed | None = None
        for attempt in range(self._attempts):
            if attempt:
                stats.retries += 1
                assert failure is not None
                await self._pause(backoff_delay(attempt - 1, failure.retry_after))
                if self._stop_reason is not None or self._abandoned:
                    return []  # stopping: a resume sends these lines again
            sent = clock.seconds()
            d = self._transport.send(body, puid)
            deadlines[d] = sent + self._watchdog_after
            try:
                response = await d
            except CancelledError:
                if self._abandoned or d not in self._expired:
                    raise  # abandon(): this unit writes nothing
                failure = RequestFailed(
                    "timeout", f"no answer after {self._watchdog_after:g} s: the engine's watchdog ended a request "
                    f"its transport had not ended at --timeout {self.config.timeout:g} s", retryable=True,
                    info="timeout")
                if self._stop_reason is not None:
                    return []
                continue
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
            finally:
                del deadlines[d]
                if self._expired:
                    self._expired.discard(d)
            stats.observe_latency(clock.seconds() - sent)
            try:
                records = self.codec.results(response, members)
            except ResponseMismatch as e:
                failure = RequestFailed("response_mismatch", str(e), info="response_mismatch")
                break
            except BadResponse as e:
                failure = RequestFailed("bad_response", str(e), info="bad_response")
                break
            except Exception as e:  # noqa: BLE001 - an answer the codec could not read is the answer's fault
                failure = RequestFailed("bad_response", f"the answer could not be read: {describe(e)}",
                                        info="bad_response")
                break
            return [(p.item, record, None, "") for p, record in zip(members, records, strict=True)]
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
              own_tags: dict[str, Any] | None = None) -> Line:
        """The error line for ``item`` (counted when written)."""
        return item, self.codec.error(item, reason, info=kind, code=code, own_tags=own_tags), kind, reason

    # -- writing --------------------------------------------------------------------------

    def _emit(self, line: Line) -> None:
        """Write one output line and count it; never raises, so no caller can lose lines to it.

        A record the writer cannot encode (nested too deeply, a lone surrogate...) is replaced by
        an error line; an output that cannot be written (disk full, I/O error) stops the run.
        """
        if self._write_error is not None:
            return  # the output is broken: the line stays unwritten and uncounted, for --resume
        item, record, kind, reason = line
        try:
            self._writer.write(record)
            if kind is None:
                self.stats.succeeded += 1
                return
        except OSError as e:  # the line is queued in the writer; what follows it cannot be
            self._count(item, kind, reason)
            self.output_failed(e)
            return
        except Exception as e:  # noqa: BLE001 - this record only: write an error line instead
            if kind is None:
                kind, reason = "bad_response", f"the answer cannot be written as a JSON line: {describe(e)}"
            else:
                reason = f"{reason} (its error line could not be written: {describe(e)})"
            reason = reason.encode("utf-8", "backslashreplace").decode("utf-8")
            try:
                self._writer.write(self.codec.error(item, reason, info=kind))
            except OSError as e2:
                self._count(item, kind, reason)
                self.output_failed(e2)
                return
            except Exception as e2:  # noqa: BLE001 - a bug in error lines themselves: stop, never hide
                log.failure("batch {batch_id}: cannot write the error line of line {index}",
                            batch_id=self.config.batch_id, index=item.index, level=LogLevel.error)
                self.stop(f"internal error writing line {item.index}: {describe(e2)}")
                return
        self._count(item, kind, reason)

    def _count(self, item: Item, kind: str | None, reason: str) -> None:
        stats = self.stats
        if kind is None:
            stats.succeeded += 1
            return
        stats.record_error(kind, item.index, reason)
        limit = self.config.max_failures
        if limit is not None and stats.failed >= limit:
            self.stop(f"{stats.failed} lines failed (--max-failures {limit})")

    def output_failed(self, error: OSError) -> None:
        """The output cannot take more lines: stop the run, naming the error (exit 3)."""
        if self._write_error is None:
            self._write_error = error
            log.error("batch {batch_id}: cannot write {path}: {error}", batch_id=self.config.batch_id,
                      path=self._writer.path, error=describe(error))
        self.stop(f"cannot write the output {self._writer.path}: {describe(error)}")
