"""Read-ahead of inputs read on a thread (``-i -``, ``s3://``) is bounded in bytes (issue 25):
300 lines of 1 MB piped to the real command, against a model that never answers (so everything
read stays read), must not be held whole; the peak stays near that of the same file read locally.
Before, 1,024 lines were read ahead whatever their size (1,200 lines of 1 MB peaked at 1.2 GB)."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from tests.loopback import loopback_env
from tests.test_storage_cli import processor

LINES = 300
LINE = b'[["' + b"x" * (1 << 20) + b'"]]\n'


def peak_kib(pid: int) -> int:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmHWM:"):
            return int(row.split()[1])
    raise AssertionError("no VmHWM")


def peak_of_a_run(silent: socket.socket, source: str, settle: float = 8.0) -> int:
    """The command's peak resident size (KiB) ``settle`` s into a run whose requests never end."""
    host = f"127.0.0.1:{silent.getsockname()[1]}"
    args = processor(host, "-i", source, "-o", "-", "-w", "1", "-r", "0", "--drain-timeout", "0")
    child = subprocess.Popen(args, env=loopback_env(), stdin=subprocess.PIPE if source == "-" else None,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    fed = threading.Event()

    def feed() -> None:
        assert child.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            for _ in range(LINES):
                child.stdin.write(LINE)
            child.stdin.close()
        fed.set()

    try:
        if source == "-":
            threading.Thread(target=feed, daemon=True).start()
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline and child.poll() is None and not fed.is_set():
            time.sleep(0.1)
        time.sleep(1.0)  # what was read is buffered by now
        assert child.poll() is None, child.stderr.read() if child.stderr else ""
        peak = peak_kib(child.pid)
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
    finally:
        child.kill()
    return peak


def test_a_pipe_of_long_lines_is_read_ahead_in_bounded_bytes(tmp_path: Path) -> None:
    silent = socket.create_server(("127.0.0.1", 0), backlog=64)  # accepts in the kernel, never answers
    try:
        local = tmp_path / "in.txt"
        local.write_bytes(LINE * LINES)
        from_file = peak_of_a_run(silent, str(local))
        from_pipe = peak_of_a_run(silent, "-")
    finally:
        silent.close()
    mib = 1024
    print(f"peak: {from_file // mib} MiB from a file, {from_pipe // mib} MiB from a pipe")
    assert from_pipe < from_file + 120 * mib, (from_pipe // mib, from_file // mib)
    assert from_pipe < 250 * mib, from_pipe // mib  # the 300 MB piped are never all held
