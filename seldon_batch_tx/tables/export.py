"""``seldon-batch export OUTPUT --to parquet|csv --join INPUT``: a scored table from an output made earlier.

The same table a run with ``-o X.parquet`` writes (:mod:`.writer`): the input's columns, the
prediction, ``status``/``error_kind``/``error_reason``/``batch_index``, one row per input row in
input order; a row without an output line is ``missing``. Exit 0 when every row succeeded, 1 when
some failed or are missing, 2 for a usage error or a file that cannot be used.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..checks import column_names
from ..exits import EXIT_FAILED_LINES, EXIT_OK, EXIT_USAGE
from ..storage.paths import StorageError, is_remote
from .formats import TABLE_FORMATS, format_of
from .writer import write_table

PROG = "seldon-batch export"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("output", metavar="OUTPUT", help="the JSON-lines output of a run (local file)")
    parser.add_argument("--join", metavar="INPUT", required=True, help="the table the run read (.csv, .parquet, "
                        "a directory of Parquet files, or a URL)")
    parser.add_argument("--to", metavar="TABLE", required=True, help="the table to write (a local path)")
    parser.add_argument("--format", choices=TABLE_FORMATS, help="the table's format [default: from --to's name]")
    parser.add_argument("--input-format", choices=TABLE_FORMATS, help="INPUT's format [default: from its name]")
    parser.add_argument("--keep-columns", type=column_names, help="input columns to repeat, as a,b,c [default: all]")
    return parser


def main(argv: Sequence[str]) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as e:
        return EXIT_OK if e.code == 0 else EXIT_USAGE
    fmt = format_of(args.to, args.format)
    in_fmt = format_of(args.join, args.input_format)
    if fmt not in TABLE_FORMATS or in_fmt not in TABLE_FORMATS:
        why = ("--to: name a .csv or .parquet file (or give --format)" if fmt not in TABLE_FORMATS else
               "--join: the input must be a CSV or Parquet table (a .csv or .parquet name, or --input-format); "
               "the output of a JSON-lines input already holds each line's answer: no table to join")
        print(f"{PROG}: error: {why}", file=sys.stderr)
        return EXIT_USAGE
    if is_remote(args.to):
        print(f"{PROG}: error: --to: write the table to a local path", file=sys.stderr)
        return EXIT_USAGE
    try:
        from .reader import table_totals

        write_table(args.output, args.to, fmt, args.join, in_fmt, keep=args.keep_columns)
        counts = table_totals(args.to, fmt)
    except (StorageError, OSError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{counts['rows']} rows to {args.to}: {counts['success']} succeeded, {counts['failure']} failed, "
          f"{counts['missing']} missing", flush=True)
    return EXIT_OK if counts["rows"] == counts["success"] else EXIT_FAILED_LINES
