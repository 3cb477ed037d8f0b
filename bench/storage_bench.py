"""Input read rate: a local file against the same lines as an S3 object (moto on loopback).

    .venv/bin/python bench/storage_bench.py [-n 1000000] [--runs 3] [--chunk-mib 8] [--depth 4]

Writes ``-n`` lines (about 50 bytes each) to a temporary file, uploads them to a moto S3 server
(tests/s3_server.py), then reads both as the engine does (``readline(limit)`` per line), once
bare and once with ``json.loads`` per line (a floor for the engine's own per-line work), and
prints lines/s (best of ``--runs``), process CPU seconds and the S3/local ratio. The S3 rows
go through :func:`seldon_batch_tx.storage.open_input`'s prefetch thread and queue.

The ``cli`` rows (``--cli-lines``, 200,000 by default; 0 skips them) run the real
``.venv/bin/seldon-batch-processor`` end to end on the first ``--cli-lines`` lines, once with
``-i`` a local file and once with ``-i s3://...`` (credentials and ``AWS_ENDPOINT_URL`` from the
environment), against the loopback nginx of bench/run.py (one nginx worker, ``-w 50 -s 1``, the
flags of its ``ours-nginx-w50-b1`` row), and print lines/s of the whole run, CPU, peak RSS and
S3/local (the issue's goal: S3 within 20% of local, i.e. >= 0.80x). A run counts only when its
output has one line per input line and no error line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.servers import NginxServer  # noqa: E402
from bench.tools import TOOLS, Job, RunResult, Tool, measure  # noqa: E402
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


def cli_tool(url: str | None, env: dict[str, str]) -> Tool:
    """bench/tools.py's ``ours`` REST row, its ``-i`` replaced by ``url`` when given."""
    ours = TOOLS["ours"]

    def build(job: Job) -> list[str]:
        command = ours.command(job)
        if url is not None:
            command[command.index("-i") + 1] = url
        return command

    return dataclasses.replace(ours, name="ours-s3" if url else "ours", build=build, env=env)


def cli_rows(tmp: str, path: str, url: str, lines: int, runs: int, s3: S3Server) -> None:
    """The real command over ``lines`` lines, local file and S3 object, against loopback nginx."""
    log = Path(tmp) / "cli.log"
    print(f"\nreal seldon-batch-processor, {lines:,} lines, nginx (1 worker), -w 50 -s 1; best of {runs}")
    print(f"{'row':<22} {'lines/s':>12} {'CPU s':>7} {'RSS MB':>7} {'vs local':>9}")
    with NginxServer(workers=1) as nginx:
        job = Job(nginx.host, Path(path), Path(tmp) / "cli-output.txt", workers=50, batch_size=1)
        results: dict[str, RunResult] = {}
        for name, tool in (("local cli", cli_tool(None, {})), ("s3 cli", cli_tool(url, s3.env()))):
            for _ in range(runs):
                result = measure(tool, job, lines, 300.0, log)
                if not result.valid:
                    raise SystemExit(f"{name}: {result.why_invalid}\n{result.log_tail}")
                if name not in results or result.wall < results[name].wall:
                    results[name] = result
        local = lines / results["local cli"].wall
        for name, result in results.items():
            rate = lines / result.wall
            print(f"{name:<22} {rate:>12,.0f} {result.cpu:>7.2f} {result.maxrss_kb / 1024:>7.0f} "
                  f"{rate / local:>8.2f}x")
        ratio = lines / results["s3 cli"].wall / local
        print(f"S3/local {ratio:.2f}x: {'within' if ratio >= 0.8 else 'NOT within'} 20% of local")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chunk-mib", type=int, default=8)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--cli-lines", type=int, default=200_000,
                        help="lines of the real-command rows (0: skip them)")
    parser.add_argument("--cli-runs", type=int, default=1)
    parser.add_argument("--skip-read", action="store_true", help="only the real-command rows")
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
            for parse in (False, True) if not args.skip_read else ():
                what = "read+json.loads" if parse else "read"
                local = best(args.runs, args.lines, lambda: open(path, "rb", buffering=1 << 20), parse)  # noqa: SIM115
                remote = best(args.runs, args.lines,
                              lambda: open_input(url, s3.options(), **prefetch).stream, parse)
                print(f"{'local ' + what:<22} {local[0]:>12,.0f} {local[1]:>7.2f} {'1.00x':>9}")
                print(f"{'s3 ' + what:<22} {remote[0]:>12,.0f} {remote[1]:>7.2f} {remote[0] / local[0]:>8.2f}x")
            if args.cli_lines > 0:
                cli_path, cli_url = path, url
                if args.cli_lines != args.lines:
                    cli_path = os.path.join(tmp, "cli-input.txt")
                    write_input(cli_path, args.cli_lines)
                    cli_url = "s3://bench-bucket/cli-input.txt"
                    fs.put_file(cli_path, filesystem(cli_url, s3.options())[1], chunksize=16 << 20)
                cli_rows(tmp, cli_path, cli_url, args.cli_lines, args.cli_runs, s3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
