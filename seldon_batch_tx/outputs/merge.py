"""``seldon-batch merge``: shard outputs -> one output file in ``batch_index`` order.

Shard outputs are in completion order, not ``batch_index`` order, and may be far larger than
memory. Pass 1 reads each shard once and records, per ``batch_index``, which file and byte
offset holds its line: two flat arrays of about 10 bytes a line, never the lines themselves.
Missing, duplicated or out-of-range indexes fail the merge before any output exists. Pass 2
copies the lines byte for byte in index order, seeking into the shards; lines finish roughly
in order, so most seeks land inside the read buffer. The output is written to a temporary file
beside it and renamed into place, so a reader never sees half a merge.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import tempfile
from array import array
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

import attrs

from ..exits import EXIT_FAILED_LINES, EXIT_OK, EXIT_STOPPED, EXIT_USAGE
from ..storage import StorageError, StorageUnavailable, check_access, display, expected_lines, merge_paths
from ..storage.reading import count_local_lines
from ..storage.tools import add_storage_argument, tool_storage_options
from .lines import DEFAULT_MAX_LINE_BYTES, IndexBitmap, outside_ranges, ranges, read_info, read_lines

PROG = "seldon-batch merge"
#: The shard outputs do not add up to one complete output (the run's "lines missing" status).
EXIT_INVALID = EXIT_FAILED_LINES
#: At most this many bad-line messages are kept; the rest are only counted.
MAX_PROBLEMS = 10
#: --expected may exceed the lines the shards hold by at most this much before we refuse to
#: allocate an index for it (every extra expected line is a missing line anyway).
MAX_EXCESS = 10_000_000
_NOWHERE = -1


class MergeError(Exception):
    """The shard outputs do not add up to one complete output; nothing was written."""


@attrs.define
class ShardIndex:
    """Where each ``batch_index`` lives: file number and byte offset (``-1``: not seen yet)."""

    paths: list[str]
    total: int
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    offsets: array = attrs.field(init=False)  # type: ignore[type-arg]
    files: array = attrs.field(init=False)  # type: ignore[type-arg]
    duplicates: IndexBitmap = attrs.field(init=False)
    duplicate_lines: int = 0
    #: Indexes outside ``0..total-1`` (any size, even negative): the first ones and how many lines.
    out_of_range: list[int] = attrs.field(factory=list)
    out_of_range_count: int = 0
    problems: list[str] = attrs.field(factory=list)
    bad_lines: int = 0
    failures: int = 0

    def __attrs_post_init__(self) -> None:
        self.offsets = array("q", [_NOWHERE]) * self.total
        self.files = array("H", [0]) * self.total
        self.duplicates = IndexBitmap(self.total)

    def scan(self, number: int, stream: BinaryIO) -> None:
        """Record every line of shard ``number``; a hostile line is a problem, never a crash."""
        for line in read_lines(stream, self.max_line_bytes):
            try:
                info = read_info(line, self.max_line_bytes)
            except ValueError as e:
                self.bad_lines += 1
                if len(self.problems) < MAX_PROBLEMS:
                    torn = "" if line.terminated else " (a torn last line?)"
                    self.problems.append(f"{self.paths[number]} line {line.number}: {e}{torn}")
                continue
            index = info.index
            if not 0 <= index < self.total:
                self.out_of_range_count += 1
                if len(self.out_of_range) < MAX_PROBLEMS * 100:
                    self.out_of_range.append(index)
            elif self.offsets[index] != _NOWHERE:
                self.duplicate_lines += 1
                self.duplicates.add(index)
            else:
                self.offsets[index] = line.offset
                self.files[index] = number
                self.failures += info.failed

    def missing(self) -> Iterator[int]:
        offsets = self.offsets
        return (i for i in range(self.total) if offsets[i] == _NOWHERE)

    def check(self, total_source: str) -> None:
        """Raise :class:`MergeError` naming every kind of hole or overlap found."""
        errors = list(self.problems)
        if self.bad_lines > len(self.problems):
            errors.append(f"... {self.bad_lines - len(self.problems)} more unreadable lines")
        if self.out_of_range_count:
            errors.append(f"{self.out_of_range_count} lines have a batch_index outside 0..{self.total - 1} "
                          f"({total_source}): {outside_ranges(self.out_of_range)}")
        if self.duplicate_lines:
            errors.append(f"{self.duplicate_lines} duplicated lines, batch_index {ranges(self.duplicates)}")
        missing = sum(1 for _ in self.missing())
        if missing:
            errors.append(f"{missing} missing lines, batch_index {ranges(self.missing())}")
        if errors:
            raise MergeError("; ".join(errors))

    def write(self, out: BinaryIO, streams: Sequence[BinaryIO]) -> None:
        """Copy the lines in ``batch_index`` order, each exactly as its shard holds it."""
        offsets, files = self.offsets, self.files
        for index in range(self.total):
            stream = streams[files[index]]
            stream.seek(offsets[index])
            line = stream.readline(self.max_line_bytes + 1)
            out.write(line if line.endswith(b"\n") else line + b"\n")


def merge(paths: Sequence[str], output: str, expected: int | None = None,
          expected_source: str = "--expected", names: Sequence[str] | None = None) -> ShardIndex:
    """Merge ``paths`` into ``output`` or raise :class:`MergeError` (and write nothing); messages
    call the shards ``names`` (their URLs, when ``paths`` are local copies)."""
    if len(paths) > 0xFFFF:
        raise MergeError(f"at most {0xFFFF} shard outputs can be merged at once")
    if any(_same_path(p, output) for p in paths):
        raise MergeError(f"the output {output!r} is also a shard output")
    held = sum(count_local_lines(p) for p in paths)
    if expected is None:
        # With every line present exactly once, the shards hold exactly `total` lines, so any
        # index beyond what they hold already proves a hole or a duplicate.
        total, source = held, "the number of lines the shards hold; pass --expected or --input to check the total"
    else:
        if expected > held + MAX_EXCESS:
            raise MergeError(f"{expected_source} says {expected} lines but the shards hold only {held}")
        total, source = expected, expected_source
    index = ShardIndex(list(names or paths), total)
    for number, path in enumerate(paths):
        with open(path, "rb") as stream:
            index.scan(number, stream)
    index.check(source)
    directory = os.path.dirname(os.path.abspath(output))
    fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(output)[:100]}.", suffix=".merging", dir=directory)
    try:
        os.fchmod(fd, _output_mode(output))
        with os.fdopen(fd, "wb", buffering=1 << 20) as out:
            streams = [open(p, "rb", buffering=1 << 16) for p in paths]  # noqa: SIM115 - closed below
            try:
                index.write(out, streams)
            finally:
                for s in streams:
                    s.close()
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, output)
    except BaseException:
        os.unlink(temp)
        raise
    return index


def _same_path(a: str, b: str) -> bool:
    """Whether two paths name one file (also through links), or the same path when one is missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _output_mode(output: str) -> int:
    """The merged file's permissions: those of the file it replaces, else what a plain create gives
    (``mkstemp`` makes it owner-only)."""
    try:
        return stat.S_IMODE(os.stat(output).st_mode)
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Combine the outputs of sharded runs (--shard-index/--shard-count) into one file in "
                    "batch_index order. Fails, writing nothing, when a line is missing or duplicated. "
                    "Give the input's line count (--expected or --input) to also catch missing last lines; "
                    "without it the total is taken to be the number of lines the shards hold.")
    parser.add_argument("-o", "--output", required=True, help="the merged output file (written atomically) or "
                        "s3:// / fsspec URL (uploaded once merged)")
    total = parser.add_mutually_exclusive_group()
    total.add_argument("--expected", type=int, metavar="N", help="the input had N lines (batch_index 0..N-1)")
    total.add_argument("--input", metavar="INPUT", help="the input file or URL the shards processed (its lines "
                       "are counted)")
    parser.add_argument("shards", nargs="+", metavar="SHARD_OUTPUT", help="the output files (or URLs) of the shards")
    add_storage_argument(parser)
    return parser


def main(argv: Sequence[str]) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as e:
        return EXIT_OK if e.code == 0 else EXIT_USAGE
    if args.expected is not None and args.expected < 0:
        print(f"{PROG}: error: --expected must not be negative", file=sys.stderr)
        return EXIT_USAGE
    try:
        storage = tool_storage_options(args.storage_options)
        for path, for_write in [*((s, False) for s in [*args.shards, *([args.input] if args.input else [])]),
                                (args.output, True)]:
            problem = check_access(path, storage, for_write)
            if problem is not None:
                raise StorageError(problem)
        expected, source = args.expected, "--expected"
        if args.input:
            expected, source = expected_lines(args.input, storage), f"the {display(args.input)!r} line count"
        index = _merge_anywhere(args.shards, args.output, expected, source, storage)
    except StorageUnavailable as e:  # the store failed midway: nothing published, run it again
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_STOPPED
    except StorageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except MergeError as e:
        print(f"{PROG}: error: {e}; nothing written", file=sys.stderr)
        return EXIT_INVALID
    except OSError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_INVALID
    print(f"merged {index.total} lines ({index.total - index.failures} succeeded, {index.failures} failed) "
          f"from {len(args.shards)} shard outputs into {display(args.output)}", file=sys.stderr)
    return EXIT_OK


def _merge_anywhere(shards: Sequence[str], output: str, expected: int | None, source: str,
                    storage: dict[str, Any]) -> ShardIndex:
    """:func:`merge` on files or URLs: remote shards are copied locally, a remote output is uploaded
    once merged (only when the merge succeeded: the object appears whole or not at all)."""
    if output in shards:
        raise MergeError(f"the output {display(output)!r} is also a shard output")
    with merge_paths(shards, output, storage) as local:
        return merge(local.shards, local.output, expected, source, names=[display(s) for s in shards])
