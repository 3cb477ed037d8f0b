"""Rows/s from a Parquet table against the same rows as JSON lines, in the same run.

    .venv/bin/python bench/tables_bench.py [-n 300000] [--runs 3] [-s 32] [-w 50]

Writes ``-n`` rows of four numbers as a Parquet file and as the JSON lines a user would have made of
it (``[[a, b, c, d]]``), then runs the real ``.venv/bin/seldon-batch-processor`` on each in turn
(alternating, best of ``--runs``) against bench/'s loopback nginx (one worker, its mini-batch answer of
``-s`` rows), and prints rows/s of the run (the processor's own summary), wall and CPU seconds.
Three rows: JSON lines in and out, Parquet in and JSON lines out (the reading cost: goal within 10% of
JSON lines), and Parquet in and a Parquet table out (the run plus the table written at its end,
timed by the wall clock). A run counts only when it exits 0.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from bench.servers import NginxServer  # noqa: E402

PROCESSOR = str(Path(sys.executable).parent / "seldon-batch-processor")
RATE = re.compile(rb"; ([\d.]+) s, ([\d.]+) lines/s")


def make_inputs(directory: Path, rows: int) -> tuple[Path, Path]:
    n = pa.array(range(rows), pa.int64())
    columns = {"a": pc.multiply(n, 0.5), "b": pc.add(n, 1), "c": pc.multiply(n, 2), "d": pc.subtract(n, 7)}
    parquet = directory / "rows.parquet"
    pq.write_table(pa.table(columns), parquet, row_group_size=100_000)
    lines = directory / "rows.jsonl"
    with open(lines, "w") as f:
        for a, b, c, d in zip(*(col.to_pylist() for col in columns.values()), strict=True):
            f.write(f"[[{a!r},{b},{c},{d}]]\n")
    return parquet, lines


def run(command: list[str]) -> tuple[float, float, float]:
    """(rows/s of the run as it reports it, wall seconds, CPU seconds) of one processor run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.run(command, capture_output=True, timeout=1800)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}): {proc.stderr[-1500:].decode(errors='replace')}")
    match = RATE.search(proc.stdout)
    if match is None:
        raise SystemExit(f"no summary in: {proc.stdout[-500:]!r}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return float(match.group(2)), wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--rows", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("-s", "--batch-size", type=int, default=32)
    parser.add_argument("-w", "--workers", type=int, default=50)
    args = parser.parse_args()
    if args.rows % args.batch_size:
        parser.error("--rows must be a multiple of --batch-size (nginx answers -s rows)")
    with tempfile.TemporaryDirectory(prefix="tables-bench-") as tmp, NginxServer(rows=args.batch_size) as nginx:
        directory = Path(tmp)
        parquet, lines = make_inputs(directory, args.rows)
        base = [PROCESSOR, "-d", "bench", "-g", "seldon", "-h", nginx.batch_host, "-w", str(args.workers),
                "-s", str(args.batch_size)]
        cases = {
            "jsonl -> jsonl": [*base, "-i", str(lines), "-o", str(directory / "out.jsonl")],
            "parquet -> jsonl": [*base, "-i", str(parquet), "-o", str(directory / "out.jsonl")],
            "parquet -> parquet": [*base, "-i", str(parquet), "-o", str(directory / "out.parquet")],
        }
        best: dict[str, tuple[float, float, float]] = {}
        for _ in range(args.runs):
            for name, command in cases.items():
                for stale in directory.glob("out.*"):
                    os.unlink(stale)
                result = run(command)
                if name not in best or result[0] > best[name][0]:
                    best[name] = result
    print(f"\nreal seldon-batch-processor, {args.rows:,} rows, nginx (1 worker), -w {args.workers} "
          f"-s {args.batch_size}; best of {args.runs}")
    print(f"{'row':<20} {'rows/s':>10} {'wall s':>8} {'CPU s':>7} {'vs jsonl':>9}")
    reference = best["jsonl -> jsonl"][0]
    for name, (rate, wall, cpu) in best.items():
        print(f"{name:<20} {rate:>10,.0f} {wall:>8.2f} {cpu:>7.2f} {rate / reference:>8.2f}x")
    ratio = best["parquet -> jsonl"][0] / reference
    print(f"Parquet/JSON lines {ratio:.2f}x: {'within' if ratio >= 0.9 else 'NOT within'} 10%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
