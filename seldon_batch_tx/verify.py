"""``seldon-batch verify INPUT OUTPUT``: is every input line in the output exactly once?

Checks an output against its input by ``meta.tags.batch_index`` alone (order does not matter)
and reports, as compact ranges, the indexes that are missing, duplicated, out of range and
failed (error lines), plus lines that are not output lines at all (e.g. a torn last line).
Memory is a few bitmaps of one bit per input line.

Exit status: 0 complete without error lines; 1 lines missing, duplicated, unexpected or
unreadable; 3 complete but some lines are error lines (``--allow-failed`` turns that into 0);
2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

import attrs

from .reader import count_lines
from .resume import IndexBitmap, line_info

EXIT_COMPLETE, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_FAILED_LINES = 0, 1, 2, 3


def ranges(indexes: Iterable[int], limit: int = 20) -> str:
    """``0-4, 7, 9-12``, at most ``limit`` ranges then ``... (N more ranges)``."""
    spans: list[list[int]] = []
    extra = 0
    last = -2
    for i in indexes:
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        elif len(spans) < limit:
            spans.append([i, i])
        elif not extra or i != last + 1:
            extra += 1
        last = i
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)
    return text + (f" ... ({extra} more ranges)" if extra else "")


@attrs.define
class Report:
    """What an output holds compared with its input."""

    expected: int = 0
    lines: int = 0
    missing: list[int] = attrs.field(factory=list)
    duplicated: IndexBitmap = attrs.field(factory=IndexBitmap)
    failed: IndexBitmap = attrs.field(factory=IndexBitmap)
    unexpected: IndexBitmap = attrs.field(factory=IndexBitmap)
    unreadable: list[int] = attrs.field(factory=list)
    unreadable_count: int = 0
    batch_ids: set[str] = attrs.field(factory=set)

    @property
    def complete(self) -> bool:
        return not (self.missing or self.duplicated.count or self.unexpected.count or self.unreadable_count
                    or len(self.batch_ids) > 1)

    def exit_code(self, allow_failed: bool = False) -> int:
        if not self.complete:
            return EXIT_INCOMPLETE
        return EXIT_FAILED_LINES if self.failed.count and not allow_failed else EXIT_COMPLETE

    def as_dict(self) -> dict[str, Any]:
        return {
            "expected": self.expected, "lines": self.lines, "complete": self.complete,
            "missing": len(self.missing), "missing_ranges": ranges(self.missing),
            "duplicated": self.duplicated.count, "duplicated_ranges": ranges(self.duplicated),
            "failed": self.failed.count, "failed_ranges": ranges(self.failed),
            "unexpected": self.unexpected.count, "unexpected_ranges": ranges(self.unexpected),
            "unreadable": self.unreadable_count, "unreadable_lines": ranges(self.unreadable),
            "batch_ids": sorted(self.batch_ids),
        }


def verify(input_path: str, output_path: str, shard_index: int = 0, shard_count: int = 1) -> Report:
    """Compare ``output_path`` with the lines of ``input_path`` this shard owns."""
    total = count_lines(input_path)
    report = Report(expected=len(range(shard_index, total, shard_count)))
    seen = IndexBitmap(total)
    with open(output_path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            report.lines += 1
            try:
                info = line_info(raw)
            except ValueError:
                report.unreadable_count += 1
                if len(report.unreadable) < 1000:
                    report.unreadable.append(number)
                continue
            if info.batch_id is not None and len(report.batch_ids) < 10:
                report.batch_ids.add(info.batch_id)
            if info.index >= total or info.index % shard_count != shard_index:
                report.unexpected.add(info.index)
                continue
            if not seen.add(info.index):
                report.duplicated.add(info.index)
            if info.failed:
                report.failed.add(info.index)
    report.missing = [i for i in range(shard_index, total, shard_count) if i not in seen]
    return report


def render(report: Report, out: TextIO) -> None:
    state = "complete" if report.complete else "INCOMPLETE"
    print(f"{state}: {report.lines} output lines for {report.expected} input lines", file=out)
    rows = (("missing", len(report.missing), report.missing), ("duplicated", report.duplicated.count,
            report.duplicated), ("failed", report.failed.count, report.failed),
            ("unexpected", report.unexpected.count, report.unexpected),
            ("unreadable lines", report.unreadable_count, report.unreadable))
    for label, count, indexes in rows:
        if count:
            print(f"  {label}: {count} ({ranges(indexes)})", file=out)
    if len(report.batch_ids) > 1:
        print(f"  several batch ids: {', '.join(sorted(report.batch_ids))}", file=out)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="seldon-batch verify", description=__doc__.split("\n")[0],
                                     epilog="Exit status: 0 complete, 1 missing/duplicated/unreadable lines, "
                                            "3 complete with error lines, 2 usage error.")
    parser.add_argument("input", help="the input file, one JSON value per line")
    parser.add_argument("output", help="the output file written by seldon-batch-processor")
    parser.add_argument("--shard-index", type=int, default=0, help="the output is of this shard only")
    parser.add_argument("--shard-count", type=int, default=1)
    parser.add_argument("--allow-failed", action="store_true", help="exit 0 when complete despite error lines")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as e:
        return EXIT_USAGE if e.code else EXIT_COMPLETE
    if not 0 <= args.shard_index < args.shard_count:
        print("seldon-batch verify: --shard-index must be in 0..SHARD_COUNT-1", file=sys.stderr)
        return EXIT_USAGE
    for path in (args.input, args.output):
        if not os.path.isfile(path):
            print(f"seldon-batch verify: {path!r} is not a file", file=sys.stderr)
            return EXIT_USAGE
    report = verify(args.input, args.output, args.shard_index, args.shard_count)
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        render(report, sys.stdout)
    return report.exit_code(args.allow_failed)
