"""What the benchmark suite runs: its scenarios (server x workers x batch size, the tools on each),
their input files, the loopback servers each needs, and one row's measured runs.
"""

from __future__ import annotations

import contextlib
import fnmatch
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.servers import (
    GrpcEchoServer,
    LatencyServer,
    NginxServer,
    compact,
    grpc_load_rate,
    wrk_rate,
)
from bench.tools import TOOLS, RunResult, Tool

ROWS = 32  # the mini-batch size of the batch rows


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
