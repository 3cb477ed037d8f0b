"""Readiness before the first line (issue 19): an unreachable model is one line and exit 4 with
nothing written; ``--wait-ready`` waits for a model that starts late. Real microservice, MLServer."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from seldon_batch_tx.exits import EXIT_UNREACHABLE
from tests.mlserver_servers import MLServerServer
from tests.servers import SeldonServer, free_ports, loopback_env

PROCESSOR = str(Path(sys.executable).parent / "seldon-batch-processor")
LINES = [json.dumps([[i, i + 0.5, -i]]) for i in range(40)]


def run_ours(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROCESSOR, *args], capture_output=True, text=True, timeout=timeout, env=loopback_env())


def infile(tmp_path: Path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text("".join(line + "\n" for line in LINES))
    return path


def assert_unreachable(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    """One line on stderr naming what could not be reached, exit 4, nothing on stdout."""
    assert proc.returncode == EXIT_UNREACHABLE, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("seldon-batch-processor: error: the model is not reachable: ")
    for word in words:
        assert word in lines[0]
    assert proc.stdout == ""


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_closed_port_is_one_line_and_nothing_written(tmp_path: Path, transport: str) -> None:
    (port,) = free_ports(1)
    source = infile(tmp_path)
    started = time.monotonic()
    proc = run_ours(["-d", "m", "-g", "seldon", "-t", transport, "-h", f"127.0.0.1:{port}", "-i", str(source)])
    assert time.monotonic() - started < 5 + 3  # the command's own start-up aside, within 5 s
    assert_unreachable(proc, f"127.0.0.1:{port}", "connection refused")
    assert not (tmp_path / "in.out.txt").exists()


def test_an_existing_output_is_left_as_it_was(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    source = infile(tmp_path)
    out = tmp_path / "out.txt"
    out.write_text("not ours\n")
    proc = run_ours(["-d", "m", "-g", "seldon", "-h", f"127.0.0.1:{port}", "-i", str(source), "-o", str(out),
                     "--resume"])
    assert_unreachable(proc, f"127.0.0.1:{port}")
    assert out.read_text() == "not ours\n"


@pytest.mark.parametrize("gateway", ["istio", "ambassador"])
def test_a_gateway_type_given_to_a_bare_microservice(tmp_path: Path, seldon_server: SeldonServer,
                                                     gateway: str) -> None:
    """The default ``-g istio`` against the microservice on its own port (a new user's first try): its
    500 ``404 Not Found`` at the gateway's route is not "ready"; one line says to give ``-g seldon``."""
    source = infile(tmp_path)
    proc = run_ours(["-d", "m", "-g", gateway, "-h", seldon_server.rest_host, "-i", str(source)])
    assert_unreachable(proc, seldon_server.rest_host, f"not an {gateway} gateway", "-g seldon")
    assert not (tmp_path / "in.out.txt").exists()


def test_use_ssl_against_a_plain_http_port(tmp_path: Path, seldon_server: SeldonServer) -> None:
    """--use-ssl given for the microservice's plain REST port: one line that says to leave it out, exit 4."""
    proc = run_ours(["-d", "m", "-g", "seldon", "-h", seldon_server.rest_host, "--use-ssl", "--timeout", "3",
                     "-i", str(infile(tmp_path))])
    assert_unreachable(proc, seldon_server.rest_host, "--use-ssl")  # OpenSSL's error, or gunicorn never answers
    assert not (tmp_path / "in.out.txt").exists()


def test_use_ssl_never_sends_the_token_without_tls(tmp_path: Path) -> None:
    """A port that answers plain HTTP (nginx's 400 on a TLS port, a server in the path): the probe's
    token and headers go over TLS only, whatever the handshake's failure."""
    import socket

    received: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)

    def serve() -> None:
        with contextlib.suppress(OSError):
            for _ in range(4):
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(5)
                    with contextlib.suppress(OSError):
                        received.append(conn.recv(65536))
                        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        proc = run_ours(["-d", "m", "-g", "istio", "-h", f"127.0.0.1:{listener.getsockname()[1]}", "--use-ssl",
                         "--timeout", "3", "--call-credentials-token", "tok-Plain-0123456789",
                         "--header", "Authorization: Bearer hdr-Plain-0123456789", "-i", str(infile(tmp_path))])
    finally:
        listener.close()
        thread.join(10)
    assert_unreachable(proc, "--use-ssl")
    assert received and not any(b"Plain-0123456789" in data for data in received)


def test_unresolvable_name(tmp_path: Path) -> None:
    source = infile(tmp_path)
    proc = run_ours(["-d", "m", "-g", "seldon", "-h", "no-such-model.invalid:9000", "-i", str(source)])
    assert_unreachable(proc, "no-such-model.invalid:9000", "does not resolve")
    assert not (tmp_path / "in.out.txt").exists()


def run_with_model_started_later(delay: float,
                                 args: Callable[[str, str], list[str]]) -> subprocess.CompletedProcess[str]:
    """Run ours with ``args(rest_host, grpc_host)`` while the Seldon microservice starts ``delay`` s later;
    the server is stopped afterwards whatever happened."""
    http, grpc, metrics = free_ports(3)
    server = SeldonServer("EchoModel", http_port=http, grpc_port=grpc, metrics_port=metrics)
    starter = threading.Timer(delay, server.start)
    starter.start()
    try:
        return run_ours(args(f"127.0.0.1:{http}", f"127.0.0.1:{grpc}"))
    finally:
        starter.join()
        server.stop()


def assert_waited_and_ran(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "40 succeeded, 0 failed" in proc.stdout
    assert "waiting up to 30 s for the model" in proc.stderr


def test_wait_ready_waits_for_a_model_started_later(tmp_path: Path) -> None:
    """``--wait-ready 30`` with the microservice started 10 s later: a normal run, every line answered."""
    source = infile(tmp_path)
    assert_waited_and_ran(run_with_model_started_later(10.0, lambda rest, grpc: [
        "-d", "echo", "-g", "seldon", "-h", rest, "-i", str(source), "-w", "2", "--wait-ready", "30"]))


def test_wait_ready_gives_up_with_the_last_reason(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    started = time.monotonic()
    proc = run_ours(["-d", "m", "-g", "seldon", "-h", f"127.0.0.1:{port}", "-i", str(infile(tmp_path)),
                     "--wait-ready", "2", "--log-level", "error"])
    assert 2 <= time.monotonic() - started < 20
    assert_unreachable(proc, f"127.0.0.1:{port}", "connection refused", "waited 2 s")


def test_v2_model_not_loaded_is_not_ready(tmp_path: Path) -> None:
    """MLServer answers, but not for this model: its readiness route says 404, nothing is sent."""
    with MLServerServer() as server:
        proc = run_ours(["-d", "no-such-model", "--protocol", "v2", "-g", "seldon", "-h", server.rest_host,
                         "-i", str(infile(tmp_path))])
        ok = run_ours(["-d", "echo", "--protocol", "v2", "-g", "seldon", "-h", server.rest_host,
                       "-i", str(infile(tmp_path)), "-o", str(tmp_path / "ok.txt")])
    assert_unreachable(proc, "HTTP 404", "/v2/models/no-such-model/ready")
    assert not (tmp_path / "in.out.txt").exists()
    assert ok.returncode == 0, ok.stderr


def test_v2_grpc_readiness_through_the_grpc_transport(tmp_path: Path) -> None:
    """gRPC ServerReady/ModelReady: a model the server does not have is refused before a line is sent."""
    with MLServerServer() as server:
        proc = run_ours(["-d", "no-such-model", "--protocol", "v2", "-t", "grpc", "-g", "seldon",
                         "-h", server.grpc_host, "-i", str(infile(tmp_path)), "--log-level", "error"])
        ok = run_ours(["-d", "echo", "--protocol", "v2", "-t", "grpc", "-g", "seldon", "-h", server.grpc_host,
                       "-i", str(infile(tmp_path)), "-o", str(tmp_path / "ok.txt")])
    assert_unreachable(proc, "ModelReady", server.grpc_host)
    assert not (tmp_path / "in.out.txt").exists()
    assert ok.returncode == 0, ok.stderr
    assert "40 succeeded, 0 failed" in ok.stdout


def test_through_a_gateway_a_missing_model_is_its_502(tmp_path: Path) -> None:
    """istio-style gateway (nginx) to the real microservice: ready when the model is there; with nothing
    behind the gateway its 502 is "not ready" (exit 4, nothing written), though the gateway itself answers."""
    from tests.servers import NginxGateway

    http, grpc, metrics = free_ports(3)
    with NginxGateway(f"127.0.0.1:{http}", "ns", "dep") as gateway:
        base = ["-d", "dep", "-n", "ns", "-g", "istio", "-h", gateway.host, "-i", str(infile(tmp_path))]
        down = run_ours([*base, "-o", str(tmp_path / "down.txt")])
        with SeldonServer("EchoModel", http_port=http, grpc_port=grpc, metrics_port=metrics):
            up = run_ours([*base, "-o", str(tmp_path / "up.txt")])
    assert_unreachable(down, "HTTP 502", "/seldon/ns/dep/")
    assert not (tmp_path / "down.txt").exists()
    assert up.returncode == 0, up.stderr
    assert "40 succeeded, 0 failed" in up.stdout


def test_grpc_resolver_targets_are_left_to_grpc(tmp_path: Path) -> None:
    """``ipv4:`` lists and ``dns:///`` targets are not host:port: the check leaves them to gRPC and the run goes."""
    with SeldonServer("EchoModel") as server:
        port = server.grpc_port
        for host in (f"ipv4:127.0.0.1:{port}", f"dns:///localhost:{port}"):
            proc = run_ours(["-d", "echo", "-g", "seldon", "-t", "grpc", "-h", host, "-i", str(infile(tmp_path)),
                             "-o", str(tmp_path / "out.txt")], timeout=60)
            assert proc.returncode == 0, proc.stderr
            assert "40 succeeded, 0 failed" in proc.stdout
