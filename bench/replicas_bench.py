"""Issue 13's bench rows: how a batch run spreads over replicas, ours against the original, in one run.

    .venv/bin/python bench/replicas_bench.py [--lines N] [--workers W] [--duration S] [--add-after S]
                                             [--only spread,autoscale] [--ours-args "--opt v ..."]

Against the real Seldon Core 1.18.2 microservice serving tests/models/PidModel.py (it answers
with its pid; tests/replica_servers.py):

- spread: 4 gRPC processes and 4 REST processes behind one port each; each tool sends --lines
  lines with --workers in flight: requests/s, ours/original, each process's share (goal: every
  process at least 8%; gRPC: ours at least 1.8x the original's requests/s), and the CPU each
  request cost the client and the server processes. For gRPC a third row, "ceiling", is a bare
  grpc.aio loop sending the same messages over as many channels as ours (bench/grpc_ceiling.py):
  the server and the client share the machine's cores, so that rate is the most any client can
  get here, and ours/ceiling says how much of it ours reaches;
- autoscale: 1 process, 2 more added --add-after s into a run paced to --duration s (--workers
  requests in flight, one every 0.1 s each; gunicorn TTIN for REST, two gRPC processes joining
  the SO_REUSEPORT port for gRPC): the added processes' share of the last third of the output
  lines (goal: at least 40%).

Prints a markdown table.  Every run is bounded in time; everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.replica_servers import (  # noqa: E402
    BatchProcess,
    ReplicaSeldonServer,
    RunResult,
    Tool,
    Transport,
    host_for,
    loopback_env,
    run_batch,
    verify,
    write_input,
)

TOOLS: tuple[Tool, ...] = ("ours", "original")
CEILING = Path(__file__).resolve().parent / "grpc_ceiling.py"
TICKS = os.sysconf("SC_CLK_TCK")
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
    client_ms: float | None = None  # CPU per request of the client process
    server_ms: float | None = None  # CPU per request of the server processes


def children_cpu() -> float:
    """User+system seconds of this process's ended children (the client runs, once waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def processes_cpu(pids: set[int]) -> float:
    """User+system seconds the server processes `pids` have used so far (/proc/PID/stat)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def ceiling_run(host: str, lines: int, workers: int, channels: int, timeout: float) -> RunResult:
    """bench/grpc_ceiling.py: a bare grpc.aio loop's run, as a RunResult (pids repeated per answer)."""
    try:
        done = subprocess.run([sys.executable, str(CEILING), host, "--lines", str(lines), "--workers",
                               str(workers), "--channels", str(channels)], env=loopback_env(),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return RunResult("ceiling", "grpc", None, timeout, [], f"no result within {timeout:g} s")
    if done.returncode != 0:
        return RunResult("ceiling", "grpc", done.returncode, 0.0, [], done.stderr[-2000:])
    figures = json.loads(done.stdout)
    pids: list[int | None] = [int(pid) for pid, n in figures["pids"].items() for _ in range(n)]
    pids += [None] * figures["errors"]
    return RunResult("ceiling", "grpc", 0, figures["wall"], pids)


def percent_list(result: RunResult, pids: set[int]) -> str:
    return " / ".join(f"{100 * s:.0f}" for s in sorted(result.shares(pids).values(), reverse=True))


def spread_rows(args: argparse.Namespace, work: Path) -> list[Row]:
    """4 gRPC and 4 REST processes, each tool in turn on the same input."""
    rows: list[Row] = []
    input_path = write_input(work / "spread.txt", args.lines)
    with ReplicaSeldonServer(rest=4, grpc=4) as server:
        for transport in TRANSPORTS:
            pids = server.grpc_worker_pids() if transport == "grpc" else server.rest_worker_pids()
            for tool in (*TOOLS, "ceiling") if transport == "grpc" else TOOLS:
                output = work / f"spread-{transport}-{tool}.out"
                client, served = children_cpu(), processes_cpu(pids)
                if tool == "ceiling":
                    result = ceiling_run(server.grpc_host, args.lines, args.workers, args.channels, args.timeout)
                else:
                    result = run_batch(cast(Tool, tool), host_for(server, transport), transport, input_path, output,
                                       args.workers, timeout=args.timeout,
                                       extra=tuple(args.ours_args) if tool == "ours" else ())
                low = min(result.shares(pids).values(), default=0.0)
                row = Row(f"{transport} x4 spread", tool, result, percent_list(result, pids),
                          f"min {100 * low:.0f}% (>= 8%)")
                if result.lines:
                    row.client_ms = 1000 * (children_cpu() - client) / result.lines
                    row.server_ms = 1000 * (processes_cpu(pids) - served) / result.lines
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


def cpu_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(rows: list[Row]) -> str:
    """Markdown: each row; for ours, its requests/s over the original's and over the ceiling's."""
    rates = {(r.scenario, r.tool): r.result.rate for r in rows}
    out = ["| scenario | tool | exit | lines (errors) | wall s | req/s | ours/orig | ours/ceiling"
           " | client CPU ms/req | server CPU ms/req | shares % (by process) | goal | verify |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        orig, ceiling = rates.get((r.scenario, "original")), rates.get((r.scenario, "ceiling"))
        ratio = f"{r.result.rate / orig:.2f}x" if r.tool == "ours" and orig else ""
        of_ceiling = f"{r.result.rate / ceiling:.2f}" if r.tool == "ours" and ceiling else ""
        out.append(f"| {r.scenario} | {r.tool} | {r.result.returncode} | {r.result.lines} ({r.result.errors})"
                   f" | {r.result.wall:.1f} | {r.result.rate:.0f} | {ratio} | {of_ceiling} | {cpu_ms(r.client_ms)}"
                   f" | {cpu_ms(r.server_ms)} | {r.shares} | {r.goal} | {r.verified} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2000, help="lines of the spread rows")
    parser.add_argument("--workers", type=int, default=32, help="requests in flight in the spread rows")
    parser.add_argument("--paced-workers", type=int, default=8, help="requests in flight in the autoscale rows")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds the autoscale runs are paced to")
    parser.add_argument("--add-after", type=float, default=5.0, help="seconds into the run processes are added")
    parser.add_argument("--timeout", type=float, default=300.0, help="bound of one spread run")
    parser.add_argument("--channels", type=int, default=64,
                        help="channels of the gRPC ceiling row (ours' default for 32 workers: 64)")
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
