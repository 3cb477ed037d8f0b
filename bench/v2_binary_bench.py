"""V2 over REST to a real Triton with image-sized rows: JSON tensors against ``--binary-data``.

    .venv/bin/python bench/v2_binary_bench.py [-n 100] [--workers 2] [--batch-size 1] [--runs 2]

Writes ``-n`` lines, each one 3x224x224 FP32 image (150,528 numbers, about 1 MB of JSON text),
starts Triton (tests/triton_servers.py, model ``bench_image_mean``: the mean of each image) on
loopback, then runs the real ``seldon-batch-processor`` on them with no ``-p`` and no
``--input-name`` (the model's metadata gives both), once sending JSON tensors and once
``--binary-data``, and prints lines/s of the whole run (best of ``--runs``), the client's CPU
per line (the processor's own process, from os.wait4), the server's (Triton's process group, from
/proc) and binary/JSON. The issue's goal:
binary at least 3x JSON's lines/s. A run counts only when every line has its result (no error line).
The server shares the machine's cores: its own JSON parsing is in the JSON row's wall time too.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.tools import PROJECT_PYTHON, Job, RunResult, Tool, measure, our_prefix  # noqa: E402
from tests.processes import group_pids  # noqa: E402
from tests.triton_servers import TritonServer, ensure_triton_venv  # noqa: E402

MODEL = "bench_image_mean"
PIXELS = 3 * 224 * 224


def write_images(path: Path, count: int, seed: int = 7) -> None:
    """``count`` lines of 3x224x224 values in [0, 1) with 3 decimals (as images scaled to [0, 1] are)."""
    rng = random.Random(seed)
    values = [f"{rng.random():.3f}" for _ in range(PIXELS)]
    with open(path, "w") as f:
        for i in range(count):
            shift = i % PIXELS  # every line different, without generating 150,528 numbers per line
            row = values[shift:] + values[:shift]
            planes = [",".join(row[at:at + 224]) for at in range(0, PIXELS, 224)]  # 3 x 224 rows of 224
            text = "[" + ",".join(
                "[" + ",".join(f"[{planes[c * 224 + r]}]" for r in range(224)) + "]" for c in range(3)) + "]"
            f.write(text + "\n")


def ours(*extra: str) -> Callable[[Job], list[str]]:
    def build(job: Job) -> list[str]:
        return [*our_prefix(), "--protocol", "v2", "-d", MODEL, "-g", "seldon", "-h", job.host, "-t", "rest",
                "-w", str(job.workers), "-s", str(job.batch_size), "-i", str(job.input_path),
                "-o", str(job.output_path), "--timeout", "120", *extra]
    return build


TOOLS = [Tool("json", "V2 REST, JSON tensors", "v2", "rest", ours(), b'"FAILURE"', PROJECT_PYTHON),
         Tool("binary", "V2 REST, --binary-data", "v2", "rest", ours("--binary-data"), b'"FAILURE"', PROJECT_PYTHON)]


def server_cpu(pgid: int) -> float:
    """CPU seconds used so far by Triton's process group (the server and its Python-backend stubs)."""
    ticks = 0
    for pid in group_pids(pgid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def best(tool: Tool, job: Job, lines: int, runs: int, log: Path, pgid: int) -> tuple[RunResult, float] | None:
    """The fastest valid run, with the server's CPU seconds during it."""
    results = []
    for _ in range(runs):
        before = server_cpu(pgid)
        result = measure(tool, job, lines, timeout=900, log_path=log)
        results.append((result, server_cpu(pgid) - before))
    valid = [(r, cpu) for r, cpu in results if r.valid]
    for r, _ in results:
        if not r.valid:
            print(f"  {tool.name}: invalid run (exit {r.returncode}, {r.lines_out}/{lines} lines, "
                  f"{r.errors} errors)\n{r.log_tail}")
    return min(valid, key=lambda x: x[0].wall) if valid else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--lines", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    ensure_triton_venv()
    with tempfile.TemporaryDirectory(prefix="v2-binary-bench-") as tmp:
        src = Path(tmp) / "images.txt"
        write_images(src, args.lines)
        print(f"{args.lines} lines of 3x224x224 FP32, {src.stat().st_size / args.lines / 1e6:.2f} MB of JSON each; "
              f"-w {args.workers} -s {args.batch_size}, best of {args.runs}")
        with TritonServer([MODEL]) as server:
            job = Job(server.rest_host, src, Path(tmp) / "images.out.txt", args.workers, args.batch_size)
            rates: dict[str, float] = {}
            assert server.pid is not None
            print(f"{'row':<26}{'lines/s':>10}{'wall s':>9}{'client CPU ms/line':>20}{'server CPU ms/line':>20}")
            for tool in TOOLS:
                found = best(tool, job, args.lines, args.runs, Path(tmp) / f"{tool.name}.log", server.pid)
                if found is None:
                    print(f"{tool.label:<26}{'invalid':>10}")
                    continue
                result, server_seconds = found
                rates[tool.name] = args.lines / result.wall
                print(f"{tool.label:<26}{rates[tool.name]:>10.1f}{result.wall:>9.2f}"
                      f"{1000 * result.cpu / args.lines:>20.1f}{1000 * server_seconds / args.lines:>20.1f}")
        if len(rates) == 2:
            print(f"binary / JSON lines/s: {rates['binary'] / rates['json']:.1f}x (goal: at least 3x)")
    return 0 if len(rates) == 2 else 1


if __name__ == "__main__":
    sys.exit(main())
