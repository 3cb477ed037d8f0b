"""The gRPC rows of issue 3 on their own: this processor vs the original, against the real Seldon
microservice and a fast gRPC echo server, each next to the ceiling a plain grpc.aio loop reaches.

    .venv/bin/python bench/grpc_bench.py [--quick] [--lines N] [--workers 50] [--runs 3]

Same input file, same workers for both tools; each figure is the median of ``--runs`` runs
(1 with ``--quick``).  Reuses bench/'s pieces: ``GrpcEchoServer`` and ``grpc_load_rate``
(bench/servers.py, bench/grpc_echo.py), the tool table and ``measure`` (bench/tools.py: child
CPU and peak RSS from ``os.wait4``, a run counts only with one output line per input line and
no error line).  ``bench/run.py`` has the same rows inside the whole suite; this script is
the quick way to check the gRPC goals: (a) ours >= 90% of the ceiling on the real microservice,
(b) ours >= 3x the original on the echo server (the original opens a channel per request).

``req/s`` is input lines / wall time of the whole process (start-up included); ``in-run``
is the rate the processor itself reports (its summary line), start-up excluded.
Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.servers import GrpcEchoServer, grpc_load_rate  # noqa: E402
from bench.tools import TOOLS, Job, RunResult, ensure_installed, measure  # noqa: E402
from tests.servers import SeldonServer, ensure_seldon_venv  # noqa: E402

TOOL_NAMES = ("ours-grpc", "original-grpc")
_SUMMARY = re.compile(r"(\d+) succeeded, .*?, ([\d.]+) lines/s")


@dataclass
class GrpcRow:
    """The runs of one tool against one server."""

    server: str
    tool: str
    lines: int
    runs: list[RunResult] = field(default_factory=list)
    in_run: list[float] = field(default_factory=list)  # the processor's own lines/s (ours only)

    @property
    def good(self) -> list[RunResult]:
        return [r for r in self.runs if r.valid]

    def rate(self) -> float | None:
        rates = [r.lines_out / r.wall for r in self.good if r.wall > 0]
        return statistics.median(rates) if rates else None

    def cpu_ms_per_1k(self) -> float | None:
        values = [1e6 * r.cpu / max(1, r.lines_out) for r in self.good]
        return statistics.median(values) if values else None

    def rss_mb(self) -> float | None:
        values = [r.maxrss_kb / 1024 for r in self.good]
        return statistics.median(values) if values else None

    def in_run_rate(self) -> float | None:
        return statistics.median(self.in_run) if self.in_run else None


def make_input(directory: Path, lines: int) -> Path:
    """bench/run.py's Seldon input: one-row ndarray lines ``[[i % 1000, 2.5, 3, 4]]``."""
    path = directory / f"seldon-{lines}.txt"
    with open(path, "w") as f:
        for i in range(lines):
            f.write(f"[[{i % 1000}, 2.5, 3, 4]]\n")
    return path


def run_rows(hosts: dict[str, str], input_path: Path, lines: int, workers: int, runs: int,
             workdir: Path, timeout: float) -> list[GrpcRow]:
    """Each (server, tool) `runs` times, alternating tools so drift in machine load hits both."""
    rows = {(server, tool): GrpcRow(server, tool, lines) for server in hosts for tool in TOOL_NAMES}
    for server, host in hosts.items():
        for i in range(runs):
            for tool_name in TOOL_NAMES if i % 2 == 0 else reversed(TOOL_NAMES):
                row, tool = rows[(server, tool_name)], TOOLS[tool_name]
                job = Job(host, input_path, workdir / f"{tool_name}-{server}.out", workers, 1)
                log_path = workdir / f"{tool_name}-{server}.log"
                result = measure(tool, job, lines, timeout, log_path)
                row.runs.append(result)
                match = _SUMMARY.search(log_path.read_text(errors="replace"))
                if match and tool_name == "ours-grpc":
                    row.in_run.append(float(match.group(2)))
                rate = result.lines_out / max(result.wall, 1e-9)
                print(f"  {tool_name:<14} {server:<8} run {i + 1}/{runs}: {rate:8,.0f} lines/s"
                      f"  wall {result.wall:6.2f} s  cpu {result.cpu:6.2f} s"
                      f"  rss {result.maxrss_kb / 1024:4.0f} MB  {'ok' if result.valid else result.why_invalid}",
                      flush=True)
    return list(rows.values())


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def report(rows: list[GrpcRow], ceilings: dict[str, float], workers: int, runs: int) -> list[str]:
    """The table and the goal lines, as markdown."""
    out = [f"gRPC rows: {rows[0].lines:,} lines, {workers} workers, median of {runs} run(s)", "",
           "| server | tool | req/s | in-run req/s | CPU ms/1k req | peak RSS MB | ceiling | ours/ceiling"
           " | ours/original |", "|---|---|---|---|---|---|---|---|---|"]
    by = {(r.server, r.tool): r for r in rows}
    goals: list[str] = []
    for server, ceiling in ceilings.items():
        ours, orig = by[(server, "ours-grpc")], by[(server, "original-grpc")]
        for row in (ours, orig):
            rate = row.rate()
            to_ceiling = f"{100 * rate / ceiling:.0f}%" if rate and ceiling else "-"
            other = orig.rate()
            to_orig = f"{rate / other:.2f}x" if row is ours and rate and other else ""
            out.append(f"| {server} | {row.tool} | {fmt(rate)} | {fmt(row.in_run_rate())} | {fmt(row.cpu_ms_per_1k())}"
                       f" | {fmt(row.rss_mb())} | {fmt(ceiling or None)} | {to_ceiling} | {to_orig} |")
        rate, in_run, orig_rate = ours.rate(), ours.in_run_rate(), orig.rate()
        if server == "seldon" and rate and ceiling:
            goals.append(f"- (a) real microservice: ours {rate:,.0f}/s = {100 * rate / ceiling:.0f}% of the ceiling "
                         f"{ceiling:,.0f}/s (in-run {100 * (in_run or 0) / ceiling:.0f}%; goal >= 90%: "
                         f"{'met' if rate >= 0.9 * ceiling else 'not met'}); original "
                         f"{100 * (orig_rate or 0) / ceiling:.0f}%")
        if server == "echo" and rate and orig_rate:
            goals.append(f"- (b) echo server: ours {rate:,.0f}/s = {rate / orig_rate:.2f}x the original "
                         f"{orig_rate:,.0f}/s (goal >= 3x: {'met' if rate >= 3 * orig_rate else 'not met'}); "
                         f"{100 * rate / ceiling:.0f}% of the ceiling {ceiling:,.0f}/s" if ceiling else "")
    return [*out, "", *goals]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 run per row, 2,000 lines")
    parser.add_argument("--lines", type=int, default=None, help="input lines (default 5,000; --quick 2,000)")
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--runs", type=int, default=None, help="runs per row (default 3, --quick 1)")
    parser.add_argument("--servers", default="seldon,echo", help="which of seldon,echo")
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    lines = args.lines or (2_000 if args.quick else 5_000)
    wanted = [s for s in args.servers.split(",") if s]
    missing = ensure_installed([TOOLS[name] for name in TOOL_NAMES])
    if missing:
        print(f"grpc_bench: not installed: {', '.join(missing)}", file=sys.stderr)
        return 2
    duration = 3.0 if args.quick else 5.0
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="grpc-bench-") as tmp:
        hosts: dict[str, str] = {}
        if "seldon" in wanted:
            ensure_seldon_venv()
            seldon = stack.enter_context(SeldonServer("EchoModel", workers=2, grpc_workers=2))
            hosts["seldon"] = seldon.grpc_host
        if "echo" in wanted:
            hosts["echo"] = stack.enter_context(GrpcEchoServer(processes=2)).host
        ceilings = {server: grpc_load_rate(host, args.workers, duration=duration) for server, host in hosts.items()}
        for server, rate in ceilings.items():
            print(f"  ceiling {server}: {rate:,.0f} req/s (grpc.aio loop, 1 channel, {args.workers} tasks)", flush=True)
        input_path = make_input(Path(tmp), lines)
        rows = run_rows(hosts, input_path, lines, args.workers, runs, Path(tmp), timeout=180.0)
    print()
    print("\n".join(report(rows, ceilings, args.workers, runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
