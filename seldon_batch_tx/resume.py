"""Resuming into an existing output file: repair it, find what is done, never redo or duplicate.

A killed run leaves whole lines and at most one torn last line (see :mod:`.writer`). Before a
resumed run appends, :func:`prepare_resume` cuts the torn tail off (its bytes go to the log),
reads every line's ``meta.tags.batch_index`` into a bitmap (one bit per input line, so ten
million lines cost a few megabytes), checks the ``batch_id`` the file was written with and, for
``--retry-failed``, rewrites the file without its error lines (temp file + rename, so a crash
meanwhile leaves either the old or the new file, never half of one).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import attrs
import txaio

txaio.use_twisted()
log = txaio.make_logger()  # type: ignore[attr-defined]

_TAIL_CHUNK = 1 << 16


class ResumeError(Exception):
    """The output file cannot be resumed as asked; the message says why and what to do."""


class IndexBitmap:
    """A growable set of non-negative ints, one bit each."""

    def __init__(self, size_hint: int = 0) -> None:
        self._bits = bytearray((size_hint + 7) // 8)
        self.count = 0

    def add(self, index: int) -> bool:
        """Set ``index``; False when it was already set."""
        byte, bit = divmod(index, 8)
        if byte >= len(self._bits):
            self._bits.extend(bytes(max(byte + 1 - len(self._bits), len(self._bits))))
        mask = 1 << bit
        if self._bits[byte] & mask:
            return False
        self._bits[byte] |= mask
        self.count += 1
        return True

    def discard(self, index: int) -> None:
        byte, bit = divmod(index, 8)
        if byte < len(self._bits) and self._bits[byte] & (1 << bit):
            self._bits[byte] &= ~(1 << bit) & 0xFF
            self.count -= 1

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int) or index < 0:
            return False
        byte, bit = divmod(index, 8)
        return byte < len(self._bits) and bool(self._bits[byte] & (1 << bit))

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[int]:
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
    """Decode one output line; ValueError when it is not one of ours."""
    record = json.loads(raw)
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    meta = record.get("meta")
    tags = meta.get("tags") if isinstance(meta, dict) else None
    index = tags.get("batch_index") if isinstance(tags, dict) else None
    if isinstance(index, float) and index.is_integer():
        index = int(index)
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ValueError("no integer meta.tags.batch_index")
    assert isinstance(tags, dict)
    batch_id = tags.get("batch_id")
    status = record.get("status")
    failed = isinstance(status, dict) and status.get("status") in ("FAILURE", 1)
    return LineInfo(index, batch_id if isinstance(batch_id, str) else None, failed)


def repair_torn_tail(path: str) -> bytes:
    """Truncate ``path`` after its last newline; return the bytes cut off (empty if none)."""
    with open(path, "r+b") as f:
        end = f.seek(0, os.SEEK_END)
        position = end
        while position > 0:
            start = max(position - _TAIL_CHUNK, 0)
            f.seek(start)
            chunk = f.read(position - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                cut = start + newline + 1
                break
            position = start
        else:
            cut = 0
        if cut == end:
            return b""
        f.seek(cut)
        torn = f.read()
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())
    log.warn("output {path}: removed a torn last line of {size} bytes (an interrupted write); "
             "its line will be redone. Torn bytes: {torn!r}", path=path, size=len(torn), torn=torn)
    return torn


@attrs.define
class OutputScan:
    """Which indexes an output file holds, which of them as errors, and under which batch id."""

    done: IndexBitmap = attrs.field(factory=IndexBitmap)
    failed: IndexBitmap = attrs.field(factory=IndexBitmap)
    duplicates: IndexBitmap = attrs.field(factory=IndexBitmap)
    batch_id: str | None = None
    lines: int = 0
    failure_lines: int = 0
    bad_lines: list[int] = attrs.field(factory=list)
    other_batch_ids: set[str] = attrs.field(factory=set)

    @property
    def succeeded(self) -> int:
        return self.done.count - self.failed.count


def scan_output(path: str, size_hint: int = 0, *, max_bad: int = 20) -> OutputScan:
    """Read every line of an output file once; lines not ours are listed (by number) in ``bad_lines``."""
    scan = OutputScan(IndexBitmap(size_hint), IndexBitmap(size_hint), IndexBitmap())
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            scan.lines += 1
            try:
                info = line_info(raw)
            except ValueError:
                if len(scan.bad_lines) < max_bad:
                    scan.bad_lines.append(number)
                continue
            if info.batch_id is not None:
                if scan.batch_id is None:
                    scan.batch_id = info.batch_id
                elif info.batch_id != scan.batch_id and len(scan.other_batch_ids) < max_bad:
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


def drop_failure_lines(path: str) -> int:
    """Rewrite ``path`` without its error lines, atomically; return how many were dropped."""
    directory = os.path.dirname(os.path.abspath(path))
    temp = os.path.join(directory, f".{os.path.basename(path)}.retry-failed.tmp")
    dropped = 0
    try:
        with open(path, "rb") as source, open(temp, "wb") as target:
            for raw in source:
                try:
                    failed = line_info(raw).failed
                except ValueError:
                    failed = False
                if failed:
                    dropped += 1
                else:
                    target.write(raw)
            target.flush()
            os.fsync(target.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    _fsync_directory(directory)
    return dropped


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prepare_resume(path: str, batch_id: str | None, *, retry_failed: bool = False,
                   size_hint: int = 0) -> ResumeState | None:
    """Make ``path`` ready to append to; None when there is nothing to resume (no or empty file).

    ``batch_id`` is the one asked for on the command line (None if not given): it must match the
    file's, since the same line under another batch id would be another datapoint.
    """
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return None
    torn = repair_torn_tail(path)
    scan = scan_output(path, size_hint)
    if scan.bad_lines:
        raise ResumeError(f"cannot resume {path}: line(s) {', '.join(map(str, scan.bad_lines))} are not "
                          f"output lines of this processor (JSON with meta.tags.batch_index)")
    if scan.other_batch_ids:
        raise ResumeError(f"cannot resume {path}: it holds lines of several batches ({scan.batch_id}, "
                          f"{', '.join(sorted(scan.other_batch_ids))})")
    if scan.batch_id is None:
        if scan.lines:
            raise ResumeError(f"cannot resume {path}: its lines carry no meta.tags.batch_id")
        return None
    if batch_id is not None and batch_id != scan.batch_id:
        raise ResumeError(f"cannot resume {path} with --batch-id {batch_id}: it was written with batch id "
                          f"{scan.batch_id} (omit --batch-id to reuse it)")
    if scan.duplicates.count:
        log.warn("output {path}: {n} batch indexes appear more than once", path=path, n=scan.duplicates.count)
    dropped = 0
    succeeded, failed = scan.succeeded, scan.failed.count
    if retry_failed and scan.failure_lines:
        dropped = drop_failure_lines(path)
        for index in scan.failed:
            scan.done.discard(index)
        failed = 0
    state = ResumeState(scan.batch_id, scan.done, succeeded, failed, torn, dropped)
    log.info("resuming {path} (batch {batch_id}): {done} lines done ({failed} as errors), "
             "{dropped} error lines dropped for retry", path=path, batch_id=state.batch_id,
             done=scan.done.count, failed=failed, dropped=dropped)
    return state
