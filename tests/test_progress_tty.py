"""The progress of the real command: a tqdm bar updating one line on a terminal, log lines without one.

The command runs against the real Seldon model microservice with stderr on a pseudo-terminal (the
pty module, sized like a real terminal) and, then, on a pipe.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.loopback import loopback_env
from tests.servers import SeldonServer

PROCESSOR = str(Path(sys.executable).parent / "seldon-batch-processor")


@pytest.fixture(scope="module")
def server() -> Iterator[SeldonServer]:
    with SeldonServer() as running:
        yield running


def command(server: SeldonServer, workdir: Path, lines: int, interval: str) -> list[str]:
    # ... and one line that is not JSON: an error line, counted on the bar
    (workdir / "in.txt").write_text("".join(f"[[{i}]]\n" for i in range(lines)) + "not json\n")
    return [PROCESSOR, "-d", "m", "-g", "seldon", "-h", server.rest_host, "-i", "in.txt", "-w", "1", "-r", "0",
            "--batch-interval", interval]


def read_until_exit(fd: int, process: subprocess.Popen[bytes], timeout: float) -> bytes:
    """Everything the terminal showed, until the process ended (bounded)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the other side closed: the process has gone
                break
            if not chunk:
                break
            seen += chunk
        elif process.poll() is not None:
            break
    process.wait(10)
    return seen


def test_bar_updates_one_line_on_a_terminal(server: SeldonServer, tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 40 rows, 120 columns
    process = subprocess.Popen(command(server, tmp_path, 300, "0.01"), cwd=tmp_path, env=loopback_env(),
                               stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    try:
        shown = read_until_exit(leader, process, 120).decode("utf-8", "replace")
    finally:
        os.close(leader)
    assert process.returncode == 1  # the one error line
    frames = [frame for frame in shown.split("\r") if "lines/s" in frame]
    assert len(frames) >= 3, shown[-2000:]  # redrawn in place, not a line each time
    percents = [int(frame.split("%")[0].strip()) for frame in frames if "%|" in frame]
    assert percents[-1] == 100 and min(percents) < 100, frames[-5:]  # seen moving, then complete
    assert any("0/301" not in f and "/301 [" in f for f in frames)  # lines done of the total
    assert "errors 1" in frames[-1] and "<00:00" in frames[-1]  # errors and ETA
    assert "progress [" not in shown  # no log lines of progress on a terminal


def test_log_lines_without_a_terminal(server: SeldonServer, tmp_path: Path) -> None:
    """stderr on a pipe: no bar, no carriage returns; a plain progress log line every 10 s."""
    proc = subprocess.run(command(server, tmp_path, 240, "0.05"), cwd=tmp_path, env=loopback_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "\r" not in proc.stderr and "lines/s," not in proc.stderr
    progress = [line for line in proc.stderr.splitlines() if "progress [" in line]
    assert progress and all("/241 ok" in line for line in progress), proc.stderr[-2000:]
