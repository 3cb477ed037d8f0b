"""Does a change cost throughput?  This processor at a git ref against the working tree, runs interleaved.

    .venv/bin/python bench/ab.py --baseline REF [--current REF] [--runs 7] [--lines 50000]
                                 [--workers 50] [--batch-size 1|32] [--ours-args "--opt v ..."]

Why interleaved: on a shared 2-core machine the load drifts by tens of percent within minutes, so
"before" measured at one time and "after" at another says little.  Here both versions run the
headline row (the nginx fixed-response server of bench/run.py, one nginx worker, 50 workers, one
line per request) in turn: A B A B ...  Each version's figure is the median of its runs; the
ratio current/baseline is printed with the spread of the pairwise ratios.

The baseline (and ``--current`` when given, say to bisect) runs from a temporary ``git worktree``
of REF on the same venv (PYTHONPATH), so it must not need packages the venv lacks.  Client CPU per
1,000 lines (``os.wait4``) is printed too: it drifts less with the machine's load than the rate.
Every run is checked like bench/run.py's: one output
line per input line and no error line.  Both trees' bytecode is written first (``compileall``),
as for an installed copy.  Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.servers import REPO_ROOT, NginxServer  # noqa: E402
from bench.suite import ROWS, make_inputs  # noqa: E402
from bench.tools import TOOLS, Job, Tool, compiled, measure, ours  # noqa: E402


@contextlib.contextmanager
def worktree(ref: str) -> Iterator[Path]:
    """A detached worktree of ``ref``, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        path = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", "-q", str(path), ref],
                       check=True, timeout=120)
        try:
            yield path
        finally:
            subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", str(path)],
                           check=False, timeout=120)


def short(ref: str) -> str:
    return subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", ref], capture_output=True,
                          text=True, check=True, timeout=30).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="git ref of the version to compare against")
    parser.add_argument("--current", default=None, help="git ref to measure instead of the working tree")
    parser.add_argument("--runs", type=int, default=7, help="runs of each version")
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--batch-size", type=int, choices=(1, ROWS), default=1,
                        help=f"1 (the headline row) or {ROWS}: nginx's {ROWS}-row answers, datapoints/s")
    parser.add_argument("--timeout", type=float, default=180.0, help="bound of one run")
    parser.add_argument("--ours-args", type=shlex.split, default=[], help="extra options for both versions")
    args = parser.parse_args(argv)
    revision = short(args.baseline)
    current = replace(TOOLS["ours"], build=ours("rest", *args.ours_args))
    rates: dict[str, list[float]] = {"baseline": [], "current": []}
    cpus: dict[str, list[float]] = {"baseline": [], "current": []}
    rss: dict[str, list[float]] = {"baseline": [], "current": []}
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        tree = stack.enter_context(worktree(args.baseline))
        baseline: Tool = replace(current, name=f"ours@{revision}", env={"PYTHONPATH": str(tree)})
        current_tree = REPO_ROOT
        if args.current:
            current_tree = stack.enter_context(worktree(args.current))
            current = replace(current, name=f"ours@{short(args.current)}", env={"PYTHONPATH": str(current_tree)})
        for measured in (tree, current_tree):
            compiled(measured)  # both as installed: no module compiled at each start
        nginx = stack.enter_context(NginxServer(workers=1, rows=ROWS))
        work = Path(tmp)
        host = nginx.host if args.batch_size == 1 else nginx.batch_host
        job = Job(host, make_inputs(work, "seldon", args.lines), work / "out.txt", args.workers, args.batch_size)
        for i in range(args.runs):
            for label, tool in (("baseline", baseline), ("current", current)):
                result = measure(tool, job, args.lines, args.timeout, work / f"{label}.log")
                if not result.valid:
                    print(f"bench: {label} run {i + 1} invalid: {result.lines_out} lines, {result.errors} errors,"
                          f" exit {result.returncode}\n{result.log_tail}", file=sys.stderr)
                    return 1
                rate = result.lines_out / result.wall
                rates[label].append(rate)
                cpus[label].append(1000 * result.cpu / result.lines_out)
                rss[label].append(result.maxrss_kb / 1024)
                print(f"  {label:<8} run {i + 1}/{args.runs}: {rate:9,.0f} lines/s  cpu {result.cpu:6.2f} s"
                      f"  peak RSS {result.maxrss_kb / 1024:5.1f} MB", flush=True)
    names = {"baseline": f"baseline {revision}",
             "current": f"current {short(args.current) if args.current else '(working tree)'}"}
    print("\n| version | median lines/s | runs | median CPU s per 1,000 lines | median peak RSS MB |\n"
          "|---|---|---|---|---|")
    for label, name in names.items():
        print(f"| {name} | {statistics.median(rates[label]):,.0f} | {', '.join(f'{r:,.0f}' for r in rates[label])}"
              f" | {statistics.median(cpus[label]):.3f} | {statistics.median(rss[label]):.1f} |")
    for what, figures in (("lines/s", rates), ("CPU per line", cpus)):
        pairs = sorted(c / b for b, c in zip(figures["baseline"], figures["current"], strict=True))
        ratio = statistics.median(figures["current"]) / statistics.median(figures["baseline"])
        print(f"current/baseline {what}: {ratio:.3f} (pairwise {pairs[0]:.3f}-{pairs[-1]:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
