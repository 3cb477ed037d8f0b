"""Input read rate: a local file against the same lines as an S3 object (moto on loopback).

    .venv/bin/python bench/storage_bench.py [-n 1000000] [--runs 3] [--chunk-mib 8] [--depth 4]

Writes ``-n`` lines (about 50 bytes each) to a temporary file, uploads them to a moto S3 server
(tests/s3_server.py), then reads both as the engine does (``readline(limit)`` per line), once
bare and once with ``json.loads`` per line (a floor for the engine's own per-line work), and
prints lines/s (best of ``--runs``), process CPU seconds and the S3/local ratio. The S3 rows
go through :func:`seldon_batch_tx.storage.open_input`'s prefetch thread and queue.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from seldon_batch_tx.storage import filesystem, open_input  # noqa: E402
from tests.s3_server import S3Server  # noqa: E402

LIMIT = (64 << 20) + 1  # the reader's readline limit: --max-line-bytes + 1


def write_input(path: str, lines: int) -> int:
    with open(path, "wb", buffering=1 << 20) as f:
        for i in range(lines):
            f.write(b'[[%d, %d.5, %d, "abcdefghijklmnop"]]\n' % (i, i, i * 7))
    return os.path.getsize(path)


def drain(stream: BinaryIO, parse: bool) -> int:
    readline, count = stream.readline, 0
    for _ in range(1 << 40):  # bounded: ends at EOF
        line = readline(LIMIT)
        if not line:
            break
        if parse:
            json.loads(line)
        count += 1
    return count


def best(runs: int, expected: int, open_stream: Callable[[], BinaryIO], parse: bool) -> tuple[float, float]:
    """(lines/s, CPU s) of the fastest of ``runs`` passes."""
    result = (0.0, 0.0)
    for _ in range(runs):
        stream = open_stream()
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            count = drain(stream, parse)
        finally:
            stream.close()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if count != expected:
            raise SystemExit(f"read {count} lines, expected {expected}")
        if expected / wall > result[0]:
            result = (expected / wall, cpu)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chunk-mib", type=int, default=8)
    parser.add_argument("--depth", type=int, default=4)
    args = parser.parse_args()
    prefetch = {"chunk_bytes": args.chunk_mib << 20, "depth": args.depth}
    with tempfile.TemporaryDirectory(prefix="storage-bench-") as tmp:
        path = os.path.join(tmp, "input.txt")
        size = write_input(path, args.lines)
        with S3Server(Path(tmp) / "moto.log") as s3:
            s3.make_bucket("bench-bucket")
            url = "s3://bench-bucket/input.txt"
            fs, rpath = filesystem(url, s3.options())
            fs.put_file(path, rpath, chunksize=16 << 20)
            print(f"{args.lines:,} lines, {size / 1e6:.1f} MB; S3 prefetch {args.depth} x {args.chunk_mib} MiB; "
                  f"best of {args.runs}")
            print(f"{'row':<22} {'lines/s':>12} {'CPU s':>7} {'vs local':>9}")
            for parse in (False, True):
                what = "read+json.loads" if parse else "read"
                local = best(args.runs, args.lines, lambda: open(path, "rb", buffering=1 << 20), parse)  # noqa: SIM115
                remote = best(args.runs, args.lines,
                              lambda: open_input(url, s3.options(), **prefetch).stream, parse)
                print(f"{'local ' + what:<22} {local[0]:>12,.0f} {local[1]:>7.2f} {'1.00x':>9}")
                print(f"{'s3 ' + what:<22} {remote[0]:>12,.0f} {remote[1]:>7.2f} {remote[0] / local[0]:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
