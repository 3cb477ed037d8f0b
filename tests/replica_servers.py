"""Replicas behind one address, for issue 13: the real Seldon Core 1.18.2 microservice with N REST
(gunicorn) and N gRPC worker processes serving tests/models/PidModel.py, which answers with its
process id, plus a way to add processes during a run and to measure how a batch run spread.

How the processes share one port (as a Kubernetes Service spreads connections over pods):
- REST: gunicorn's workers (``gthread`` when threads > 1, which keeps connections alive; the sync
  worker closes every connection) all accept on the master's one listening socket, so each
  connection goes to whichever worker accepts it first.  ``SIGTTIN`` to the master (the launcher's
  own pid: gunicorn's arbiter runs in the microservice's main process) adds one worker.
- gRPC: each of ``--grpc-workers`` processes listens on the port with ``SO_REUSEPORT``; the kernel
  hashes each new connection onto one of them.  The microservice cannot add gRPC processes, so
  :meth:`ReplicaSeldonServer.add_grpc_processes` starts a second microservice whose gRPC workers
  join the same ``SO_REUSEPORT`` group (its REST and metrics ports are its own): new connections
  then hash over old and new processes, as with a new pod behind a Service.

Which process serves which port is read from /proc: the pids holding a LISTEN socket on it.
Everything is on 127.0.0.1; each server runs in a process group of its own, stopped by that group.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tests.loopback import LOOPBACK, http_request, loopback_env
from tests.processes import group_pids, stop_group
from tests.servers import REPO_ROOT, SELDON_BATCH_PROCESSOR, SeldonServer

MODELS_DIR = Path(__file__).resolve().parent / "models"
OURS = REPO_ROOT / ".venv" / "bin" / "seldon-batch-processor"
SELDON_BATCH = REPO_ROOT / ".venv" / "bin" / "seldon-batch"
Tool = Literal["ours", "original"]
Transport = Literal["rest", "grpc"]


# /proc: who listens where ---------------------------------------------------------------------
def _listening_inodes(port: int) -> set[str]:
    """Socket inodes LISTENing on `port` at 127.0.0.1 or any address, IPv4 or IPv6 (gRPC's
    listeners are IPv6 sockets bound to ::ffff:127.0.0.1)."""
    loopback = {"0100007F", "00000000", "0000000000000000FFFF00000100007F", "0" * 32,
                "00000000000000000000000001000000"}
    inodes: set[str] = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as table:
                rows = table.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            host, _, hex_port = fields[1].partition(":")
            if fields[3] == "0A" and int(hex_port, 16) == port and host in loopback:
                inodes.add(fields[9])
    return inodes


def listening_pids(port: int, pgids: list[int]) -> set[int]:
    """The pids of groups `pgids` that hold a socket listening on `port`."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    found: set[int] = set()
    for pgid in pgids:
        for pid in group_pids(pgid):
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                        found.add(pid)
                        break
                except OSError:
                    continue
    return found


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


# servers ------------------------------------------------------------------------------------
class _GrpcJoiner(SeldonServer):
    """A second microservice whose gRPC workers join the first one's SO_REUSEPORT gRPC port."""

    name = "seldon gRPC joiner"

    def start(self) -> _GrpcJoiner:
        self.spawn(self.command(), cwd=self.model_dir, env=self.environment())
        self.wait_ready_or_stop(self.startup_timeout)
        return self

    def is_ready(self) -> bool:
        try:
            status, _ = http_request("GET", self.rest_host, "/health/ping", timeout=2.0)
        except OSError:
            return False
        pgids = [] if self.pid is None else [self.pid]
        return status == 200 and len(listening_pids(self.grpc_port, pgids)) >= self.grpc_workers


class ReplicaSeldonServer(SeldonServer):
    """The real microservice serving PidModel with `rest` gunicorn workers (`threads` each) and
    `grpc` gRPC processes on one port each; ready once all of them listen."""

    name = "seldon replicas"

    def __init__(self, rest: int = 4, grpc: int = 4, threads: int = 4, **kwargs: Any) -> None:
        super().__init__("PidModel", MODELS_DIR, workers=rest, threads=threads, grpc_workers=grpc,
                         grpc_threads=threads, **kwargs)
        self.joiners: list[_GrpcJoiner] = []

    def is_ready(self) -> bool:
        return (super().is_ready() and len(self.rest_worker_pids()) >= self.workers
                and len(self.grpc_worker_pids()) >= self.grpc_workers)

    def rest_worker_pids(self) -> set[int]:
        """Gunicorn's REST workers (the master holds the listening socket too, but never serves)."""
        if self.pid is None:
            return set()
        return listening_pids(self.http_port, [self.pid]) - {self.pid}

    def grpc_worker_pids(self) -> set[int]:
        """Every gRPC process on the port, those of :meth:`add_grpc_processes` included."""
        pgids = [p.pid for p in (self, *self.joiners) if p.pid is not None]
        return listening_pids(self.grpc_port, pgids)

    def add_rest_workers(self, count: int, timeout: float = 10.0) -> set[int]:
        """Send gunicorn's master one SIGTTIN per worker (waiting for each, as signals coalesce);
        return the new workers' pids."""
        if self.pid is None:
            raise RuntimeError("server not running")
        before = self.rest_worker_pids()
        for n in range(1, count + 1):
            os.kill(self.pid, signal.SIGTTIN)
            _wait(lambda n=n: len(self.rest_worker_pids() - before) >= n, timeout, "gunicorn TTIN worker")
        self.workers += count
        return self.rest_worker_pids() - before

    def add_grpc_processes(self, count: int, timeout: float = 60.0) -> set[int]:
        """Start `count` more gRPC processes on the same port (a second microservice, see the
        module docstring); return their pids."""
        before = self.grpc_worker_pids()
        joiner = _GrpcJoiner("PidModel", MODELS_DIR, workers=1, threads=1, grpc_workers=count,
                             grpc_threads=self.grpc_threads, grpc_port=self.grpc_port,
                             log_path=self.log_path, startup_timeout=timeout)
        self.joiners.append(joiner)
        joiner.start()
        return self.grpc_worker_pids() - before

    def stop(self, sig: int | None = signal.SIGTERM) -> None:
        joiners, self.joiners = self.joiners, []
        for joiner in joiners:
            joiner.stop(sig)
        super().stop(sig)


# measuring a batch run ------------------------------------------------------------------------
def write_input(path: Path, lines: int) -> Path:
    """`lines` ndarray lines ``[[i, 1.5]]``."""
    with open(path, "w") as out:
        for i in range(lines):
            out.write(f"[[{i}, 1.5]]\n")
    return path


def line_pid(line: str) -> int | None:
    """The serving pid an output line carries (``meta.tags.pid``, else the first data row), or
    None for an error line."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if not isinstance(message, dict) or "status" in message:
        return None
    tags = (message.get("meta") or {}).get("tags") or {}
    if isinstance(tags.get("pid"), (int, float)):
        return int(tags["pid"])
    rows = (message.get("data") or {}).get("ndarray")
    if isinstance(rows, list) and rows and isinstance(rows[0], list) and rows[0]:
        return int(rows[0][0])
    return None


@dataclass
class RunResult:
    """One batch run: exit status, wall time, and which pid served each output line."""

    tool: str
    transport: str
    returncode: int | None
    wall: float
    pids: list[int | None]
    log: str = ""
    counts: collections.Counter[int] = field(init=False)
    last_third: collections.Counter[int] = field(init=False)

    def __post_init__(self) -> None:
        self.counts = collections.Counter(p for p in self.pids if p is not None)
        tail = self.pids[len(self.pids) - len(self.pids) // 3:]
        self.last_third = collections.Counter(p for p in tail if p is not None)

    @property
    def lines(self) -> int:
        return len(self.pids)

    @property
    def errors(self) -> int:
        return sum(1 for p in self.pids if p is None)

    @property
    def rate(self) -> float:
        return self.lines / self.wall if self.wall > 0 else 0.0

    def shares(self, pids: set[int] | None = None) -> dict[int, float]:
        """Each pid's share of the answered lines (`pids`: also those that got none)."""
        total = sum(self.counts.values()) or 1
        keys = sorted(set(self.counts) | (pids or set()))
        return {pid: self.counts[pid] / total for pid in keys}

    def last_third_share(self, pids: set[int]) -> float:
        """The share of the last third of the output lines served by `pids`."""
        total = sum(self.last_third.values())
        return sum(self.last_third[p] for p in pids) / total if total else 0.0

    def describe(self, pids: set[int] | None = None) -> str:
        shares = " / ".join(f"{100 * s:.0f}%" for s in sorted(self.shares(pids).values(), reverse=True))
        return (f"{self.tool} {self.transport}: exit {self.returncode}, {self.lines} lines ({self.errors} errors)"
                f" in {self.wall:.1f} s = {self.rate:.0f} req/s; shares {shares}")


class BatchProcess:
    """One `seldon-batch-processor` run (ours or the original) in the background."""

    def __init__(self, tool: Tool, host: str, transport: Transport, input_path: Path, output_path: Path,
                 workers: int, extra: tuple[str, ...] = (), batch_interval: float | None = None) -> None:
        self.tool, self.transport, self.output_path = tool, transport, output_path
        exe = OURS if tool == "ours" else SELDON_BATCH_PROCESSOR
        command = [str(exe), "--deployment-name", "pid-model", "--gateway-type", "seldon", "--host", host,
                   "--transport", transport, "--input-data-path", str(input_path),
                   "--output-data-path", str(output_path), "--workers", str(workers), *extra]
        if batch_interval is not None:
            command += ["--batch-interval", str(batch_interval)]
        self.log_path = output_path.with_suffix(".log")
        self.started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, env=loopback_env(), stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, timeout: float) -> RunResult:
        """Wait up to `timeout` s (then stop the run's group); the output's pids, line by line."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_group(self.process, timeout=5.0)
        wall = time.monotonic() - self.started
        pids: list[int | None] = []
        if self.output_path.exists():
            with open(self.output_path) as out:
                pids = [line_pid(line) for line in out]
        log = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
        return RunResult(self.tool, self.transport, self.process.returncode, wall, pids, log)


def run_batch(tool: Tool, host: str, transport: Transport, input_path: Path, output_path: Path,
              workers: int, timeout: float = 300.0, extra: tuple[str, ...] = ()) -> RunResult:
    """Run a batch to its end (bounded by `timeout`)."""
    return BatchProcess(tool, host, transport, input_path, output_path, workers, extra).wait(timeout)


def verify(input_path: Path, output_path: Path, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`seldon-batch verify INPUT OUTPUT` (exit 0: one success line per input line)."""
    return subprocess.run([str(SELDON_BATCH), "verify", str(input_path), str(output_path)], env=loopback_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def host_for(server: SeldonServer, transport: Transport) -> str:
    return server.rest_host if transport == "rest" else server.grpc_host


__all__ = ["LOOPBACK", "BatchProcess", "ReplicaSeldonServer", "RunResult", "listening_pids", "run_batch",
           "verify", "write_input", "host_for"]
