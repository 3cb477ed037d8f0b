"""Outages pause the run (issue 19): the real model SIGKILLed mid-run and restarted on the same
ports, or not restarted within ``--outage-timeout``; no line is spent on the outage."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from seldon_batch_tx.exits import EXIT_OK, EXIT_STOPPED
from tests.mlserver_servers import MLServerServer
from tests.servers import SeldonServer, loopback_env

BIN = Path(sys.executable).parent
PROCESSOR = str(BIN / "seldon-batch-processor")
LINES = 3000


def write_input(tmp_path: Path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text("".join(json.dumps([[i, i + 0.5, -i]]) + "\n" for i in range(LINES)))
    return path


def start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([PROCESSOR, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=loopback_env(), start_new_session=True)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def verify(source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from seldon_batch_tx.tools import main; main()", "verify",
                           str(source), str(out)], capture_output=True, text=True, timeout=120)


def kill_mid_run(server: Any, proc: subprocess.Popen[str], out: Path) -> None:
    """SIGKILL the model once the run has written some lines (about 2 s in)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not out.exists() or out.stat().st_size < 2000):
        time.sleep(0.05)
    time.sleep(0.5)
    assert proc.poll() is None, "the run ended before the model was killed"
    server.stop(signal.SIGKILL)  # like a crash: the whole process group at once


def outlive_outage(server: Any, proc: subprocess.Popen[str], out: Path, down: float) -> tuple[str, str]:
    """Kill the model mid-run, start it again ``down`` s later on the same ports, and wait for the
    run's end: its stdout and stderr (the run is killed if it is still going after 180 s)."""
    try:
        kill_mid_run(server, proc, out)
        time.sleep(down)
        server.start()
        return proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def args_for(server: Any, kind: str, source: Path, out: Path) -> list[str]:
    seldon = isinstance(server, SeldonServer)
    host = server.grpc_host if kind == "grpc" else server.rest_host
    base = ["-d", "echo", "-g", "seldon", "-h", host, "-t", kind, "-i", str(source), "-o", str(out), "-w", "4"]
    return base if seldon else [*base, "--protocol", "v2"]


SERVERS = [("seldon", "rest"), ("seldon", "grpc"), ("mlserver", "rest"), ("mlserver", "grpc")]


def make_server(name: str) -> Any:
    return SeldonServer("EchoModel") if name == "seldon" else MLServerServer()


@pytest.mark.parametrize(("name", "kind"), SERVERS)
def test_killed_and_restarted_model_loses_no_line(tmp_path: Path, name: str, kind: str) -> None:
    """Killed ~2 s in, back 15 s later on the same ports: exit 0, every line a success, verify complete."""
    source, out = write_input(tmp_path), tmp_path / "out.txt"
    with make_server(name) as server:
        proc = start(args_for(server, kind, source, out))
        stdout, stderr = outlive_outage(server, proc, out, 15)
    assert proc.returncode == EXIT_OK, stderr[-3000:] + stdout
    assert f"{LINES} succeeded, 0 failed" in stdout
    assert "waiting for the model since" in stderr
    assert all("status" not in r or r["status"].get("status") != "FAILURE" for r in records(out))
    assert verify(source, out).returncode == 0


@pytest.mark.parametrize(("name", "kind"), SERVERS)
def test_outage_timeout_stops_and_resume_completes(tmp_path: Path, name: str, kind: str) -> None:
    """Not restarted, --outage-timeout 10: exit 3 within 15 s of the kill, no error line for the lines not
    answered; after the restart --resume completes the file exactly."""
    source, out = write_input(tmp_path), tmp_path / "out.txt"
    with make_server(name) as server:
        proc = start([*args_for(server, kind, source, out), "--outage-timeout", "10"])
        try:
            kill_mid_run(server, proc, out)
            killed = time.monotonic()
            stdout, stderr = proc.communicate(timeout=60)
            took = time.monotonic() - killed
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == EXIT_STOPPED, stderr[-3000:] + stdout
        assert took < 15
        assert "could not be reached since" in stdout and "--outage-timeout 10 s" in stdout
        written = records(out)
        assert 0 < len(written) < LINES
        assert all("status" not in r or r["status"].get("status") != "FAILURE" for r in written)
        server.start()
        resumed = subprocess.run([PROCESSOR, *args_for(server, kind, source, out), "--resume"], capture_output=True,
                                 text=True, timeout=180, env=loopback_env())
    assert resumed.returncode == EXIT_OK, resumed.stderr[-3000:]
    indexes = sorted(r["meta"]["tags"]["batch_index"] if "meta" in r else r["parameters"]["batch_index"]
                     for r in records(out))
    assert indexes == list(range(LINES))
    assert verify(source, out).returncode == 0


def test_a_gateway_502_while_the_model_is_down_pauses_too(tmp_path: Path) -> None:
    """Through an istio-style gateway (nginx), the killed model is the gateway's 502 page, not a model's
    answer: the run pauses (not a line spent) and completes once the model is back."""
    from tests.servers import NginxGateway, free_ports

    http, grpc, metrics = free_ports(3)
    source, out = write_input(tmp_path), tmp_path / "out.txt"
    server = SeldonServer("EchoModel", http_port=http, grpc_port=grpc, metrics_port=metrics).start()
    try:
        with NginxGateway(f"127.0.0.1:{http}", "ns", "dep") as gateway:
            proc = start(["-d", "dep", "-n", "ns", "-g", "istio", "-h", gateway.host, "-i", str(source), "-o", str(out),
                          "-w", "4", "-r", "1"])
            stdout, stderr = outlive_outage(server, proc, out, 5)
    finally:
        server.stop()
    assert proc.returncode == EXIT_OK, stderr[-3000:] + stdout
    assert f"{LINES} succeeded, 0 failed" in stdout
    assert "waiting for the model since" in stderr and "HTTP 502" in stderr
