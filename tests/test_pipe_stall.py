"""`-i -` from a pipe that goes quiet: lines are answered as they arrive, the reactor keeps serving
the dashboard, and SIGTERM stops the run at once (the read waits on a thread of its own, never the
reactor thread, and holds no lock the interpreter needs at exit)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile_server import HostileServer
from tests.loopback import free_ports
from tests.servers import REPO_ROOT

PROCESSOR = str(REPO_ROOT / ".venv" / "bin" / "seldon-batch-processor")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileServer]:
    with HostileServer(tmp_path_factory.mktemp("pipe") / "requests.jsonl") as running:
        yield running


def wait_for(condition: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_a_quiet_pipe_neither_holds_lines_nor_freezes_the_reactor(tmp_path: Path, server: HostileServer) -> None:
    out = tmp_path / "out.jsonl"
    (port,) = free_ports(1)
    proc = subprocess.Popen([PROCESSOR, "-d", "echo", "-g", "istio", "-n", "ns", "-h", server.rest_host, "-i", "-",
                             "-o", str(out), "-l", "error", "--dashboard", f"tcp:{port}:interface=127.0.0.1"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"[[1]]\n")
        proc.stdin.flush()  # ... and the pipe stays open and quiet
        assert wait_for(lambda: out.exists() and out.read_bytes().count(b"\n") == 1, 15), "the line was held back"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
            assert answer.status == 200
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        proc.wait(timeout=15)
        assert time.monotonic() - started < 10
        assert proc.returncode == 3
        (line,) = out.read_text().splitlines()
        assert json.loads(line)["meta"]["tags"]["batch_index"] == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
