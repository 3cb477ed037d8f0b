"""Output lines to the output file: whole lines only, flushed on a schedule.

Lines are collected in memory and written with one ``write`` of complete lines, so a crash
leaves at most one torn last line and everything before it valid. ``flush()`` runs every
``flush_interval`` seconds (driven by the caller's clock) and on close; ``fsync_interval``
additionally asks the OS to put the bytes on disk.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any


def compact_encoder(*, ensure_ascii: bool) -> Callable[[Any], str]:
    """A compact JSON encoder for records built from decoded JSON (never circular).

    ``JSONEncoder.encode`` sets up a new C encoder on every call, about half the cost of encoding
    a small record; this one is set up once (same output, same errors), and skips the
    circular-reference check.
    """
    encoder = json.JSONEncoder(ensure_ascii=ensure_ascii, separators=(",", ":"), check_circular=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator: the plain encoder
        return encoder.encode
    strings = json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring
    c_encode = make(None, encoder.default, strings, None, ":", ",", False, False, True)
    return lambda record: "".join(c_encode(record, 0))


_dumps = compact_encoder(ensure_ascii=False)


class LineWriter:
    """Appends JSON lines to a file it owns."""

    def __init__(self, path: str, *, append: bool = False, fsync_interval: float | None = None,
                 max_buffered: int = 1 << 16) -> None:
        self.path = path
        self._file = open(path, "ab" if append else "wb")  # noqa: SIM115 - closed in close()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._max_buffered = max_buffered
        self._fsync_interval = fsync_interval
        self._last_fsync = 0.0
        self.lines_written = 0

    def write(self, record: dict[str, Any]) -> None:
        """Queue one output line; written out at the next flush (or when the buffer is full)."""
        data = (_dumps(record) + "\n").encode("utf-8")
        self._buffer.append(data)
        self._buffered += len(data)
        self.lines_written += 1
        if self._buffered >= self._max_buffered:
            self.flush()

    def flush(self, now: float | None = None) -> None:
        """Write whole buffered lines; fsync when the interval has passed."""
        if self._buffer:
            self._file.write(b"".join(self._buffer))
            self._buffer.clear()
            self._buffered = 0
            self._file.flush()
        if self._fsync_interval is not None and now is not None \
                and now - self._last_fsync >= self._fsync_interval:
            os.fsync(self._file.fileno())
            self._last_fsync = now

    def close(self) -> None:
        if self._file.closed:
            return
        self.flush()
        if self._fsync_interval is not None:
            os.fsync(self._file.fileno())
        self._file.close()
