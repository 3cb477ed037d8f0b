"""A batch's input and output wherever they live: a local file, ``-`` or an fsspec URL.

:func:`open_files` opens both for :class:`.pipeline.batch.Batch`. Local files are opened as they
always were (counted, then read), on the reactor thread, so the daemon and local runs behave as
before. A URL or a pipe is opened in the reactor's thread pool: the object's size comes from one
HEAD, its lines are read by the prefetch thread (:mod:`.reading`), and it is counted (one extra
streamed pass) only for ``--resume``, which must check the output's indexes against the input.
Otherwise progress estimates the total from the bytes read (:class:`LinesSeen`). A remote output
is a staging file that :meth:`BatchFiles.upload` sends when the run ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.threads import deferToThreadPool

from .paths import is_remote, is_stdio, parse_storage_options
from .pipes import StdoutLines
from .reading import InputSource, open_input
from .staging import StagedOutput, open_output

if TYPE_CHECKING:
    from ..config import BatchConfig
    from ..core.items import Item
    from ..outputs.writer import LineWriter


@attrs.define
class LinesSeen:
    """The last input line the reader has reached (skipped ones too), for a total not counted:
    estimated while reading, exact once the input ends (before the engine's summary)."""

    last_index: int = -1

    def wanted(self, others: Callable[[int], bool] | None) -> Callable[[int], bool]:
        """A ``wanted`` predicate for :func:`.pipeline.reader.read_items` that sees every index."""
        def see(index: int) -> bool:
            self.last_index = index
            return others is None or others(index)
        return see

    def follow(self, items: Iterator[Item], at_end: Callable[[int], None]) -> Iterator[Item]:
        """``items``, then ``at_end(lines read)`` once they are exhausted."""
        yield from items
        at_end(self.last_index + 1)


@attrs.define
class BatchFiles:
    """The opened input (``source``: ``total_lines`` set when counted) and output (``output``)."""

    source: InputSource
    output: StagedOutput
    seen: LinesSeen = attrs.field(factory=LinesSeen)

    def writer(self, config: BatchConfig, mode: int) -> LineWriter | StdoutLines:
        """The output's writer: standard output's, else the (staging) file's, locked."""
        from ..outputs.writer import LineWriter

        if self.output.local_path is None:
            return StdoutLines()
        local_input = None if is_remote(config.input_data_path) or is_stdio(config.input_data_path) \
            else config.input_data_path
        return LineWriter(self.output.local_path, append=config.resume or config.retry_failed,
                          fsync_interval=config.fsync_interval, mode=mode, not_same_as=local_input)

    def input_lines(self) -> int | None:
        """The input's line count: exact when counted, else the estimate so far (None at first)."""
        if self.source.total_lines is not None:
            return self.source.total_lines
        return self.source.estimate_total(self.seen.last_index + 1)

    async def upload(self, reactor: Any, timeout: float) -> None:
        """Send a remote output's staging file (off the reactor thread, at most ``timeout`` s per
        call); a no-op for files and pipes."""
        await self.output.finish(reactor, timeout=timeout)

    def close(self) -> None:
        self.source.close()


def _needs_count(config: BatchConfig) -> bool:
    return config.resume or config.retry_failed


async def open_files(config: BatchConfig, reactor: Any,
                     open_source: Callable[..., InputSource] | None = None) -> BatchFiles:
    """Open the batch's input and prepare its output (a resume may download the object first).

    ``open_source(config, options, count=)`` opens an input that is not lines (a table), on a thread.

    Raises :class:`.paths.StorageError` (one line) when either cannot be used; nothing was sent.
    """
    options = parse_storage_options(config.storage_options)
    path = config.input_data_path
    if open_source is not None:
        source: InputSource = await deferToThreadPool(reactor, reactor.getThreadPool(), open_source,
                                                      config, options, count=_needs_count(config))
    elif is_remote(path) or is_stdio(path):
        source = await deferToThreadPool(reactor, reactor.getThreadPool(), open_input, path,
                                                      options, count=_needs_count(config))
    else:
        source = open_input(path, count=True)
    try:
        output = await open_output(config.output_data_path, reactor, config.staging_dir, options,
                                   resume=config.resume or config.retry_failed, timeout=config.storage_timeout)
    except BaseException:
        source.close()
        raise
    return BatchFiles(source, output)
