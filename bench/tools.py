"""The batch tools bench/ compares, how each is invoked, and one measured run of one of them.

A :class:`Tool` is a row family of the table: this processor (REST, gRPC), the original
``seldon-batch-processor`` (seldon-core 1.18.2, ``.venvs/seldon``) and ``mlserver infer``
(mlserver 1.7.1, ``.venvs/mlserver``).  Adding a row (say this processor over V2) is one more
entry in :data:`TOOLS`.

:func:`measure` runs one command as a child process and takes its cost from the kernel
(``os.wait4``: user+system CPU and ``ru_maxrss`` of that child), then counts the output lines and
the error lines, so that a fast run that lost or failed lines is reported as invalid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.servers import REPO_ROOT
from tests.loopback import loopback_env
from tests.servers import SELDON_BATCH_PROCESSOR

OUR_SCRIPT = REPO_ROOT / ".venv" / "bin" / "seldon-batch-processor"
PROJECT_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
MLSERVER = REPO_ROOT / ".venvs" / "mlserver" / "bin" / "mlserver"
SETUP_SELDON = REPO_ROOT / "scripts" / "setup-seldon-venv.sh"
SETUP_MLSERVER = REPO_ROOT / "scripts" / "setup-mlserver-venv.sh"
DEPLOYMENT = "bench"
MODEL = "bench"


@dataclass(frozen=True)
class Job:
    """What one run is asked to do: where to send, which file, how many in flight."""

    host: str  # host:port of the protocol's endpoint (REST or gRPC)
    input_path: Path
    output_path: Path
    workers: int
    batch_size: int


@dataclass(frozen=True)
class Tool:
    """One row family.  `protocol` picks the input file (Seldon ndarray lines or V2 requests),
    `transport` picks the server endpoint, `error_marker` finds the tool's error lines."""

    name: str
    label: str
    protocol: str  # "seldon" | "v2"
    transport: str  # "rest" | "grpc"
    build: Callable[[Job], list[str]]
    error_marker: bytes
    needs: Path  # the executable whose absence means the tool is not installed
    setup: Path | None = None  # the script that installs it
    env: dict[str, str] = field(default_factory=dict)

    def command(self, job: Job) -> list[str]:
        return self.build(job)

    def environment(self) -> dict[str, str]:
        env = loopback_env()
        env.update(self.env)
        return env


def our_prefix() -> list[str]:
    """`seldon-batch-processor` from .venv; `python -c` on the source tree when the console
    script is not installed (``pip install -e .`` not done)."""
    if OUR_SCRIPT.exists():
        return [str(OUR_SCRIPT)]
    return [str(PROJECT_PYTHON), "-c",
            "import sys; sys.argv[0] = 'seldon-batch-processor'; from seldon_batch_tx.cli import main; main()"]


def ours(transport: str, *extra: str) -> Callable[[Job], list[str]]:
    def build(job: Job) -> list[str]:
        return [*our_prefix(), "-d", DEPLOYMENT, "-g", "seldon", "-h", job.host, "-t", transport,
                "-a", "data", "-p", "ndarray", "-w", str(job.workers), "-s", str(job.batch_size),
                "-i", str(job.input_path), "-o", str(job.output_path), *extra]
    return build


def ours_v2(transport: str) -> Callable[[Job], list[str]]:
    """This processor with ``--protocol v2`` on the same V2 InferenceRequest file as ``mlserver infer``."""
    def build(job: Job) -> list[str]:
        return [*our_prefix(), "--protocol", "v2", "-d", DEPLOYMENT, "--model-name", MODEL, "-g", "seldon",
                "-h", job.host, "-t", transport, "-a", "raw", "-w", str(job.workers), "-s", str(job.batch_size),
                "-i", str(job.input_path), "-o", str(job.output_path)]
    return build


def original(transport: str) -> Callable[[Job], list[str]]:
    # `-t grpc` does not work in the original (-t is also --batch-interval): say --transport.
    def build(job: Job) -> list[str]:
        return [str(SELDON_BATCH_PROCESSOR), "-d", DEPLOYMENT, "-g", "seldon", "-h", job.host,
                "--transport", transport, "-a", "data", "-p", "ndarray", "-w", str(job.workers),
                "-s", str(job.batch_size), "-i", str(job.input_path), "-o", str(job.output_path)]
    return build


def mlserver_infer(job: Job) -> list[str]:
    return [str(MLSERVER), "infer", "-u", job.host, "-m", MODEL, "-i", str(job.input_path),
            "-o", str(job.output_path), "-w", str(job.workers), "-s", str(job.batch_size)]


TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool("ours", "seldon-batch-tx REST", "seldon", "rest", ours("rest"), b'"FAILURE"', PROJECT_PYTHON,
             env={"PYTHONPATH": str(REPO_ROOT)}),
        Tool("ours-treq", "seldon-batch-tx REST (treq)", "seldon", "rest", ours("rest", "--http-client", "treq"),
             b'"FAILURE"', PROJECT_PYTHON, env={"PYTHONPATH": str(REPO_ROOT)}),
        Tool("ours-grpc", "seldon-batch-tx gRPC", "seldon", "grpc", ours("grpc"), b'"FAILURE"', PROJECT_PYTHON,
             env={"PYTHONPATH": str(REPO_ROOT)}),
        Tool("original", "original REST", "seldon", "rest", original("rest"), b'"FAILURE"',
             SELDON_BATCH_PROCESSOR, SETUP_SELDON),
        Tool("original-grpc", "original gRPC", "seldon", "grpc", original("grpc"), b'"FAILURE"',
             SELDON_BATCH_PROCESSOR, SETUP_SELDON),
        Tool("mlserver", "mlserver infer", "v2", "rest", mlserver_infer, b'"error"', MLSERVER, SETUP_MLSERVER),
        Tool("ours-v2", "seldon-batch-tx V2 REST", "v2", "rest", ours_v2("rest"), b'"FAILURE"', PROJECT_PYTHON,
             env={"PYTHONPATH": str(REPO_ROOT)}),
    )
}


def ensure_installed(tools: Sequence[Tool], timeout: float = 900.0) -> list[str]:
    """Run each missing tool's setup script once; returns the names still missing."""
    missing: list[str] = []
    done: set[Path] = set()
    for tool in tools:
        if not tool.needs.exists() and tool.setup is not None and tool.setup not in done:
            done.add(tool.setup)
            print(f"bench: installing {tool.label} with {tool.setup.name}", flush=True)
            subprocess.run(["bash", str(tool.setup)], check=False, timeout=timeout, env=loopback_env(),
                           stdin=subprocess.DEVNULL)
        if not tool.needs.exists():
            missing.append(tool.name)
    return missing


@dataclass
class RunResult:
    """One run of one tool, measured by the kernel and checked line by line."""

    wall: float
    cpu: float  # user + system seconds of the child (and any children it waited for)
    maxrss_kb: int
    returncode: int | None
    timed_out: bool
    lines_in: int
    lines_out: int
    errors: int
    log_tail: str = ""

    @property
    def valid(self) -> bool:
        """Finished in time, one output line per input line, none of them an error line."""
        return not self.timed_out and self.lines_out == self.lines_in and self.errors == 0

    @property
    def why_invalid(self) -> str:
        if self.timed_out:
            return f"timed out after {self.wall:.0f} s ({self.lines_out}/{self.lines_in} lines written)"
        if self.lines_out != self.lines_in:
            return f"{self.lines_out} output lines for {self.lines_in} input lines (exit {self.returncode})"
        if self.errors:
            return f"{self.errors} error lines"
        return ""


def count_lines(path: Path, marker: bytes) -> tuple[int, int]:
    """(lines, lines holding `marker`) of a file; (0, 0) when it is missing."""
    lines = errors = 0
    try:
        with open(path, "rb") as f:
            for line in f:
                lines += 1
                if marker in line:
                    errors += 1
    except FileNotFoundError:
        pass
    return lines, errors


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def compiled(tree: Path) -> None:
    """Write the bytecode of ``tree``'s package, as ``pip install`` does for an installed copy.

    A source tree run with ``PYTHONDONTWRITEBYTECODE`` (set on this machine, and in the image,
    where pip has compiled everything already) compiles its ~60 modules again at every start:
    ~50 ms of CPU per run that no installed copy spends, and that would blur every comparison."""
    subprocess.run([str(PROJECT_PYTHON), "-m", "compileall", "-q", str(tree / "seldon_batch_tx")], check=True,
                   timeout=300, stdout=subprocess.DEVNULL)


def measure(tool: Tool, job: Job, lines_in: int, timeout: float, log_path: Path) -> RunResult:
    """Run `tool` on `job` once, killed after `timeout` s; CPU and peak RSS from os.wait4."""
    with contextlib.suppress(FileNotFoundError):
        job.output_path.unlink()
    with open(log_path, "wb") as log:
        start = time.perf_counter()
        child = subprocess.Popen(
            tool.command(job), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=tool.environment(), cwd=str(REPO_ROOT), start_new_session=True,
        )
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            _kill_group(child.pid)

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
    _kill_group(child.pid)  # anything the tool left behind in its session
    lines_out, errors = count_lines(job.output_path, tool.error_marker)
    result = RunResult(
        wall=wall, cpu=usage.ru_utime + usage.ru_stime, maxrss_kb=usage.ru_maxrss,
        returncode=child.returncode, timed_out=timed_out.is_set(), lines_in=lines_in,
        lines_out=lines_out, errors=errors,
    )
    if not result.valid:
        result.log_tail = tail(log_path)
    return result


def tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
