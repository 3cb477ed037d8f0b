"""One batch from file to file: opens what the engine needs, runs it, closes everything.

The command line, the daemon and the tests all run batches through :class:`Batch`, so a file
is always read, written and summarised the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import attrs
import txaio
from twisted.internet.task import LoopingCall

from ..config import BatchConfig
from ..outputs.lines import DEFAULT_MAX_LINE_BYTES
from ..outputs.resume import prepare_resume
from ..outputs.writer import LineWriter, OutputRefused
from ..transports.base import Transport, make_transport
from .engine import BatchRun
from .reader import count_lines, read_items
from .stats import BatchStats
from .summary import Summary, describe

log = txaio.make_logger()


def all_of(predicates: list[Callable[[int], bool]]) -> Callable[[int], bool] | None:
    """One ``wanted`` predicate from several (shard and resume filters), None when there are none."""
    if not predicates:
        return None
    if len(predicates) == 1:
        return predicates[0]
    return lambda index: all(p(index) for p in predicates)


def shard_filter(config: BatchConfig, lines: int) -> tuple[list[Callable[[int], bool]], int]:
    """The ``wanted`` predicates of ``--shard-index/--shard-count`` and how many lines the shard owns."""
    if config.shard_count <= 1:
        return [], lines
    index, count = config.shard_index, config.shard_count
    return [lambda i: i % count == index], len(range(index, lines, count))


def output_line_limit(config: BatchConfig) -> int:
    """The longest output line a resume reads back: an answer may grow when re-encoded."""
    return max(DEFAULT_MAX_LINE_BYTES, 4 * config.max_response_bytes + (1 << 20))


class Batch:
    """A batch job with live :class:`BatchStats` and a graceful :meth:`stop`.

    The output is locked for the run's whole life, before it is read, repaired or emptied: a
    second run on it fails with :class:`.writer.OutputLocked` (an :class:`.writer.OutputRefused`,
    like an output that is a symbolic link) having changed nothing. ``output_mode`` is the
    permission a created output gets (less the umask; the daemon passes the input's).
    """

    def __init__(self, config: BatchConfig, reactor: Any, *, stats: BatchStats | None = None,
                 transport: Transport | None = None, name: str | None = None,
                 output_mode: int | None = None) -> None:
        self.config = config
        self._output_mode = 0o666 if output_mode is None else output_mode
        self._reactor = reactor
        self.stats = stats or BatchStats(config.batch_id, name or os.path.basename(config.input_data_path))
        self._transport = transport or make_transport(config, reactor)
        self._run: BatchRun | None = None
        self._stop_reason: str | None = None
        self._abandon_call: Any = None

    async def run(self) -> Summary:
        config, stats = self.config, self.stats
        input_lines = count_lines(config.input_data_path)
        # Lines this run skips: other shards' (--shard-index/--shard-count); a resume adds its own.
        wanted, stats.total = shard_filter(config, input_lines)
        try:
            writer = LineWriter(config.output_data_path, append=config.resume or config.retry_failed,
                                fsync_interval=config.fsync_interval, mode=self._output_mode,
                                not_same_as=config.input_data_path)
        except (OutputRefused, OSError) as e:
            stats.fail(str(e))
            raise
        flusher = LoopingCall(self._flush, writer)
        flusher.clock = self._reactor
        close_error: OSError | None = None
        started = False
        try:
            self._resume(writer, input_lines, wanted)
            self._transport.start()
            started = True
            flusher.start(min(1.0, self.config.fsync_interval or 1.0), now=False)
            summary = await self._run_engine(writer, all_of(wanted))
        except BaseException as e:
            stats.fail(str(e))
            raise
        finally:
            if flusher.running:
                flusher.stop()
            try:
                writer.close()  # releases the output's lock
            except OSError as e:  # the last lines could not be written: said in the summary, not a traceback
                close_error = e
            finally:
                if self._abandon_call is not None and self._abandon_call.active():
                    self._abandon_call.cancel()
                if started:
                    await self._transport.stop()
        config = self.config
        if close_error is not None and self._run is not None and self._run.output_error is None:
            # Lines counted as written are not on disk: the run did not finish, a --resume redoes them.
            summary = attrs.evolve(summary, stopped_early=f"cannot write the output {config.output_data_path}: "
                                                          f"{describe(close_error)}")
        log.info("batch {batch_id} finished: {summary}", batch_id=config.batch_id, summary=summary.text())
        return summary

    def _resume(self, writer: LineWriter, input_lines: int, wanted: list[Callable[[int], bool]]) -> None:
        """``--resume``/``--retry-failed``: adopt the output's batch id and counts, and skip its lines."""
        config, stats = self.config, self.stats
        if not (config.resume or config.retry_failed):
            return
        state = prepare_resume(writer.output, config.batch_id if config.batch_id_given else None,
                               total=input_lines, retry_failed=config.retry_failed,
                               max_line_bytes=output_line_limit(config))
        if state is None:
            return
        # Same batch id as the lines already written; only lines without an output line are sent.
        self.config = config.replace(batch_id=state.batch_id)
        stats.batch_id = state.batch_id
        wanted.append(state.pending)
        stats.succeeded, stats.failed = state.succeeded, state.failed
        stats.resumed = state.succeeded + state.failed

    async def _run_engine(self, writer: LineWriter, wanted: Callable[[int], bool] | None) -> Summary:
        """The engine over the input file (a :meth:`stop` that came first is passed on)."""
        config = self.config
        log.info("batch {batch_id}: {total} lines from {path} to {model} over {transport}",
                 batch_id=config.batch_id, total=self.stats.total, path=config.input_data_path,
                 model=config.deployment_name, transport=config.transport)
        with open(config.input_data_path, "rb") as stream:
            items = read_items(stream, config.batch_id, wanted, max_line_bytes=config.max_line_bytes)
            self._run = BatchRun(config, items, self._transport, writer, self.stats, self._reactor)
            if self._stop_reason:
                self._run.stop(self._stop_reason)
            return await self._run.run()

    def _flush(self, writer: LineWriter) -> None:
        """The periodic flush; an output that cannot be written stops the run (exit 3), never the timer."""
        try:
            writer.flush(self._reactor.seconds())
        except OSError as e:
            if self._run is not None:
                self._run.output_failed(e)

    def stop(self, reason: str, grace: float | None = None) -> None:
        """Take no new lines; give requests in flight ``grace`` seconds (``--drain-timeout``), then
        abandon them: they write nothing, so a ``--resume`` sends them again."""
        if grace is None:
            grace = self.config.drain_timeout
        self._stop_reason = reason
        if self._run is None:
            return
        self._run.stop(reason)
        if self._abandon_call is None:
            self._abandon_call = self._reactor.callLater(grace, self._run.abandon)
