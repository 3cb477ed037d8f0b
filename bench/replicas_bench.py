"""Issue 13's bench rows: how a batch run spreads over replicas, ours against the original, in one run.

    .venv/bin/python bench/replicas_bench.py [--lines N] [--workers W] [--duration S] [--add-after S]
                                             [--only spread,autoscale] [--ours-args "--opt v ..."]

Against the real Seldon Core 1.18.2 microservice serving tests/models/PidModel.py (it answers
with its pid; tests/replica_servers.py):

- spread: 4 gRPC processes and 4 REST processes behind one port each; each tool sends --lines
  lines with --workers in flight: requests/s, ours/original, and each process's share (goal: every
  process at least 8%; gRPC: ours at least 1.8x the original's requests/s);
- autoscale: 1 process, 2 more added --add-after s into a run paced to --duration s (--workers
  requests in flight, one every 0.1 s each; gunicorn TTIN for REST, two gRPC processes joining
  the SO_REUSEPORT port for gRPC): the added processes' share of the last third of the output
  lines (goal: at least 40%).

Prints a markdown table.  Every run is bounded in time; everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.replica_servers import (  # noqa: E402
    BatchProcess,
    ReplicaSeldonServer,
    RunResult,
    Tool,
    Transport,
    host_for,
    run_batch,
    verify,
    write_input,
)

TOOLS: tuple[Tool, ...] = ("ours", "original")
TRANSPORTS: tuple[Transport, ...] = ("grpc", "rest")
PACED_INTERVAL = 0.1


@dataclass
class Row:
    """One table row: a scenario run by one tool."""

    scenario: str
    tool: str
    result: RunResult
    shares: str
    goal: str
    verified: str = "-"


def percent_list(result: RunResult, pids: set[int]) -> str:
    return " / ".join(f"{100 * s:.0f}" for s in sorted(result.shares(pids).values(), reverse=True))


def spread_rows(args: argparse.Namespace, work: Path) -> list[Row]:
    """4 gRPC and 4 REST processes, each tool in turn on the same input."""
    rows: list[Row] = []
    input_path = write_input(work / "spread.txt", args.lines)
    with ReplicaSeldonServer(rest=4, grpc=4) as server:
        for transport in TRANSPORTS:
            pids = server.grpc_worker_pids() if transport == "grpc" else server.rest_worker_pids()
            for tool in TOOLS:
                output = work / f"spread-{transport}-{tool}.out"
                result = run_batch(tool, host_for(server, transport), transport, input_path, output,
                                   args.workers, timeout=args.timeout,
                                   extra=tuple(args.ours_args) if tool == "ours" else ())
                low = min(result.shares(pids).values(), default=0.0)
                row = Row(f"{transport} x4 spread", tool, result, percent_list(result, pids),
                          f"min {100 * low:.0f}% (>= 8%)")
                if tool == "ours":
                    row.verified = str(verify(input_path, output).returncode)
                rows.append(row)
    return rows


def autoscale_row(args: argparse.Namespace, work: Path, transport: Transport, tool: Tool) -> Row:
    """1 process, 2 added during a paced run: the added processes' share of the last third."""
    lines = int(args.duration * args.paced_workers / PACED_INTERVAL)
    input_path = write_input(work / f"paced-{lines}.txt", lines)
    output = work / f"autoscale-{transport}-{tool}.out"
    with ReplicaSeldonServer(rest=1, grpc=1) as server:
        run = BatchProcess(tool, host_for(server, transport), transport, input_path, output, args.paced_workers,
                           extra=tuple(args.ours_args) if tool == "ours" else (), batch_interval=PACED_INTERVAL)
        time.sleep(args.add_after)
        added = server.add_rest_workers(2) if transport == "rest" else server.add_grpc_processes(2)
        result = run.wait(timeout=args.duration * 6)
    share = result.last_third_share(added)
    row = Row(f"{transport} 1+2 autoscale", tool, result, percent_list(result, added | set(result.counts)),
              f"added {100 * share:.0f}% of last third (>= 40%)")
    if tool == "ours":
        row.verified = str(verify(input_path, output).returncode)
    return row


def table(rows: list[Row]) -> str:
    """Markdown: each row, and ours/original requests/s for the spread rows."""
    rates = {(r.scenario, r.tool): r.result.rate for r in rows}
    out = ["| scenario | tool | exit | lines (errors) | wall s | req/s | ours/orig | shares % (by process) | goal"
           " | verify |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        orig = rates.get((r.scenario, "original"))
        ratio = f"{r.result.rate / orig:.2f}x" if r.tool == "ours" and orig else ""
        out.append(f"| {r.scenario} | {r.tool} | {r.result.returncode} | {r.result.lines} ({r.result.errors})"
                   f" | {r.result.wall:.1f} | {r.result.rate:.0f} | {ratio} | {r.shares} | {r.goal}"
                   f" | {r.verified} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2000, help="lines of the spread rows")
    parser.add_argument("--workers", type=int, default=32, help="requests in flight in the spread rows")
    parser.add_argument("--paced-workers", type=int, default=8, help="requests in flight in the autoscale rows")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds the autoscale runs are paced to")
    parser.add_argument("--add-after", type=float, default=5.0, help="seconds into the run processes are added")
    parser.add_argument("--timeout", type=float, default=300.0, help="bound of one spread run")
    parser.add_argument("--only", default="spread,autoscale", help="comma-separated: spread, autoscale")
    parser.add_argument("--ours-args", type=shlex.split, default=[], help="extra options for our tool")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="replicas-bench-") as tmp:
        work = Path(tmp)
        if "spread" in only:
            rows += spread_rows(args, work)
        if "autoscale" in only:
            rows += [autoscale_row(args, work, transport, tool) for transport in TRANSPORTS for tool in TOOLS]
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
