"""The dashboard cannot take what the batch needs (issue 25, medium 10 and the Host low).

Through the real command with ``--dashboard`` and plain sockets: connections past the cap are closed
at once; 1,100 idle connections under a 1,024 descriptor limit leave the batch's own connections
alone (every line succeeds, with ``-r 0`` and a new connection per request); a client that sends its
headers slowly is cut after the header timeout; a request with a body is refused before the body
is read; two ``Host`` headers are a 400 (RFC 9112), not "the last one decides".
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from seldon_batch_tx.dashboard.channel import HEADER_TIMEOUT, MAX_CONNECTIONS
from tests.hostile_server import HostileServer
from tests.loopback import loopback_env
from tests.servers import REPO_ROOT

CLI = str(REPO_ROOT / ".venv" / "bin" / "seldon-batch-processor")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileServer]:
    with HostileServer(tmp_path_factory.mktemp("hostile") / "requests.jsonl") as server:
        yield server


def start(tmp: Path, server: HostileServer, lines: int, *extra: str, fd_limit: int | None = None,
          ) -> tuple[subprocess.Popen[bytes], int]:
    """The command with a dashboard on a free loopback port, lingering; (process, port)."""
    source, err = tmp / "in.txt", tmp / "stderr.txt"
    source.write_text("".join(f"[[{i}.5, 2.0]]\n" for i in range(lines)))

    def limit() -> None:
        if fd_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

    with open(err, "wb") as stderr:
        process = subprocess.Popen(
            [CLI, "-d", "echo", "-g", "istio", "-n", "ns", "-h", server.rest_host, "-i", str(source),
             "-o", str(tmp / "out.txt"), "-l", "warning", "--dashboard", "tcp:0:interface=127.0.0.1",
             "--dashboard-linger", "120", *extra], stdout=subprocess.DEVNULL, stderr=stderr,
            stdin=subprocess.DEVNULL, env=loopback_env(), start_new_session=True, preexec_fn=limit)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"dashboard on http://127\.0\.0\.1:(\d+)/", err.read_text())
        if found:
            return process, int(found.group(1))
        if process.poll() is not None:
            break
        time.sleep(0.05)
    stop(process)
    pytest.fail(f"no dashboard: {err.read_text()[-2000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory, hostile: HostileServer) -> Iterator[int]:
    process, port = start(tmp_path_factory.mktemp("linger"), hostile, 2)
    try:
        yield port
    finally:
        stop(process)


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def answer(sock: socket.socket, wait: float = 10.0) -> bytes:
    """Everything the server sends until it closes (or `wait` seconds pass)."""
    sock.settimeout(wait)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def get_status(port: int) -> int:
    with connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return int(answer(sock).split(b" ", 2)[1])


def test_two_host_headers_are_a_bad_request(dashboard: int) -> None:
    with connect(dashboard) as sock:
        sock.sendall(b"GET /api/batches HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n")
        assert answer(sock).startswith(b"HTTP/1.1 400 ")
    assert get_status(dashboard) == 200


def test_a_body_is_refused_before_it_is_read(dashboard: int) -> None:
    with connect(dashboard) as sock:
        sock.sendall(b"POST /api/batches HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000000\r\n\r\n")
        started = time.monotonic()
        data = answer(sock)
        assert data.startswith(b"HTTP/1.1 413 "), data[:200]
        assert time.monotonic() - started < 5  # answered at once, not after a body that never comes


def test_slow_headers_are_cut(dashboard: int) -> None:
    with connect(dashboard) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        closed = None
        while time.monotonic() - started < HEADER_TIMEOUT + 20:
            try:
                sock.sendall(b"X")  # a header byte every 0.25 s: never idle, never done
                sock.settimeout(0.25)
                if sock.recv(1024) == b"":
                    closed = time.monotonic() - started
                    break
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                closed = time.monotonic() - started
                break
        assert closed is not None, "a slow-header client was never cut"
        assert HEADER_TIMEOUT - 1 <= closed <= HEADER_TIMEOUT + 15


def test_connections_past_the_cap_are_closed_at_once(dashboard: int) -> None:
    socks = [connect(dashboard) for _ in range(MAX_CONNECTIONS + 100)]
    try:
        time.sleep(1.0)
        closed = 0
        for sock in socks:
            sock.settimeout(0.01)
            try:
                closed += sock.recv(1) == b""
            except TimeoutError:
                pass
            except ConnectionResetError:
                closed += 1
        assert closed >= 100, f"only {closed} of {len(socks)} idle connections were closed"
    finally:
        for sock in socks:
            sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the server sees the closes, then answers again
        try:
            if get_status(dashboard) == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail("the dashboard did not answer once the idle connections were gone")


def test_idle_connections_under_a_low_descriptor_limit_do_not_starve_the_batch(tmp_path: Path,
                                                                                hostile: HostileServer) -> None:
    """1,100 idle connections to the dashboard, 1,024 descriptors, every request on a new connection
    (the server closes each one) and no retries: the process holds few descriptors (without the cap it
    held all 1,024, and a batch's connect that lost the race for a freed one failed) and every line
    succeeds."""
    batch_id = f"fd-starve-{time.monotonic_ns()}"
    hostile.script(batch_id, default={"mode": "raw", "status": 200, "body": '{"data":{"ndarray":[[1]]}}',
                                      "close": True, "headers": [["Connection", "close"]]})
    lines = 150
    process, port = start(tmp_path, hostile, lines, "-d", "script", "-u", batch_id, "-s", "1", "-w", "2",
                          "-r", "0", "--max-rate", "25", fd_limit=1024)
    socks: list[socket.socket] = []
    try:
        for _ in range(1100):
            try:
                socks.append(connect(port))
            except OSError:
                break
        time.sleep(1.0)  # the dashboard has accepted (and, past the cap, closed) what it will
        held = len(os.listdir(f"/proc/{process.pid}/fd"))
        assert held < MAX_CONNECTIONS + 100, f"{held} descriptors open of 1,024 with {len(socks)} idle clients"
        out = tmp_path / "out.txt"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < lines):
            time.sleep(0.1)
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(records) == lines
        failed = [r["status"]["reason"] for r in records if r.get("status", {}).get("status") == "FAILURE"]
        assert failed == [], f"{len(failed)} lines failed: {failed[:3]}"
    finally:
        for sock in socks:
            sock.close()
        stop(process)
