"""scripts/serve-model.sh for real: a start on a port already taken (by a model it started, by another
server on the gRPC or metrics port, by any listener) is refused in one line with a non-zero status, and
never takes over the running model's pid file, so ``--stop`` still stops that one, and really stops it.
"""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

from tests.loopback import LOOPBACK, free_ports, loopback_env, tcp_accepts
from tests.processes import group_alive, signal_group, wait_until
from tests.servers import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "serve-model.sh"


def serve(*args: str | int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["timeout", "300", "bash", str(SCRIPT), *map(str, args)], cwd=REPO_ROOT,
                          env=loopback_env(), capture_output=True, text=True, timeout=320)


def pid_file(rest: int) -> Path:
    return REPO_ROOT / "out" / f"serve-model-{rest}.pid"


def refused(run: subprocess.CompletedProcess[str], port: int, rest: int) -> None:
    """One line naming the taken port; nothing of the refused start is left behind."""
    assert run.returncode == 1, run.stdout + run.stderr
    lines = [line for line in run.stderr.splitlines() if line.startswith("serve-model.sh:")]
    assert len(lines) == 1 and str(port) in lines[0], run.stderr
    assert "model microservice on" not in run.stdout
    assert not pid_file(rest).exists()


def test_a_second_start_on_taken_ports_is_refused_and_stop_stops_the_first() -> None:
    rest, grpc, metrics, rest2, grpc2, metrics2 = free_ports(6)
    first = serve("--background", "--rest-port", rest, "--grpc-port", grpc, "--metrics-port", metrics)
    group = int(pid_file(rest).read_text()) if pid_file(rest).exists() else 0
    try:
        assert first.returncode == 0, first.stdout + first.stderr
        assert f"model microservice on 127.0.0.1:{rest} (REST)" in first.stdout and group_alive(group)
        # the review's case: same REST port, other gRPC and metrics ports
        again = serve("--background", "--rest-port", rest, "--grpc-port", grpc2, "--metrics-port", metrics2)
        assert again.returncode == 1 and "model microservice on" not in again.stdout, again.stdout + again.stderr
        assert f"still runs on 127.0.0.1:{rest}" in again.stderr and f"--stop --rest-port {rest}" in again.stderr
        assert int(pid_file(rest).read_text()) == group
        # its gRPC port, then its metrics port (the default 6000 clash was silent)
        refused(serve("--background", "--rest-port", rest2, "--grpc-port", grpc, "--metrics-port", metrics2),
                grpc, rest2)
        refused(serve("--rest-port", rest2, "--grpc-port", grpc2, "--metrics-port", metrics), metrics, rest2)
        # its REST port with the pid file gone: the port itself is checked
        pid_file(rest).unlink()
        refused(serve("--background", "--rest-port", rest, "--grpc-port", grpc2, "--metrics-port", metrics2),
                rest, rest)
        pid_file(rest).write_text(f"{group}\n")
        stopped = serve("--stop", "--rest-port", rest)
        assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
        assert not group_alive(group) and not tcp_accepts(LOOPBACK, rest) and not pid_file(rest).exists()
    finally:
        if group:
            signal_group(group, signal.SIGKILL)
            wait_until(lambda: not group_alive(group), 10, "the model's process group stopped")
        pid_file(rest).unlink(missing_ok=True)
        (REPO_ROOT / "out" / f"serve-model-{rest}.log").unlink(missing_ok=True)


def test_a_port_any_listener_holds_is_refused() -> None:
    rest, grpc, metrics = free_ports(3)
    with socket.socket() as holder:
        holder.bind((LOOPBACK, grpc))
        holder.listen()
        refused(serve("--background", "--rest-port", rest, "--grpc-port", grpc, "--metrics-port", metrics), grpc, rest)
    assert not tcp_accepts(LOOPBACK, rest)


def test_the_same_port_twice_is_a_usage_error() -> None:
    rest, metrics = free_ports(2)
    run = serve("--background", "--rest-port", rest, "--grpc-port", rest, "--metrics-port", metrics)
    assert run.returncode == 2 and "must differ" in run.stderr and not pid_file(rest).exists()
