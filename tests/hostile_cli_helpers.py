"""What the hostile command-line tests share: running the installed command with a wall-time, stderr
and peak-RSS bound, reading its output records, the hostile server fixture and the usual arguments.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.hostile_server import HostileServer
from tests.loopback import loopback_env
from tests.servers import REPO_ROOT

CLI = str(REPO_ROOT / ".venv" / "bin" / "seldon-batch-processor")
MIB = 1 << 20
#: No case may take longer than this (a hang is the failure this suite exists to catch).
WALL_LIMIT = 40.0
#: Bounded stderr: a few warnings per line at most, never a traceback per chunk of a flood.
STDERR_LIMIT = 64 * 1024
#: Peak RSS allowed for the oversize cases (the 1 MiB limits make anything bigger a leak).
RSS_LIMIT_KB = 200 * 1024
LINES = 4


@attrs.frozen
class Outcome:
    code: int
    elapsed: float
    peak_rss_kb: int
    stderr: str
    stdout: str
    records: list[dict[str, Any]]

    def kinds(self) -> set[str]:
        return {r["status"]["info"] for r in self.records if is_error(r)}

    def describe(self) -> str:
        return (f"exit {self.code} after {self.elapsed:.1f} s, peak {self.peak_rss_kb // 1024} MB, "
                f"kinds {sorted(self.kinds())}; stderr tail: {self.stderr[-1500:]}")


def is_error(record: dict[str, Any]) -> bool:
    status = record.get("status")
    return isinstance(status, dict) and status.get("status") == "FAILURE"


def _no_constants(name: str) -> Any:
    raise ValueError(f"not JSON: {name}")


def peak_rss_kb(pid: int) -> int:
    """The process's VmHWM (peak resident set) in kB, 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def run_cli(args: list[str], tmp: Path, env: dict[str, str] | None = None, wall: float = WALL_LIMIT) -> Outcome:
    """Run the command, sampling its peak RSS until it exits; kill it (and fail) past `wall` seconds."""
    err_path, out_path = tmp / "stderr.txt", tmp / "stdout.txt"
    started = time.monotonic()
    with open(err_path, "wb") as err, open(out_path, "wb") as out:
        process = subprocess.Popen([CLI, *args], stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                   env=env or loopback_env())
    peak = 0
    try:
        deadline = started + wall
        while process.poll() is None and time.monotonic() < deadline:
            peak = max(peak, peak_rss_kb(process.pid))
            time.sleep(0.02)
        if process.poll() is None:
            process.kill()
            process.wait(10)
            pytest.fail(f"{' '.join(args)} still running after {wall} s; stderr: "
                        f"{err_path.read_text(errors='replace')[-2000:]}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    elapsed = time.monotonic() - started
    stderr = err_path.read_bytes()
    assert len(stderr) < STDERR_LIMIT, f"{len(stderr)} bytes of stderr: {stderr[-2000:]!r}"
    return Outcome(process.returncode, elapsed, peak, stderr.decode(errors="replace"),
                   out_path.read_text(errors="replace"), [])


def read_records(out: Path, lines: int) -> list[dict[str, Any]]:
    """Every output line as strict JSON; exactly one per input line, each batch_index once."""
    text = out.read_bytes().decode("utf-8")  # output is UTF-8, whatever came in
    assert text == "" or text.endswith("\n"), "the output ends in a torn line"
    records = [json.loads(line, parse_constant=_no_constants) for line in text.splitlines()]
    indexes = sorted(r["meta"]["tags"]["batch_index"] for r in records)
    assert indexes == list(range(lines)), f"batch indexes {indexes} for {lines} input lines"
    return records


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileServer]:
    log = tmp_path_factory.mktemp("hostile") / "requests.jsonl"
    with HostileServer(log, grpc=True, stall_seconds=60) as server:
        yield server


def data_file(path: Path, lines: int = LINES) -> Path:
    path.write_text("".join(f"[[{i}.5, 2.0]]\n" for i in range(lines)))
    return path


def base_args(server: HostileServer, mode: str, source: Path, out: Path, client: str, *extra: str) -> list[str]:
    transport = ["-t", "grpc", "-h", server.grpc_host] if client == "grpc" else \
        ["-h", server.rest_host, "--http-client", client]
    return ["-d", mode, "-g", "istio", "-n", "ns", *transport, "-i", str(source), "-o", str(out),
            "-w", str(LINES), "-r", "1", "--timeout", "2", "-l", "warning", *extra]
