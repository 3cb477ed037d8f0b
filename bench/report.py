"""What the benchmark suite prints: the table (median and spread, ratios to every tool and to the
server's ceiling), the ceilings, the headline, the machine and the method notes.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
from pathlib import Path

from bench.servers import (
    NGINX,
    REPO_ROOT,
    WRK,
)
from bench.suite import (
    ROWS,
    Row,
    Scenario,
    Servers,
)
from bench.tools import TOOLS


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
