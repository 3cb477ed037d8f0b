"""``seldon-batch verify INPUT OUTPUT``: is every input line (a table's row) in the output exactly once?

Checks an output against its input by ``meta.tags.batch_index`` alone (order does not matter)
and reports, as compact ranges, the indexes that are missing, duplicated, out of range and
failed (error lines), plus lines that are not output lines at all (e.g. a torn last line, or
anything :func:`.lines.line_info` cannot read: not UTF-8, not JSON, nested too deeply, too
long). Memory is a few bitmaps of one bit per input line, whatever the output claims.

Exit status, with the run's own codes (:mod:`seldon_batch_tx.exits`): 0 complete without error lines; 1 lines missing,
duplicated, unexpected or unreadable, or complete but some lines are error lines
(``--allow-failed`` turns only the latter into 0, so ``--allow-failed`` checks completeness
alone); 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

import attrs

from ..exits import EXIT_FAILED_LINES, EXIT_OK, EXIT_USAGE
from ..storage import StorageError, check_access, expected_lines, open_input
from ..storage.tools import add_storage_argument, tool_storage_options
from .lines import DEFAULT_MAX_LINE_BYTES, IndexBitmap, outside_ranges, ranges, read_info, read_lines

__all__ = ["EXIT_COMPLETE", "EXIT_FAILED_LINES", "EXIT_INCOMPLETE", "EXIT_USAGE", "Report", "main", "ranges",
           "verify"]

#: The run's statuses: complete is ``EXIT_OK``; an output that is not complete is not all
#: successes either, ``EXIT_FAILED_LINES`` (``--allow-failed`` keeps it 1 while error lines become 0).
EXIT_COMPLETE, EXIT_INCOMPLETE = EXIT_OK, EXIT_FAILED_LINES
#: Out-of-range indexes and unreadable line numbers kept for the report; the rest are counted.
_KEPT = 1000
#: ``(input, --input-format, storage options)`` -> a table input's data rows, None for a JSON-lines one; given
#: by ``seldon-batch`` (:mod:`seldon_batch_tx.tools`: tables stand above this layer).
TableRows = Callable[[str, "str | None", "dict[str, Any] | None"], "int | None"]


@attrs.frozen
class Missing:
    """The indexes a report misses: sized and iterable like a list, without holding one."""

    report: Report

    def __len__(self) -> int:
        return self.report.missing_count

    def __bool__(self) -> bool:
        return self.report.missing_count > 0

    def __iter__(self) -> Iterator[int]:
        r = self.report
        return (i for i in range(r.shard_index, r.total, r.shard_count) if i not in r.seen)


@attrs.define
class Report:
    """What an output holds compared with the lines of its input one shard owns."""

    total: int
    shard_index: int = 0
    shard_count: int = 1
    lines: int = 0
    seen: IndexBitmap = attrs.field(init=False)
    duplicated: IndexBitmap = attrs.field(init=False)
    failed: IndexBitmap = attrs.field(init=False)
    #: Indexes of the input that belong to other shards.
    unexpected: IndexBitmap = attrs.field(init=False)
    #: Indexes outside the input (negative or past its end): the first ones and how many lines.
    out_of_range: list[int] = attrs.field(factory=list)
    out_of_range_count: int = 0
    unreadable: list[int] = attrs.field(factory=list)
    unreadable_count: int = 0
    #: The first unreadable lines with why: ``line N: reason``.
    unreadable_reasons: list[str] = attrs.field(factory=list)
    batch_ids: set[str] = attrs.field(factory=set)

    def __attrs_post_init__(self) -> None:
        self.seen, self.duplicated, self.failed, self.unexpected = (IndexBitmap(self.total) for _ in range(4))

    @property
    def expected(self) -> int:
        return len(range(self.shard_index, self.total, self.shard_count))

    @property
    def missing_count(self) -> int:
        return self.expected - self.seen.count

    @property
    def missing(self) -> Missing:
        """The shard's indexes without an output line, in order (computed, never stored)."""
        return Missing(self)

    @property
    def unexpected_count(self) -> int:
        return self.unexpected.count + self.out_of_range_count

    def unexpected_ranges(self) -> str:
        return outside_ranges(self.out_of_range, self.unexpected)

    @property
    def complete(self) -> bool:
        return not (self.missing_count or self.duplicated.count or self.unexpected_count or self.unreadable_count
                    or len(self.batch_ids) > 1)

    def exit_code(self, allow_failed: bool = False) -> int:
        if not self.complete:
            return EXIT_INCOMPLETE
        return EXIT_FAILED_LINES if self.failed.count and not allow_failed else EXIT_COMPLETE

    def as_dict(self) -> dict[str, Any]:
        return {
            "expected": self.expected, "lines": self.lines, "complete": self.complete,
            "missing": self.missing_count, "missing_ranges": ranges(self.missing),
            "duplicated": self.duplicated.count, "duplicated_ranges": ranges(self.duplicated),
            "failed": self.failed.count, "failed_ranges": ranges(self.failed),
            "unexpected": self.unexpected_count, "unexpected_ranges": self.unexpected_ranges(),
            "unreadable": self.unreadable_count, "unreadable_lines": ranges(self.unreadable),
            "unreadable_reasons": self.unreadable_reasons[:10],
            "batch_ids": sorted(self.batch_ids),
        }


def verify(input_path: str, output_path: str, shard_index: int = 0, shard_count: int = 1, *,
           max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, storage: dict[str, Any] | None = None,
           total: int | None = None) -> Report:
    """Compare ``output_path`` with the lines (a table: rows) of ``input_path`` this shard owns; never
    raises on what the output holds (every line is readable or counted as unreadable with its number).

    Either may be a URL (``storage``: its fsspec options): both are streamed once, in order. ``total``: the
    input's rows when it is a table (counted as the run numbers them), else its lines are counted."""
    report = Report(expected_lines(input_path, storage) if total is None else total, shard_index, shard_count)
    total = report.total
    with open_input(output_path, storage) as source:
        for line in read_lines(source.stream, max_line_bytes):
            report.lines += 1
            try:
                info = read_info(line, max_line_bytes)
            except ValueError as e:
                report.unreadable_count += 1
                if len(report.unreadable) < _KEPT:
                    report.unreadable.append(line.number)
                if len(report.unreadable_reasons) < 10:
                    report.unreadable_reasons.append(f"line {line.number}: {e}")
                continue
            if info.batch_id is not None and len(report.batch_ids) < 10:
                report.batch_ids.add(info.batch_id)
            if not 0 <= info.index < total:
                report.out_of_range_count += 1
                if len(report.out_of_range) < _KEPT:
                    report.out_of_range.append(info.index)
                continue
            if info.index % shard_count != shard_index:
                report.unexpected.add(info.index)
                continue
            if not report.seen.add(info.index):
                report.duplicated.add(info.index)
            if info.failed:
                report.failed.add(info.index)
    return report


def render(report: Report, out: TextIO) -> None:
    state = "complete" if report.complete else "INCOMPLETE"
    print(f"{state}: {report.lines} output lines for {report.expected} input lines", file=out)
    rows = (("missing", report.missing_count, lambda: ranges(report.missing)),
            ("duplicated", report.duplicated.count, lambda: ranges(report.duplicated)),
            ("failed", report.failed.count, lambda: ranges(report.failed)),
            ("unexpected", report.unexpected_count, report.unexpected_ranges),
            ("unreadable lines", report.unreadable_count, lambda: ranges(report.unreadable)))
    for label, count, shown in rows:
        if count:
            print(f"  {label}: {count} ({shown()})", file=out)
    for reason in report.unreadable_reasons[:3]:
        print(f"    {reason}", file=out)
    if len(report.batch_ids) > 1:
        print(f"  several batch ids: {', '.join(sorted(report.batch_ids))}", file=out)


def main(argv: Sequence[str], table_rows: TableRows | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seldon-batch verify", description=__doc__.split("\n")[0],
                                     epilog="Exit status: 0 complete, 1 missing/duplicated/unexpected/unreadable "
                                            "lines or error lines (with --allow-failed: only the former), "
                                            "2 usage error.")
    parser.add_argument("input", help="the input file (or s3:// / fsspec URL), one JSON value per line, or a "
                        ".csv or .parquet table (a row per line)")
    parser.add_argument("--input-format", choices=("jsonl", "csv", "parquet"),
                        help="the input's format, as given to the run [default: from its name]")
    parser.add_argument("output", help="the output file (or URL) written by seldon-batch-processor")
    parser.add_argument("--shard-index", type=int, default=0, help="the output is of this shard only")
    parser.add_argument("--shard-count", type=int, default=1)
    parser.add_argument("--allow-failed", action="store_true", help="exit 0 when complete despite error lines")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    add_storage_argument(parser)
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as e:
        return EXIT_USAGE if e.code else EXIT_COMPLETE
    if not 0 <= args.shard_index < args.shard_count:
        print("seldon-batch verify: --shard-index must be in 0..SHARD_COUNT-1", file=sys.stderr)
        return EXIT_USAGE
    try:
        storage = tool_storage_options(args.storage_options)
        total = table_rows(args.input, args.input_format, storage) if table_rows else None
        for path in (args.input, args.output) if total is None else (args.output,):  # a table: maybe a directory
            problem = check_access(path, storage)
            if problem is not None:
                raise StorageError(problem)
        report = verify(args.input, args.output, args.shard_index, args.shard_count, storage=storage, total=total)
    except StorageError as e:
        print(f"seldon-batch verify: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        render(report, sys.stdout)
    return report.exit_code(args.allow_failed)
