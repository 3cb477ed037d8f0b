"""The benchmark suite: this processor against the other batch tools, side by side, in one run.

    .venv/bin/python bench/run.py [--quick] [--only PATTERN,...] [--runs N] [--no-results] [--list]

Starts the loopback servers (nginx fixed responses, a 10 ms latency server, the real Seldon
microservice), measures each server's ceiling with `wrk`, then runs every row (tool x server x
workers x batch size) N times on the same input files, and prints one table: requests/s (and
datapoints/s with mini-batches), client CPU per 1,000 requests, peak RSS, the ratio to every
other tool and to the server's ceiling.  Each figure is the median of N runs, with min-max.
A run counts only when its output has one line per input line and no error line.

The table goes to stdout and (unless --no-results) to bench/RESULTS.md.  `--only` keeps the
rows whose id (printed by --list, e.g. ``ours-nginx-w50-b1``) starts with or matches one of the
patterns (fnmatch).  Installs nothing itself; missing tools are set up by
scripts/setup-seldon-venv.sh and scripts/setup-mlserver-venv.sh.  Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fnmatch
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.servers import (  # noqa: E402
    NGINX,
    REPO_ROOT,
    WRK,
    GrpcEchoServer,
    LatencyServer,
    NginxServer,
    compact,
    grpc_load_rate,
    wrk_rate,
)
from bench.tools import TOOLS, Job, RunResult, Tool, ensure_installed, measure  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
ROWS = 32  # the mini-batch size of the batch rows
SUITE_DEADLINE = 40 * 60.0  # seconds: rows not started by then are skipped
MIN_NET = 0.25  # the start-up offset never takes more than 75% off a run's wall time
CUT = 10.0  # seconds after which the slower tools are cut in the rows sized for ours


@dataclass(frozen=True)
class Scenario:
    """One server setting, run by several tools on the same input file."""

    server: str  # "nginx" | "nginx-batch" | "latency" | "seldon" | "grpc-echo"
    workers: int
    batch_size: int
    lines: int
    tools: tuple[str, ...]
    runs: int
    timeout: float
    title: str
    partial_ok: tuple[str, ...] = ()  # tools whose run may be cut short (memory rows): RSS still counts
    tag: str = ""
    cut_after: float | None = None  # seconds after which partial_ok tools other than "ours" are cut

    @property
    def key(self) -> str:
        server = "nginx" if self.server == "nginx-batch" else self.server
        return f"{server}-w{self.workers}-b{self.batch_size}{self.tag}"

    def row_id(self, tool: str) -> str:
        return f"{tool}-{self.key}"


def suite(quick: bool, runs: int) -> list[Scenario]:
    """The rows of a full or a quick run."""
    everyone = ("ours", "original", "mlserver")
    headline = ("ours", "ours-treq", "original", "mlserver", "ours-v2")
    grpc = ("ours-grpc", "original-grpc")
    if quick:
        return [
            Scenario("nginx", 1, 1, 1, everyone, runs, 60, "startup: one line", tag="-startup"),
            Scenario("nginx", 50, 1, 5_000, headline, runs, 120, "nginx, 50 workers (headline)"),
            Scenario("nginx-batch", 50, ROWS, 16_000, everyone, runs, 120, f"nginx, --batch-size {ROWS}"),
            Scenario("latency", 200, 1, 5_000, everyone, runs, 120, "10 ms latency, 200 workers"),
            Scenario("seldon", 50, 1, 1_000, ("ours", "original", *grpc), runs, 120, "real Seldon microservice"),
            Scenario("grpc-echo", 50, 1, 2_000, grpc, runs, 120, "gRPC echo server"),
            Scenario("nginx", 50, 1, 50_000, ("ours",), 1, 120, "memory: 50,000 lines", tag="-mem"),
        ]
    # Files sized so that each run of ours lasts a few seconds (connection set-up and start-up are
    # then a small part of it); slower tools run the same file and are cut after CUT seconds, their
    # rate taken over the lines they finished (the `cut at` note).
    slow = ("original", "mlserver", "ours-treq", "original-grpc")
    cut: dict[str, Any] = {"partial_ok": slow, "cut_after": CUT}
    return [
        Scenario("nginx", 1, 1, 1, everyone, runs, 60, "startup: one line", tag="-startup"),
        Scenario("nginx", 1, 1, 10_000, everyone, runs, 120, "nginx, 1 worker", **cut),
        Scenario("nginx", 50, 1, 50_000, headline, runs, 180, "nginx, 50 workers (headline)", **cut),
        Scenario("nginx", 200, 1, 50_000, everyone, runs, 180, "nginx, 200 workers", **cut),
        Scenario("nginx-batch", 50, ROWS, 320_000, everyone, runs, 180, f"nginx, --batch-size {ROWS}", **cut),
        *(Scenario("latency", w, 1, latency_lines(w), everyone, runs, 180, f"10 ms latency, {w:,} workers", **cut)
          for w in (50, 200, 1000)),
        Scenario("seldon", 50, 1, 5_000, ("ours", "original", *grpc), runs, 120, "real Seldon microservice"),
        Scenario("grpc-echo", 50, 1, 10_000, grpc, runs, 120, "gRPC echo server", **cut),
        Scenario("nginx", 50, 1, 1_000_000, ("ours", "original", "mlserver"), 1, 600,
                 "memory: 1,000,000 lines (others cut at 45 s)", partial_ok=("ours", "original", "mlserver"),
                 tag="-mem", cut_after=45.0),
    ]


def latency_lines(workers: int) -> int:
    """Lines for the 10 ms latency rows: about 3 s at the ideal rate (workers / 10 ms), at most 100,000."""
    return min(max(5_000, workers * 300), 100_000)


@dataclass
class Row:
    """The runs of one tool in one scenario, and the figures taken from them."""

    scenario: Scenario
    tool: Tool
    runs: list[RunResult] = field(default_factory=list)
    skipped: str = ""
    startup: tuple[float, float] | None = None  # the tool's (wall, CPU) seconds for one line
    loads: list[float] = field(default_factory=list)  # 1-minute load average as each run started

    @property
    def id(self) -> str:
        return self.scenario.row_id(self.tool.name)

    @property
    def good(self) -> list[RunResult]:
        partial = self.tool.name in self.scenario.partial_ok
        return [r for r in self.runs if r.valid or (partial and r.timed_out and r.errors == 0)]

    def rates(self, net: bool = True) -> list[float]:
        """Datapoints (lines) per second of each good run; `net` takes the tool's start-up
        time (its one-line run) off the wall time."""
        off = self.startup[0] if (net and self.startup) else 0.0
        return [r.lines_out / max(r.wall - off, MIN_NET * r.wall) for r in self.good if r.wall > 0]

    def rate(self, net: bool = True) -> float | None:
        rates = self.rates(net)
        return statistics.median(rates) if rates else None

    def cpu_per_1k(self, net: bool = True) -> float | None:
        """Client CPU ms per 1,000 requests (a mini-batch is one request), less start-up CPU."""
        off = self.startup[1] if (net and self.startup) else 0.0
        values = [1e6 * max(r.cpu - off, 0.0) / max(1, self.requests(r)) for r in self.good]
        return statistics.median(values) if values else None

    def requests(self, r: RunResult) -> int:
        return -(-r.lines_out // self.scenario.batch_size)

    def rss_mb(self) -> float | None:
        values = [r.maxrss_kb / 1024 for r in self.good]
        return statistics.median(values) if values else None

    @property
    def partial(self) -> bool:
        return any(r.timed_out for r in self.good)


def attach_startup(rows: list[Row]) -> None:
    """Give every row its tool family's start-up cost (least wall and CPU of the one-line runs):
    ``ours-grpc`` and ``ours-treq`` take ``ours``'s, ``original-grpc`` takes ``original``'s."""
    startup: dict[str, tuple[float, float]] = {}
    for row in rows:
        if row.scenario.tag == "-startup" and row.good:
            # Start-up is imports and set-up, all CPU: its CPU time is its wall time on a free core,
            # and, unlike wall time, does not swell when the shared machine is busy.
            startup[row.tool.name] = (min(min(r.wall, r.cpu) for r in row.good), min(r.cpu for r in row.good))
    for row in rows:
        if row.scenario.tag != "-startup":
            family = row.tool.name.split("-")[0]
            row.startup = startup.get(row.tool.name) or startup.get(family)


def make_inputs(directory: Path, protocol: str, lines: int) -> Path:
    """The input file of `lines` one-row datapoints: Seldon ndarray lines, or the equivalent
    V2 InferenceRequest lines for `mlserver infer`."""
    path = directory / f"{protocol}-{lines}.txt"
    if path.exists():
        return path
    with open(path, "w") as f:
        for i in range(lines):
            if protocol == "v2":
                f.write(compact({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64",
                                             "data": [float(i % 1000), 2.5, 3.0, 4.0]}]}) + "\n")
            else:
                f.write(f"[[{i % 1000}, 2.5, 3, 4]]\n")
    return path


class Servers:
    """Starts each server the selected rows need, once, and stops them all at the end."""

    def __init__(self, stack: contextlib.ExitStack, needed: set[str], quick: bool) -> None:
        self.stack = stack
        self.needed = needed
        self.quick = quick
        self.nginx: NginxServer | None = None
        self.latency: LatencyServer | None = None
        self.seldon: Any = None
        self.grpc_echo: GrpcEchoServer | None = None
        self.ceilings: dict[tuple[str, str, int], float] = {}
        self.descriptions: dict[str, str] = {}

    def start(self) -> None:
        if self.needed & {"nginx", "nginx-batch"}:
            self.nginx = self.stack.enter_context(NginxServer(workers=1, rows=ROWS))
            self.descriptions["nginx"] = self.nginx.describe()
        if "latency" in self.needed:
            self.latency = self.stack.enter_context(LatencyServer(delay=0.01, processes=2))
            self.descriptions["latency"] = self.latency.describe()
        if "seldon" in self.needed:
            from tests.servers import SeldonServer, ensure_seldon_venv

            ensure_seldon_venv()
            self.seldon = self.stack.enter_context(SeldonServer("EchoModel", workers=2))
            self.descriptions["seldon"] = "real Seldon 1.18.2 microservice, EchoModel, GUNICORN_WORKERS=2"
        if "grpc-echo" in self.needed:
            self.grpc_echo = self.stack.enter_context(GrpcEchoServer(processes=2))
            self.descriptions["grpc-echo"] = self.grpc_echo.describe()

    def host(self, server: str, tool: Tool) -> str:
        if server == "nginx" and self.nginx:
            return self.nginx.host
        if server == "nginx-batch" and self.nginx:
            return self.nginx.batch_host
        if server == "latency" and self.latency:
            return self.latency.host
        if server == "grpc-echo" and self.grpc_echo is not None:
            return self.grpc_echo.host
        if server == "seldon" and self.seldon is not None:
            return str(self.seldon.grpc_host if tool.transport == "grpc" else self.seldon.rest_host)
        raise RuntimeError(f"server {server} for {tool.name} is not running")

    def ceiling(self, scenario: Scenario, transport: str) -> float | None:
        """Requests/s on the scenario's server at the same concurrency: `wrk` over REST, a plain
        grpc.aio loop over gRPC.  Measured once per (server, transport, workers)."""
        if scenario.lines < 100:
            return None
        key = (scenario.server, transport, scenario.workers)
        if key not in self.ceilings:
            duration = 3.0 if self.quick else 5.0
            tool = TOOLS["ours-grpc" if transport == "grpc" else "ours"]
            host = self.host(scenario.server, tool)
            if transport == "grpc":
                self.ceilings[key] = grpc_load_rate(host, scenario.workers, duration=duration)
            else:
                body = compact({"data": {"ndarray": [[1, 2.5, 3, 4]] * scenario.batch_size}})
                self.ceilings[key] = wrk_rate(f"http://{host}/api/v1.0/predictions", body, scenario.workers,
                                              duration=duration)
        return self.ceilings[key] or None


def selected(scenarios: Sequence[Scenario], patterns: Sequence[str]) -> list[tuple[Scenario, str]]:
    """(scenario, tool) pairs whose row id matches one of `patterns` (all when none)."""
    pairs = [(s, t) for s in scenarios for t in s.tools]
    if not patterns:
        return pairs
    return [(s, t) for s, t in pairs
            if any(s.row_id(t).startswith(p) or fnmatch.fnmatch(s.row_id(t), p) for p in patterns)]


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def fmt_spread(values: list[float]) -> str:
    if len(values) < 2:
        return ""
    return f"{min(values):,.0f}-{max(values):,.0f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def table(rows: list[Row], servers: Servers) -> list[str]:
    """The result table as markdown lines."""
    tools = [name for name in TOOLS if any(r.tool.name == name for r in rows)]
    header = ["row", "tool", "server", "w", "batch", "lines", "datapoints/s", "min-max", "gross dp/s", "req/s",
              "CPU ms/1k req", "peak RSS MB", "% ceiling", *[f"vs {t}" for t in tools], "load", "note"]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    by_scenario: dict[Scenario, dict[str, Row]] = {}
    for row in rows:
        by_scenario.setdefault(row.scenario, {})[row.tool.name] = row
    for scenario, members in by_scenario.items():
        for row in members.values():
            ceiling = servers.ceilings.get((scenario.server, row.tool.transport, scenario.workers)) or None
            rate = row.rate()
            req_rate = None if rate is None else rate / scenario.batch_size
            notes = []
            if row.skipped:
                notes.append(row.skipped)
            bad = [r for r in row.runs if r not in row.good]
            if bad:
                notes.append(f"{len(bad)} invalid run(s): {bad[0].why_invalid}")
            if row.partial:
                cut = row.good[0]
                notes.append(f"cut at {cut.wall:.0f} s: {cut.lines_out:,} of {cut.lines_in:,} lines done")
            ratios = [fmt_ratio(rate, members[t].rate()) if t in members and t != row.tool.name else ""
                      for t in tools]
            cpu, rss = row.cpu_per_1k(), row.rss_mb()
            if scenario.tag == "-startup" and row.good:
                notes.append(f"start-up: {statistics.median(r.wall for r in row.good):.2f} s wall, "
                             f"{statistics.median(r.cpu for r in row.good):.2f} s CPU")
                rate = req_rate = cpu = None
            elif not row.startup and row.good:
                notes.append("start-up not measured: figures include it")
            cells = [
                row.id, row.tool.label, scenario.server, str(scenario.workers), str(scenario.batch_size),
                f"{scenario.lines:,}", fmt_rate(rate), fmt_spread(row.rates()), fmt_rate(row.rate(net=False)),
                fmt_rate(req_rate), "-" if cpu is None else f"{cpu:,.0f}", "-" if rss is None else f"{rss:.0f}",
                "-" if not (req_rate and ceiling) else f"{100 * req_rate / ceiling:.1f}%",
                *ratios, f"{statistics.median(row.loads):.1f}" if row.loads else "-", "; ".join(notes),
            ]
            out.append("| " + " | ".join(cells) + " |")
    return out


def ceiling_lines(servers: Servers) -> list[str]:
    lines = ["| server | transport | connections | ceiling requests/s | measured by | ideal (workers / latency) |",
             "|---|---|---|---|---|---|"]
    for (server, transport, workers), rate in sorted(servers.ceilings.items()):
        ideal = f"{workers / 0.01:,.0f}" if server == "latency" else ""
        by = "grpc.aio loop, 1 channel" if transport == "grpc" else "wrk, 1 thread, POST"
        name = "nginx" if server == "nginx-batch" else server
        what = servers.descriptions.get(name, "")
        if server == "nginx-batch":
            what += f", {ROWS}-row bodies"
        lines.append(f"| {server} ({what}) | {transport} | {workers} | {rate:,.0f} | {by} | {ideal} |")
    return lines


def headline(rows: list[Row], ceilings: dict[tuple[str, str, int], float]) -> list[str]:
    """The targets of issues 2 and 6, read off the table (reported, never asserted)."""
    find: dict[str, Row] = {r.id: r for r in rows}

    def rate(row_id: str) -> float | None:
        row = find.get(row_id)
        return row.rate() if row else None

    out = []
    ours, orig, mls = rate("ours-nginx-w50-b1"), rate("original-nginx-w50-b1"), rate("mlserver-nginx-w50-b1")
    if ours and orig:
        x = ours / orig
        out.append(f"- nginx, 50 workers: ours {ours:,.0f}/s vs original {orig:,.0f}/s = {x:.2f}x "
                   f"(issue 2 goal >= 5x: {'met' if x >= 5 else 'not met'}; "
                   f"issue 6 goal >= 10x: {'met' if x >= 10 else 'not met'})")
    if ours and mls:
        x = ours / mls
        out.append(f"- nginx, 50 workers: ours vs mlserver infer {mls:,.0f}/s = {x:.2f}x "
                   f"(issue 6 goal >= 4x: {'met' if x >= 4 else 'not met'})")
    v2 = rate("ours-v2-nginx-w50-b1")
    if v2 and mls:
        out.append(f"- nginx, 50 workers, same V2 file: ours --protocol v2 {v2:,.0f}/s vs mlserver infer "
                   f"{mls:,.0f}/s = {v2 / mls:.2f}x")
    b32 = rate(f"ours-nginx-w50-b{ROWS}")
    if ours and b32:
        x = b32 / ours
        out.append(f"- --batch-size {ROWS}: {b32:,.0f} datapoints/s = {x:.1f}x batch size 1 "
                   f"(goal >= 20x: {'met' if x >= 20 else 'not met'})")
    for workers in (50, 200, 1000):
        r = rate(f"ours-latency-w{workers}-b1")
        if r:
            ideal = workers / 0.01
            wrk = ceilings.get(("latency", "rest", workers))
            server = f"; the server's own ceiling (wrk) {wrk:,.0f}/s, ours = {100 * r / wrk:.0f}% of it" if wrk else ""
            if ours and ideal >= ours:
                goal = f"goal does not apply: the ideal is above ours' nginx rate {ours:,.0f}/s"
            else:
                goal = f"goal >= 90%: {'met' if r >= 0.9 * ideal else 'not met'}"
            out.append(f"- 10 ms latency, {workers} workers: {r:,.0f}/s = {100 * r / ideal:.0f}% of ideal "
                       f"{ideal:,.0f}/s ({goal}{server})")
    mem, small = find.get("ours-nginx-w50-b1-mem"), find.get("ours-nginx-w50-b1")
    if mem and mem.rss_mb():
        line = f"- memory: {mem.scenario.lines:,} lines, peak RSS {mem.rss_mb():.0f} MB"
        if small and small.rss_mb():
            line += (f" vs {small.rss_mb():.0f} MB for {small.scenario.lines:,} lines "
                     f"({100 * (mem.rss_mb() or 0) / (small.rss_mb() or 1) - 100:+.0f}%)")
        out.append(line + " (goal < 80 MB and within 10%)")
    return out


def machine_info() -> list[str]:
    def run(cmd: list[str]) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            return "?"

    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = f"{int(Path('/proc/meminfo').read_text().split()[1]) // 1024:,} MB"
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores; memory {mem}",
        f"- OS: {platform.platform()}; Python {platform.python_version()}",
        f"- servers: {run([NGINX, '-v'])}; {run([WRK, '-v'])}",
        f"- code: commit {run(['git', '-C', str(REPO_ROOT), 'rev-parse', '--short', 'HEAD'])}"
        f"{' plus uncommitted changes' if run(['git', '-C', str(REPO_ROOT), 'status', '--porcelain']) != '?' else ''}",
        f"- load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
    ]


def run_rows(pairs: list[tuple[Scenario, str]], servers: Servers, workdir: Path, deadline: float) -> list[Row]:
    rows: list[Row] = []
    for scenario, name in pairs:
        tool = TOOLS[name]
        row = Row(scenario, tool)
        rows.append(row)
        if not tool.needs.exists():
            row.skipped = f"{tool.needs} missing"
            continue
        if time.monotonic() > deadline:
            row.skipped = "skipped: suite time limit"
            continue
        servers.ceiling(scenario, tool.transport)
        input_path = make_inputs(workdir, tool.protocol, scenario.lines)
        job = Job(servers.host(scenario.server, tool), input_path, workdir / f"{row.id}.out",
                  scenario.workers, scenario.batch_size)
        timeout = scenario.timeout
        if scenario.cut_after is not None and name in scenario.partial_ok and name != "ours":
            timeout = scenario.cut_after
        for i in range(scenario.runs):
            row.loads.append(os.getloadavg()[0])
            result = measure(tool, job, scenario.lines, timeout, workdir / f"{row.id}.log")
            row.runs.append(result)
            status = "ok" if result.valid else ("partial" if result.timed_out else "INVALID")
            print(f"  {row.id:<32} run {i + 1}/{scenario.runs}: {result.lines_out / max(result.wall, 1e-9):9,.0f}"
                  f" lines/s  {result.wall:6.2f} s  cpu {result.cpu:6.2f} s  rss {result.maxrss_kb / 1024:5.0f} MB"
                  f"  {status}", flush=True)
            if not result.valid and not result.timed_out and result.log_tail:
                print("    " + result.log_tail.replace("\n", "\n    "), flush=True)
            if result.timed_out and name not in scenario.partial_ok:
                break  # a row that does not finish in time will not next time either
        with contextlib.suppress(FileNotFoundError):
            job.output_path.unlink()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run per row, smaller files (~4 minutes)")
    parser.add_argument("--only", default="", help="comma-separated row id prefixes or fnmatch patterns")
    parser.add_argument("--runs", type=int, default=None, help="runs per row (default 3, --quick 1)")
    parser.add_argument("--no-results", action="store_true", help=f"do not write {RESULTS.name}")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write the markdown results")
    parser.add_argument("--list", action="store_true", help="print the row ids and exit")
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    patterns = [p.strip() for p in args.only.split(",") if p.strip()]
    pairs = selected(suite(args.quick, runs), patterns)
    if args.list:
        for scenario, name in pairs:
            print(f"{scenario.row_id(name):<36} {scenario.title}")
        return 0
    if not pairs:
        print(f"bench: no row matches {args.only!r}; see --list", file=sys.stderr)
        return 2
    # SIGTERM unwinds like Ctrl-C, so that the ExitStack stops every server this run started
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.monotonic()
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info = machine_info()
    missing = ensure_installed([TOOLS[name] for _, name in pairs])
    if missing:
        print(f"bench: not installed, rows skipped: {', '.join(missing)}", flush=True)
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        servers = Servers(stack, {s.server for s, _ in pairs}, args.quick)
        servers.start()
        print(f"bench: {len(pairs)} rows, {runs} run(s) each; servers: "
              f"{'; '.join(servers.descriptions.values())}", flush=True)
        rows = run_rows(pairs, servers, Path(tmp), started + SUITE_DEADLINE)
    attach_startup(rows)
    elapsed = time.monotonic() - started
    command = "bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = [
        "# Benchmark results", "",
        f"Date: {date}. Command: `.venv/bin/python {command.strip()}` ({elapsed / 60:.1f} minutes).", "",
        "## Machine", "", *info,
        f"- load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", "",
        "## Server ceilings", "", *ceiling_lines(servers), "",
        "## Rows", "", *table(rows, servers), "",
        "## Targets", "", *(headline(rows, servers.ceilings) or ["- (rows for the targets were not run)"]), "",
        "## How to read it", "",
        *METHOD,
    ]
    text = "\n".join(report) + "\n"
    print()
    print(text)
    if not args.no_results:
        args.results.write_text(text)
        print(f"bench: wrote {args.results}")
    return 0


METHOD = [
    "- Every row is one tool (a child process) over the same input file against the same loopback server.",
    "- `datapoints/s` = input lines / (wall time of the whole process - the tool's start-up time), median of",
    "  the runs, `min-max` over the runs; start-up = the least wall time of the tool's one-line runs (the",
    "  `-startup` rows; its CPU time, which load on the shared machine does not inflate; gRPC/treq rows use",
    "  their family's; never more than 75% of a run's wall).  `gross dp/s` = lines / whole wall time, start-up",
    "  included (what a user waiting for a small file sees).  `req/s` = datapoints/s / batch size.",
    "- `CPU ms/1k req` = user+system CPU of the child (os.wait4) less the start-up CPU, per 1,000 requests",
    "  (one mini-batch = one request); `peak RSS` = ru_maxrss of the child.",
    "- `% ceiling` = req/s / what `wrk` (REST: 1 thread, same connections) or a plain grpc.aio loop (gRPC:",
    "  one channel, same concurrency) reaches on the same server in the same run.",
    "- `vs X` = this row's datapoints/s / tool X's in the same scenario.",
    "- A run counts only if its output has exactly one line per input line and no error line; invalid runs",
    "  are listed in the note and left out of the figures.",
    "- Input: Seldon rows `[[i, 2.5, 3, 4]]` (`-a data -p ndarray`, gateway `seldon`); mlserver gets the",
    "  equivalent V2 request per line (`FP64`, shape [1, 4]).  Default settings otherwise (log level, retries).",
    "- The machine is shared with other work while this runs: absolute numbers are noisy, ratios within",
    "  one run are what to compare; `load` is the 1-minute load average as the row's runs started (2 cores).",
]


if __name__ == "__main__":
    sys.exit(main())
