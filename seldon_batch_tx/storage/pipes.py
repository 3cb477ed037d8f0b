"""``-o -``: output lines streamed to standard output for Unix pipelines.

:class:`StdoutLines` is a :class:`.outputs.writer.LineBuffer` (the flush policy every output
shares: whole lines, at least every second and every 64 KB) writing to a stream instead of a
locked file. There is no file to lock, read back or resume: ``--resume`` with ``-o -`` is
refused before the run (:func:`.access.preflight`). The summary and logs then go to standard
error.
"""

from __future__ import annotations

import sys
from typing import BinaryIO

from ..outputs.writer import LineBuffer


class StdoutLines(LineBuffer):
    """JSON lines to a binary stream (standard output by default), flushed in whole lines."""

    path = "-"

    def __init__(self, stream: BinaryIO | None = None, *, max_buffered: int = 1 << 16) -> None:
        super().__init__(max_buffered)
        self._stream = stream if stream is not None else sys.stdout.buffer

    def flush(self, now: float | None = None) -> None:
        """Write the buffered lines (a reader that went away raises BrokenPipeError, an OSError,
        which the engine treats as an output that cannot be written: exit 3)."""
        data = self.take()
        if not data:
            return
        self._stream.write(data)
        self._stream.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.flush()
