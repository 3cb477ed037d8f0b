"""Resuming into an existing output file: check it, repair it, find what is done, never redo or duplicate.

A killed run leaves whole lines and at most one torn last line (see :mod:`.writer`). Before a
resumed run appends to its (locked) output, :func:`prepare_resume` first reads the whole file
without changing it: every line must be one of ours (:func:`line_info`, the one reader of output
lines, also used by ``verify`` and ``merge``), every ``meta.tags.batch_index`` inside the input,
one ``batch_id``. Only a file that passes is changed: the torn tail is cut off (its first bytes go
to the log) and, for ``--retry-failed``, the file is rewritten without its error lines (a locked
temp file + rename, so a crash meanwhile leaves either the old or the new file, never half of
one). A refused file is left exactly as it was. Memory is a few bitmaps of one bit per input
line, whatever indexes the file claims, and a line is held only up to ``max_line_bytes``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

import attrs
import txaio

from .writer import OutputFile

txaio.use_twisted()
log = txaio.make_logger()  # type: ignore[attr-defined]

#: Longest output line read back: longer ones are unreadable, skipped without being held whole.
#: Four times the default --max-response-bytes, since re-encoding can grow an answer.
DEFAULT_MAX_LINE_BYTES = 256 << 20
#: Bytes of a line kept for messages (and of a torn tail for the log).
_HEAD = 1024
#: Problems named in a message; the rest are counted.
_MAX_NAMED = 10


class ResumeError(Exception):
    """The output file cannot be resumed as asked; the message says why and what to do."""


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

    The one reader of output lines (resume, ``verify``, ``merge``), so they all agree: the line
    is strict UTF-8 JSON (any depth, NUL or BOM is an error, never a crash), ``meta.tags.batch_index``
    is an ``int`` (not a float, not a bool; it may be negative or huge, callers check the range),
    and the line is an error line iff ``status`` is an object whose ``status`` is ``"FAILURE"``
    (the Seldon microservice's numeric ``status: 1`` belongs to a success).
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


def describe_index(index: int) -> str:
    """An index for a message: huge ones by their size, not their 4,000 digits."""
    return str(index) if abs(index) < 10**30 else f"<{len(str(abs(index)))}-digit number>"


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
        return self.long_head if self.data is None else self.data[:_HEAD]


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
            head, piece = data[:_HEAD], data
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


@attrs.define
class OutputScan:
    """Which indexes an output file holds, which of them as errors, and under which batch id."""

    total: int
    done: IndexBitmap = attrs.field(init=False)
    failed: IndexBitmap = attrs.field(init=False)
    duplicates: IndexBitmap = attrs.field(init=False)
    batch_id: str | None = None
    lines: int = 0
    failure_lines: int = 0
    bad_lines: list[int] = attrs.field(factory=list)
    bad_count: int = 0
    problems: list[str] = attrs.field(factory=list)
    #: (line number, index) of the first lines whose batch_index is outside the input.
    out_of_range: list[tuple[int, int]] = attrs.field(factory=list)
    out_of_range_count: int = 0
    other_batch_ids: set[str] = attrs.field(factory=set)
    torn: Line | None = None

    def __attrs_post_init__(self) -> None:
        self.done, self.failed, self.duplicates = (IndexBitmap(self.total) for _ in range(3))

    @property
    def succeeded(self) -> int:
        return self.done.count - self.failed.count

    def bad(self, number: int, why: str) -> None:
        self.bad_count += 1
        if len(self.bad_lines) < _MAX_NAMED:
            self.bad_lines.append(number)
            self.problems.append(f"line {number}: {why}")


def scan_stream(stream: BinaryIO, total: int, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> OutputScan:
    """Read every line of an output once, changing nothing; a last line without its newline is
    the torn tail of an interrupted write (``torn``) when it starts like one of our lines."""
    scan = OutputScan(total)
    for line in read_lines(stream, max_line_bytes):
        if not line.terminated:
            if line.head.startswith(b"{"):
                scan.torn = line
            else:
                scan.bad(line.number, "no newline at the end and not the start of an output line")
            break
        scan.lines += 1
        try:
            info = read_info(line, max_line_bytes)
        except ValueError as e:
            scan.bad(line.number, str(e))
            continue
        if not 0 <= info.index < total:
            scan.out_of_range_count += 1
            if len(scan.out_of_range) < _MAX_NAMED:
                scan.out_of_range.append((line.number, info.index))
            continue
        if info.batch_id is not None:
            if scan.batch_id is None:
                scan.batch_id = info.batch_id
            elif info.batch_id != scan.batch_id and len(scan.other_batch_ids) < _MAX_NAMED:
                scan.other_batch_ids.add(info.batch_id)
        if info.failed:
            scan.failure_lines += 1
        if not scan.done.add(info.index):
            scan.duplicates.add(info.index)
            if not info.failed:
                scan.failed.discard(info.index)  # a success wins over an earlier error line
        elif info.failed:
            scan.failed.add(info.index)
    return scan


def scan_output(path: str, total: int, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> OutputScan:
    """:func:`scan_stream` of the file at ``path`` (opened without following a link)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    with open(fd, "rb") as stream:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        return scan_stream(stream, total, max_line_bytes=max_line_bytes)


@attrs.define
class ResumeState:
    """What a resumed run starts from."""

    batch_id: str
    done: IndexBitmap
    succeeded: int
    failed: int
    torn: bytes = b""
    dropped_failures: int = 0

    def pending(self, index: int) -> bool:
        """The ``wanted`` predicate for the reader: lines without an output line yet."""
        return index not in self.done


def cut_torn_tail(output: OutputFile, torn: Line) -> bytes:
    """Truncate the locked output before its torn last line; the line's first bytes (for the log)."""
    output.truncate(torn.offset)
    output.fsync()
    shown = torn.head if torn.data is None else torn.data[:_HEAD]
    log.warn("output {path}: removed a torn last line of {size} bytes (an interrupted write); "
             "its line will be redone. Torn bytes{cut}: {torn!r}", path=output.path, size=torn.size,
             torn=shown, cut=" (first ones)" if len(shown) < torn.size else "")
    return shown


def drop_failure_lines(output: OutputFile, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> int:
    """Rewrite the locked ``output`` without its error lines, atomically; return how many were dropped.

    Written to a ``mkstemp`` file beside it (a new name, never following a planted link), which
    is locked *before* it is renamed over the output: re-opening and re-locking after the rename
    would leave a moment in which another run could lock the new file first, and rewriting in
    place through the locked descriptor would leave half a file after a crash. The output then
    adopts the new descriptor (see :meth:`OutputFile.replace_with`).
    """
    directory = os.path.dirname(os.path.abspath(output.path))
    base = os.path.basename(output.path)
    fd, temp = tempfile.mkstemp(prefix=f".{base[:100]}.", suffix=".retry-failed", dir=directory)
    adopted = False
    dropped = 0
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a file only we know of yet: never contended
        old = os.fstat(output.fd)
        os.fchmod(fd, stat.S_IMODE(old.st_mode))
        with contextlib.suppress(OSError):  # only root may give a file away; the mode still applies
            os.fchown(fd, old.st_uid, old.st_gid)
        with output.open_reader() as source, open(fd, "wb", buffering=1 << 20, closefd=False) as target:
            for line in read_lines(source, max_line_bytes):
                try:
                    failed = read_info(line, max_line_bytes).failed
                except ValueError:
                    failed = False
                if failed:
                    dropped += 1
                elif line.data is not None:
                    target.write(line.data)
            target.flush()
        os.fsync(fd)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
        output.replace_with(fd, temp)
        adopted = True
    finally:
        if not adopted:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
    _fsync_directory(directory)
    return dropped


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _refusal(path: str, scan: OutputScan) -> str | None:
    """Why ``scan`` cannot be resumed, or None."""
    if scan.bad_count:
        more = f" ({scan.bad_count} such lines)" if scan.bad_count > len(scan.bad_lines) else ""
        return (f"cannot resume {path}: it is not an output of this processor, or is damaged: "
                f"{'; '.join(scan.problems)}{more}")
    if scan.out_of_range_count:
        shown = ", ".join(f"line {n}: {describe_index(i)}" for n, i in scan.out_of_range)
        return (f"cannot resume {path}: {scan.out_of_range_count} lines have a batch_index outside the input's "
                f"lines 0..{scan.total - 1} ({shown}); was it written for another input?")
    if scan.other_batch_ids:
        return (f"cannot resume {path}: it holds lines of several batches ({scan.batch_id}, "
                f"{', '.join(sorted(scan.other_batch_ids))})")
    if scan.batch_id is None and scan.lines:
        return f"cannot resume {path}: its lines carry no meta.tags.batch_id"
    return None


def prepare_resume(output: OutputFile | str, batch_id: str | None, *, total: int, retry_failed: bool = False,
                   max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> ResumeState | None:
    """Make the locked ``output`` ready to append to; None when there is nothing to resume.

    ``total`` is the input's line count (indexes outside it are refused). ``batch_id`` is the
    one asked for on the command line (None if not given): it must match the file's, since the
    same line under another batch id would be another datapoint. A path instead of an
    :class:`OutputFile` is locked for the duration (a missing file is not created). Raises
    :class:`ResumeError` having changed nothing.
    """
    if isinstance(output, str):
        if not os.path.lexists(output):
            return None
        locked = OutputFile(output)
        try:
            return prepare_resume(locked, batch_id, total=total, retry_failed=retry_failed,
                                  max_line_bytes=max_line_bytes)
        finally:
            locked.close()
    path = output.path
    if output.size() == 0:
        return None
    with output.open_reader() as stream:  # first only read: a refused file keeps every byte
        scan = scan_stream(stream, total, max_line_bytes=max_line_bytes)
    refusal = _refusal(path, scan)
    if refusal is None and batch_id is not None and scan.batch_id is not None and batch_id != scan.batch_id:
        refusal = (f"cannot resume {path} with --batch-id {batch_id}: it was written with batch id "
                   f"{scan.batch_id} (omit --batch-id to reuse it)")
    if refusal is not None:
        raise ResumeError(refusal + "; nothing in it was changed")
    torn = cut_torn_tail(output, scan.torn) if scan.torn is not None else b""
    if scan.batch_id is None:
        return None  # at most a torn line: start afresh
    if scan.duplicates.count:
        log.warn("output {path}: {n} batch indexes appear more than once", path=path, n=scan.duplicates.count)
    dropped = 0
    succeeded, failed = scan.succeeded, scan.failed.count
    if retry_failed and scan.failure_lines:
        dropped = drop_failure_lines(output, max_line_bytes=max_line_bytes)
        for index in scan.failed:
            scan.done.discard(index)
        failed = 0
    state = ResumeState(scan.batch_id, scan.done, succeeded, failed, torn, dropped)
    log.info("resuming {path} (batch {batch_id}): {done} lines done ({failed} as errors), "
             "{dropped} error lines dropped for retry", path=path, batch_id=state.batch_id,
             done=scan.done.count, failed=failed, dropped=dropped)
    return state
