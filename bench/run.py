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
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import METHOD, ceiling_lines, headline, machine_info, table  # noqa: E402
from bench.servers import REPO_ROOT  # noqa: E402
from bench.suite import Row, Scenario, Servers, attach_startup, make_inputs, selected, suite  # noqa: E402
from bench.tools import TOOLS, Job, compiled, ensure_installed, measure  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SUITE_DEADLINE = 40 * 60.0  # seconds: rows not started by then are skipped


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
    compiled(REPO_ROOT)  # measured as installed: no module compiled at each start
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


if __name__ == "__main__":
    sys.exit(main())
