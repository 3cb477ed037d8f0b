"""A run's output lines written and counted in one place, which never raises.

Every output line of a run passes :meth:`Emitter.emit`: its record is written, then counted as
succeeded or failed (``--max-failures`` may stop the run there). A record the writer cannot encode
(nested too deeply, a lone surrogate...) is replaced by an error line; an output that cannot be
written (disk full, I/O error) stops the run (exit 3) and nothing more is written, so the lines
not written stay for ``--resume`` instead of being lost silently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import txaio
from twisted.logger import LogLevel

from ..config import BatchConfig
from ..core.items import Item
from ..outputs.writer import LineWriter
from ..protocols.base import Codec
from .stats import BatchStats
from .summary import describe

txaio.use_twisted()
log = txaio.make_logger()

Record = dict[str, Any]
#: One output line ready to be written: its item, its record, and for an error line its kind and
#: reason (``None`` and ``""`` for an answer). Counted as succeeded or failed only once written.
Line = tuple[Item, Record, "str | None", str]


class Emitter:
    """Writes a run's output lines through its writer and counts them in its stats."""

    def __init__(self, config: BatchConfig, codec: Codec, writer: LineWriter, stats: BatchStats,
                 stop: Callable[[str], None]) -> None:
        self._config = config
        self._codec = codec
        self._writer = writer
        self._stats = stats
        self._stop = stop
        #: The error that made the output unwritable; once set, nothing more is written.
        self.write_error: OSError | None = None

    def error_line(self, item: Item, reason: str, kind: str, *, code: int | None = None,
                   own_tags: dict[str, Any] | None = None) -> Line:
        """The error line for ``item`` (counted when written)."""
        return item, self._codec.error(item, reason, info=kind, code=code, own_tags=own_tags), kind, reason

    def emit(self, line: Line) -> None:
        """Write one output line and count it; never raises, so no caller can lose lines to it."""
        if self.write_error is not None:
            return  # the output is broken: the line stays unwritten and uncounted, for --resume
        item, record, kind, reason = line
        try:
            self._writer.write(record)
            if kind is None:
                self._stats.succeeded += 1
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
                self._writer.write(self._codec.error(item, reason, info=kind))
            except OSError as e2:
                self._count(item, kind, reason)
                self.output_failed(e2)
                return
            except Exception as e2:  # noqa: BLE001 - a bug in error lines themselves: stop, never hide
                log.failure("batch {batch_id}: cannot write the error line of line {index}",
                            batch_id=self._config.batch_id, index=item.index, level=LogLevel.error)
                self._stop(f"internal error writing line {item.index}: {describe(e2)}")
                return
        self._count(item, kind, reason)

    def _count(self, item: Item, kind: str | None, reason: str) -> None:
        stats = self._stats
        if kind is None:
            stats.succeeded += 1
            return
        stats.record_error(kind, item.index, reason)
        limit = self._config.max_failures
        if limit is not None and stats.failed >= limit:
            self._stop(f"{stats.failed} lines failed (--max-failures {limit})")

    def output_failed(self, error: OSError) -> None:
        """The output cannot take more lines: stop the run, naming the error (exit 3)."""
        if self.write_error is None:
            self.write_error = error
            log.error("batch {batch_id}: cannot write {path}: {error}", batch_id=self._config.batch_id,
                      path=self._writer.path, error=describe(error))
        self._stop(f"cannot write the output {self._writer.path}: {describe(error)}")
