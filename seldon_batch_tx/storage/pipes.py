"""``-o -``: output lines streamed to standard output for Unix pipelines.

:class:`StdoutLines` has LineWriter's surface (``write``, ``flush``, ``close``,
``lines_written``, ``closed``) so the engine writes to it unchanged, with the same flush policy
(whole lines, at least every second and every 64 KB). There is no file to lock, read back or
resume: ``--resume`` with ``-o -`` is refused before the run (:func:`.staging.stage_output`).
The summary and logs must then go to standard error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, BinaryIO


def _compact(record: Any) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class StdoutLines:
    """JSON lines to a binary stream (standard output by default), flushed in whole lines."""

    path = "-"

    def __init__(self, stream: BinaryIO | None = None, *, encode: Callable[[Any], str] = _compact,
                 max_buffered: int = 1 << 16) -> None:
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._encode = encode
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._max_buffered = max_buffered
        self.closed = False
        self.lines_written = 0

    def write(self, record: dict[str, Any]) -> None:
        """Queue one output line; written at the next flush or when 64 KB are buffered."""
        data = (self._encode(record) + "\n").encode("utf-8")
        self._buffer.append(data)
        self._buffered += len(data)
        self.lines_written += 1
        if self._buffered >= self._max_buffered:
            self.flush()

    def flush(self, now: float | None = None) -> None:
        """Write the buffered lines (a reader that went away raises BrokenPipeError, an OSError,
        which the engine treats as an output that cannot be written: exit 3)."""
        if not self._buffer:
            return
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        self._stream.write(data)
        self._stream.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.flush()
