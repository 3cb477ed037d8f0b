"""One batch from file to file: opens what the engine needs, runs it, closes everything.

The command line, the daemon and the tests all run batches through :class:`Batch`, so a file
is always read, written and summarised the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar, cast

import attrs
import txaio
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import LoopingCall

from ..config import BatchConfig
from ..core.items import Item
from ..outputs.lines import DEFAULT_MAX_LINE_BYTES
from ..outputs.resume import ResumeError, prepare_resume
from ..outputs.writer import LineWriter, OutputRefused
from ..protocols.choose import make_codec
from ..redaction import Secrets, batch_name
from ..storage.batchio import BatchFiles, open_files
from ..storage.paths import StorageError, StorageUnavailable, display, is_remote, is_stdio, parse_storage_options
from ..storage.pipes import StdoutLines
from ..tables.formats import input_table, output_table, working_path
from ..transports.base import Transport
from ..transports.choose import make_transport
from .engine import BatchRun
from .reader import OffThreadItems, instance_ids, read_items
from .stats import BatchStats
from .summary import Summary, describe
from .v2_discovery import discover_v2_model

log = txaio.make_logger()
T = TypeVar("T")


def all_of(predicates: list[Callable[[int], bool]]) -> Callable[[int], bool] | None:
    """One ``wanted`` predicate from several (shard and resume filters), None when there are none."""
    if not predicates:
        return None
    if len(predicates) == 1:
        return predicates[0]
    return lambda index: all(p(index) for p in predicates)


def shard_filter(config: BatchConfig, lines: int | None) -> tuple[list[Callable[[int], bool]], int | None]:
    """The ``wanted`` predicates of ``--shard-index/--shard-count`` and how many lines the shard owns
    (None when the input's count is not known)."""
    if config.shard_count <= 1:
        return [], lines
    index, count = config.shard_index, config.shard_count
    return [lambda i: i % count == index], None if lines is None else len(range(index, lines, count))


def table_opener(config: BatchConfig) -> Callable[..., Any] | None:
    """How a table input is opened (rows counted, not lines), None for lines."""
    if not input_table(config):
        return None
    from ..tables.source import open_table_source

    return open_table_source


def writer_path(config: BatchConfig) -> str:
    """The output as messages name it (a URL without its user part or query)."""
    return display(config.output_data_path)


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
                 output_mode: int | None = None, label: str | None = None) -> None:
        #: A table output (path, format): the run writes its JSON-lines working file, the table at the end.
        self._table_output: tuple[str, str] | None = None
        table_format = output_table(config)
        if table_format:
            self._table_output = (config.output_data_path, table_format)
            # in input order (--ordered), so the table is joined in one streamed pass, without a sort
            config = config.replace(output_data_path=working_path(config.output_data_path), ordered=True)
        self.config = config
        #: What the log calls the input: the daemon reads through ``/proc/self/fd/N`` but names the file.
        self._label = label
        self._output_mode = 0o666 if output_mode is None else output_mode
        self._reactor = reactor
        self.stats = stats or BatchStats(config.batch_id, name or batch_name(config.input_data_path))
        self._transport = transport or make_transport(config, reactor, make_codec(config).target)
        self._run: BatchRun | None = None
        self._stop_reason: str | None = None
        self._abandon_call: Any = None
        self._transfer: Deferred[Any] | None = None  # an upload or download in progress
        self._transfer_call: Any = None
        self._grace = config.drain_timeout

    async def run(self) -> Summary:
        """Open the input and the output (a file, ``-`` or a URL), run, close; a remote output's
        staging file is uploaded only when the run ended complete (a stopped run keeps it for
        ``--resume`` and publishes nothing)."""
        try:
            files = await self._storage(open_files(self.config, self._reactor, table_opener(self.config)))
        except (StorageError, OSError) as e:
            self.stats.fail(str(e))
            raise
        try:
            summary = await self._run_files(files)
        except ResumeError:
            files.output.discard_copy()  # a refused resume's copy of the object would keep refusing
            raise
        finally:
            files.close()
        if files.output.remote:
            summary = await self._upload(files, summary)
        if self._table_output is not None and not summary.stopped_early:
            summary = await self._write_table(summary)
        # debug only: the command prints the summary, the daemon logs it once per file (never twice)
        log.debug("batch {batch_id} finished: {summary}", batch_id=self.config.batch_id, summary=summary.text())
        return summary

    async def _write_table(self, summary: Summary) -> Summary:
        """The scored table from the complete working file (on a thread); a failure is a run that did
        not finish (exit 3: a --resume writes it again)."""
        from twisted.internet.threads import deferToThreadPool

        from ..tables.writer import write_table

        assert self._table_output is not None
        path, fmt = self._table_output
        config = self.config
        try:
            rows = await deferToThreadPool(
                self._reactor, self._reactor.getThreadPool(), write_table, config.output_data_path, path, fmt,
                config.input_data_path, input_table(config) or "csv", keep=config.keep_columns,
                options=parse_storage_options(config.storage_options))
        except (StorageError, OSError) as e:
            log.error("batch {batch_id}: {error}", batch_id=config.batch_id, error=str(e))
            return attrs.evolve(summary, stopped_early=summary.stopped_early or str(e))
        log.info("batch {batch_id}: {rows} rows written to {path}", batch_id=config.batch_id, rows=rows, path=path)
        return summary

    async def _storage(self, work: Coroutine[Any, Any, T]) -> T:
        """Await an upload or download that :meth:`stop` can end (after ``--drain-timeout``)."""
        self._transfer = Deferred.fromCoroutine(work)
        if self._stop_reason is not None:
            self._cancel_transfer_later()
        try:
            return await self._transfer
        except CancelledError:  # a stop ended it somewhere it had no name for the cancel
            raise StorageUnavailable(f"{writer_path(self.config)}: interrupted by a signal") from None
        finally:
            self._transfer = None
            if self._transfer_call is not None and self._transfer_call.active():
                self._transfer_call.cancel()

    def _cancel_transfer_later(self) -> None:
        if self._transfer_call is None or not self._transfer_call.active():
            self._transfer_call = self._reactor.callLater(self._grace, self._cancel_transfer)

    def _cancel_transfer(self) -> None:
        if self._transfer is not None:
            self._transfer.cancel()

    async def _run_files(self, files: BatchFiles) -> Summary:
        config, stats = self.config, self.stats
        input_lines = files.input_lines()
        # Lines this run skips: other shards' (--shard-index/--shard-count); a resume adds its own.
        wanted, stats.total = shard_filter(config, input_lines)
        try:
            writer = files.writer(config, self._output_mode)
            writer.secrets = Secrets.of(config)  # answers quoting a credential are written redacted
        except (OutputRefused, OSError) as e:
            stats.fail(str(e))
            raise
        flusher = LoopingCall(self._flush, writer, files)
        flusher.clock = self._reactor
        close_error: OSError | None = None
        started = False
        try:
            self._resume(writer, input_lines, wanted)
            self._transport.start()
            started = True
            flusher.start(min(1.0, self.config.fsync_interval or 1.0), now=False)
            summary = await self._run_engine(files, writer, all_of(wanted))
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
        if close_error is not None and self._run is not None and self._run.output_error is None:
            # Lines counted as written are not on disk: the run did not finish, a --resume redoes them.
            summary = attrs.evolve(summary, stopped_early=f"cannot write the output {writer_path(self.config)}: "
                                                          f"{describe(close_error)}")
        return summary

    async def _upload(self, files: BatchFiles, summary: Summary) -> Summary:
        """Upload the staging file of a run that ended complete; a stopped run or a failed upload
        is a run that did not finish (exit 3, the staging file stays for ``--resume``)."""
        if summary.stopped_early:  # a complete run stopped only now still uploads, within --drain-timeout
            log.warn("batch {batch_id} stopped: nothing published to {url}; its lines stay in {path} for --resume",
                     batch_id=self.config.batch_id, url=writer_path(self.config), path=files.output.local_path)
            return summary
        try:
            await self._storage(files.upload(self._reactor, self.config.storage_timeout))
        except StorageError as e:
            log.error("batch {batch_id}: {error}", batch_id=self.config.batch_id, error=str(e))
            return attrs.evolve(summary, stopped_early=summary.stopped_early or str(e))
        return summary

    def _resume(self, writer: LineWriter | StdoutLines, input_lines: int | None,
                wanted: list[Callable[[int], bool]]) -> None:
        """``--resume``/``--retry-failed``: adopt the output's batch id and counts, and skip its lines."""
        config, stats = self.config, self.stats
        if not (config.resume or config.retry_failed):
            return
        if input_lines is None or not isinstance(writer, LineWriter):  # refused before the run (preflight)
            raise StorageError("--resume needs an input and an output that are files or URLs, not - (a pipe)")
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

    async def _run_engine(self, files: BatchFiles, writer: LineWriter | StdoutLines,
                          wanted: Callable[[int], bool] | None) -> Summary:
        """The engine over the input (a :meth:`stop` that came first is passed on)."""
        if self.config.protocol == "v2" and self.config.v2_model is None:
            metadata = await discover_v2_model(self.config, self._reactor)
            if metadata is not None:  # the defaults of --input-name, -p and the request shape
                self.config = self.config.replace(v2_model=metadata)
        config = self.config
        log.info("batch {batch_id}: {total} lines from {path} to {model} over {transport}",
                 batch_id=config.batch_id, path=self._label or display(config.input_data_path),
                 total="an unknown number of" if self.stats.total is None else self.stats.total,
                 model=config.deployment_name, transport=config.transport)
        counted = files.source.total_lines is not None
        if not counted:  # every index is seen, so the total is exact once the input ends
            wanted = files.seen.wanted(wanted)
            self.stats.total_estimated = True
        if input_table(config):  # rows of a CSV or Parquet table, as the items of lines (seldon_batch_tx/tables)
            from ..tables.source import table_batch_items

            config, items = table_batch_items(config, files.source, parse_storage_options(config.storage_options),
                                              instance_ids(config.batch_id), wanted)
            self.config = config
        else:
            items = read_items(files.source.stream, config.batch_id, wanted, max_line_bytes=config.max_line_bytes)
        if not counted:
            items = files.seen.follow(items, self._read_all)
        units: Iterator[Item] | OffThreadItems = items
        if is_stdio(config.input_data_path) or is_remote(config.input_data_path):  # reads that may stall
            units = OffThreadItems(items, self._reactor, make_codec(config).batch_size)
        # the engine takes any LineBuffer with a path; StdoutLines has one
        self._run = BatchRun(config, units, self._transport, cast(LineWriter, writer), self.stats, self._reactor)
        if self._stop_reason:
            self._run.stop(self._stop_reason)
        return await self._run.run()

    def _read_all(self, lines: int) -> None:
        """The input ended: its exact line count replaces the estimate before the summary."""
        self.stats.total = shard_filter(self.config, lines)[1]
        self.stats.total_estimated = False

    def _flush(self, writer: LineWriter | StdoutLines, files: BatchFiles) -> None:
        """The periodic flush (and a total not counted re-estimated); an output that cannot be written
        stops the run (exit 3), never the timer."""
        if files.source.total_lines is None and self._run is not None and self.stats.state == "running":
            self.stats.total = shard_filter(self.config, files.input_lines())[1]
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
        self._stop_reason, self._grace = reason, grace
        if self._transfer is not None:  # an upload or download gets the same grace, then is cancelled
            self._cancel_transfer_later()
        if self._run is None:
            return
        self._run.stop(reason)
        if self._abandon_call is None:
            self._abandon_call = self._reactor.callLater(grace, self._run.abandon)
