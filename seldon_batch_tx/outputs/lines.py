"""Reading output lines back: the one reader (:func:`line_info`) that resume, ``verify`` and
``merge`` share, the index bitmap they count with, and the ``0-4, 7`` range text they report.

One reader means one answer to every question an output line can raise: a float or boolean
``batch_index`` is not an index, and only ``status.status == "FAILURE"`` marks an error line (the
Seldon microservice's numeric ``status: 1`` belongs to a success). Lines are read in bounded
pieces and indexes are counted one bit per input line, so a hostile or huge output never costs
more memory than the input's line count.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Iterator
from typing import BinaryIO, NamedTuple

import attrs

#: Longest output line read back: longer ones are unreadable, skipped without being held whole.
#: Four times the default --max-response-bytes, since re-encoding can grow an answer.
DEFAULT_MAX_LINE_BYTES = 256 << 20
#: Bytes of a line kept for messages (and of a torn tail for the log).
HEAD_BYTES = 1024


class IndexBitmap:
    """A set of the ints ``0 <= i < size``, one bit each; never grows (``add`` refuses the rest)."""

    def __init__(self, size: int) -> None:
        self.size = max(size, 0)
        self._bits = bytearray((self.size + 7) // 8)
        self.count = 0

    def add(self, index: int) -> bool:
        """Set ``index``; False when it was already set; IndexError outside ``0..size-1``."""
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} outside 0..{self.size - 1}")
        byte, bit = divmod(index, 8)
        mask = 1 << bit
        if self._bits[byte] & mask:
            return False
        self._bits[byte] |= mask
        self.count += 1
        return True

    def discard(self, index: int) -> None:
        if index in self:
            byte, bit = divmod(index, 8)
            self._bits[byte] &= ~(1 << bit) & 0xFF
            self.count -= 1

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int) or not 0 <= index < self.size:
            return False
        byte, bit = divmod(index, 8)
        return bool(self._bits[byte] & (1 << bit))

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[int]:
        """The members in increasing order."""
        for byte, value in enumerate(self._bits):
            if value:
                for bit in range(8):
                    if value & (1 << bit):
                        yield byte * 8 + bit


@attrs.define
class LineInfo:
    """What one output line says about itself."""

    index: int
    batch_id: str | None
    failed: bool


def line_info(raw: bytes) -> LineInfo:
    """Decode one output line; ValueError (with why) when it is not one of ours.

    The line is strict UTF-8 JSON (any depth, NUL or BOM is an error, never a crash),
    ``meta.tags.batch_index`` is an ``int`` (not a float, not a bool; it may be negative or huge,
    callers check the range), and the line is an error line iff ``status`` is an object whose
    ``status`` is ``"FAILURE"``.
    """
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 (byte {e.start})") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except ValueError as e:
        raise ValueError(f"not JSON ({str(e)[:100]})") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    meta = record.get("meta")
    tags = meta.get("tags") if isinstance(meta, dict) else None
    if not isinstance(tags, dict):
        raise ValueError("no meta.tags object")
    index = tags.get("batch_index")
    if not isinstance(index, int) or isinstance(index, bool):
        raise ValueError(f"meta.tags.batch_index is not an integer ({_short(index)})")
    batch_id = tags.get("batch_id")
    status = record.get("status")
    failed = isinstance(status, dict) and status.get("status") == "FAILURE"
    return LineInfo(index, batch_id if isinstance(batch_id, str) else None, failed)


def _short(value: object) -> str:
    """A non-int JSON value for a message, never built whole (it may be huge or deeply nested)."""
    if isinstance(value, (list, dict)):
        return f"a JSON {'array' if isinstance(value, list) else 'object'}"
    if isinstance(value, str):
        return repr(value[:40]) + ("..." if len(value) > 40 else "")
    return repr(value)


class Line(NamedTuple):
    """One line of an output file as read back: ``data`` is None when it was too long to hold
    (then ``long_head`` keeps its first bytes). A tuple: millions are made per scan."""

    number: int
    offset: int
    size: int
    data: bytes | None
    terminated: bool
    long_head: bytes = b""

    @property
    def head(self) -> bytes:
        """The first bytes of the line, for messages and the torn-tail check."""
        return self.long_head if self.data is None else self.data[:HEAD_BYTES]


def read_lines(stream: BinaryIO, max_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[Line]:
    """The lines of ``stream`` with their numbers and offsets; a line longer than ``max_bytes``
    is read through in 1 MiB pieces and yielded without its data, so memory stays bounded."""
    number = offset = 0
    readline = stream.readline
    limit = max_bytes + 1
    while True:
        data = readline(limit)
        if not data:
            return
        number += 1
        size = len(data)
        if size < limit or data[-1] == 0x0A:
            yield Line(number, offset, size, data, data[-1] == 0x0A)
        else:  # longer than max_bytes: skip to its newline, never holding it whole
            head, piece = data[:HEAD_BYTES], data
            del data
            while piece[-1] != 0x0A:
                piece = readline(1 << 20)
                if not piece:
                    break
                size += len(piece)
            yield Line(number, offset, size, None, bool(piece) and piece[-1] == 0x0A, head)
        offset += size


def read_info(line: Line, max_bytes: int = DEFAULT_MAX_LINE_BYTES) -> LineInfo:
    """:func:`line_info` of a read line; ValueError for one too long to have been read."""
    if line.data is None:
        raise ValueError(f"longer than {max_bytes} bytes ({line.size} bytes)")
    return line_info(line.data)


def describe_index(index: int) -> str:
    """An index for a message: huge ones by their size, not their 4,000 digits."""
    return str(index) if abs(index) < 10**30 else f"<{len(str(abs(index)))}-digit number>"


def ranges(indexes: Iterable[int], limit: int = 20) -> str:
    """``0-4, 7, 9-12`` from indexes in increasing order, at most ``limit`` ranges then
    ``... (N more ranges)``; streams, so a bitmap of millions costs nothing extra."""
    spans: list[list[int]] = []
    extra = 0
    last: int | None = None
    for i in indexes:
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        elif len(spans) < limit and not extra:
            spans.append([i, i])
        elif last is None or i != last + 1:
            extra += 1
        last = i
    text = ", ".join(describe_index(a) if a == b else f"{describe_index(a)}-{describe_index(b)}" for a, b in spans)
    return text + (f" ... ({extra} more ranges)" if extra else "")


def outside_ranges(outside: Iterable[int], inside: Iterable[int] = ()) -> str:
    """Ranges of indexes a report did not expect, in numeric order: the ``outside`` ones (negative
    or past the input's end, in any order) around the ``inside`` ones (in order, e.g. a bitmap)."""
    ordered = sorted(set(outside))
    parts = [ranges(i for i in ordered if i < 0), ranges(inside), ranges(i for i in ordered if i >= 0)]
    return ", ".join(p for p in parts if p)


def open_regular(path: str) -> BinaryIO:
    """An output file opened for reading without following a link; OSError unless it is a regular
    file (a FIFO planted at its name is refused, never waited on)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
