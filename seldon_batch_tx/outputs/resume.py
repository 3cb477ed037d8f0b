"""Resuming into an existing output file: check it, repair it, find what is done, never redo or duplicate.

A killed run leaves whole lines and at most one torn last line (see :mod:`.writer`). Before a
resumed run appends to its (locked) output, :func:`prepare_resume` first reads the whole file
without changing it: every line must be one of ours (:func:`.lines.line_info`, the one reader of
output lines, also used by ``verify`` and ``merge``), every ``meta.tags.batch_index`` inside the input,
one ``batch_id``. Only a file that passes is changed: the torn tail is cut off (its first bytes go
to the log) and, for ``--retry-failed``, the file is rewritten without its error lines (a locked
temp file + rename, so a crash meanwhile leaves either the old or the new file, never half of
one). A refused file is left exactly as it was. Memory is a few bitmaps of one bit per input
line, whatever indexes the file claims, and a line is held only up to ``max_line_bytes``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import stat
import tempfile
from typing import BinaryIO

import attrs
import txaio

from .lines import (
    DEFAULT_MAX_LINE_BYTES,
    IndexBitmap,
    Line,
    describe_index,
    open_regular,
    read_info,
    read_lines,
)
from .writer import OutputFile

txaio.use_twisted()
log = txaio.make_logger()  # type: ignore[attr-defined]

#: Problems named in a message; the rest are counted.
_MAX_NAMED = 10


class ResumeError(Exception):
    """The output file cannot be resumed as asked; the message says why and what to do."""


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
            if _torn(line, max_line_bytes):
                scan.torn = line
            else:
                scan.bad(line.number, "no newline at the end and not an interrupted output line")
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


def _torn(line: Line, max_line_bytes: int) -> bool:
    """Whether an unterminated last line is an interrupted write of ours: it starts like an output
    line and is either cut short (not JSON) or one of our lines whose newline was not written. A
    whole JSON value that is not an output line (``json.dump`` writes no newline) is someone else's."""
    if not line.head.startswith(b"{"):
        return False
    if line.data is None:
        return True  # too long to hold: cut short by the limit, not a value to judge
    try:
        json.loads(line.data)
    except (ValueError, RecursionError):
        return True
    try:
        read_info(line, max_line_bytes)
    except ValueError:
        return False
    return True


def scan_output(path: str, total: int, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> OutputScan:
    """:func:`scan_stream` of the file at ``path`` (opened without following a link)."""
    with open_regular(path) as stream:
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
    shown = torn.head
    log.warn("output {path}: removed a torn last line of {size} bytes (an interrupted write); "
             "its line will be redone. Torn bytes{cut}: {torn!r}", path=output.path, size=torn.size,
             torn=shown, cut=" (first ones)" if len(shown) < torn.size else "")
    return shown


#: The end of a ``--retry-failed`` rewrite's temp file name.
TEMP_SUFFIX = ".retry-failed"


def temp_prefix(path: str) -> str:
    """The start of the temp file names of ``path``'s rewrites: a hash of the whole name, so the
    temp files of one output are found without touching another's (long names share a start)."""
    base = os.path.basename(path)
    digest = hashlib.sha256(base.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return f".{base[:80]}.{digest}."


def remove_stale_temps(output: OutputFile) -> int:
    """Remove the temp files a killed ``--retry-failed`` left beside the locked ``output`` (its own
    regular files only: the lock says no rewrite of it runs now); how many went."""
    directory = os.path.dirname(os.path.abspath(output.path))
    prefix, removed = temp_prefix(output.path), 0
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            if not (entry.name.startswith(prefix) and entry.name.endswith(TEMP_SUFFIX)):
                continue
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_uid == os.geteuid():
                    os.unlink(entry.path)
                    removed += 1
    if removed:
        log.info("output {path}: removed {n} temp files of an interrupted --retry-failed", path=output.path,
                 n=removed)
    return removed


def drop_failure_lines(output: OutputFile, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> int:
    """Rewrite the locked ``output`` without its error lines, atomically; return how many were dropped.

    Written to a ``mkstemp`` file beside it (a new name, never following a planted link), which
    is locked *before* it is renamed over the output: re-opening and re-locking after the rename
    would leave a moment in which another run could lock the new file first, and rewriting in
    place through the locked descriptor would leave half a file after a crash. The output then
    adopts the new descriptor (see :meth:`OutputFile.replace_with`).
    """
    directory = os.path.dirname(os.path.abspath(output.path))
    fd, temp = tempfile.mkstemp(prefix=temp_prefix(output.path), suffix=TEMP_SUFFIX, dir=directory)
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
    remove_stale_temps(output)
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
