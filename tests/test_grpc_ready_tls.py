"""Readiness of the Seldon protocol over gRPC (issue 19): a real gRPC channel with the run's TLS settings
must become READY before the first line, so ``--use-ssl`` against a plaintext port (or gRPC against a
REST port) is one line and exit 4 with nothing written, not every line a grpc_UNAVAILABLE error line.
And ``--binary-data`` (V2 only) is refused with ``--protocol seldon``. Real Seldon microservice."""

from __future__ import annotations

import time
from pathlib import Path

from tests.servers import SeldonServer, free_ports
from tests.test_outage_ready import (
    assert_unreachable,
    assert_waited_and_ran,
    infile,
    run_ours,
    run_with_model_started_later,
)


def grpc_args(host: str, source: Path, *extra: str) -> list[str]:
    return ["-d", "echo", "-g", "seldon", "-t", "grpc", "-h", host, "-i", str(source), *extra]


def test_tls_against_a_plaintext_grpc_port_is_one_line(tmp_path: Path, seldon_server: SeldonServer) -> None:
    """The review's case: ``--use-ssl`` against the microservice's plaintext gRPC port, verified or trusted on
    first use: exit 4 within seconds (not after the outage timeout), naming host, port and the TLS handshake."""
    source = infile(tmp_path)
    for extra in ([], ["--no-ssl-verify"]):
        started = time.monotonic()
        proc = run_ours(grpc_args(seldon_server.grpc_host, source, "--use-ssl", "--outage-timeout", "5", *extra))
        assert time.monotonic() - started < 10, proc.stderr
        assert_unreachable(proc, seldon_server.grpc_host, "TLS" if extra else "TLS handshake failed")
        assert not (tmp_path / "in.out.txt").exists()


def test_grpc_against_a_rest_port_is_one_line(tmp_path: Path, seldon_server: SeldonServer) -> None:
    """A plaintext gRPC channel to an HTTP/1 port connects over TCP but never becomes READY."""
    proc = run_ours(grpc_args(seldon_server.rest_host, infile(tmp_path)))
    assert_unreachable(proc, seldon_server.rest_host, "gRPC handshake failed")
    assert not (tmp_path / "in.out.txt").exists()


def test_plaintext_grpc_still_runs(tmp_path: Path, seldon_server: SeldonServer) -> None:
    proc = run_ours(grpc_args(seldon_server.grpc_host, infile(tmp_path), "-w", "2"))
    assert proc.returncode == 0, proc.stderr
    assert "40 succeeded, 0 failed" in proc.stdout
    assert len((tmp_path / "in.out.txt").read_text().splitlines()) == 40


def test_wait_ready_gives_up_with_the_tls_reason(tmp_path: Path, seldon_server: SeldonServer) -> None:
    started = time.monotonic()
    proc = run_ours(grpc_args(seldon_server.grpc_host, infile(tmp_path), "--use-ssl", "--wait-ready", "2",
                              "--log-level", "error"))
    assert 2 <= time.monotonic() - started < 20
    assert_unreachable(proc, seldon_server.grpc_host, "TLS handshake failed", "waited 2 s")
    assert not (tmp_path / "in.out.txt").exists()


def test_wait_ready_waits_for_a_grpc_model_started_later(tmp_path: Path) -> None:
    """``--wait-ready 30`` over gRPC with the microservice started 4 s later: a normal run."""
    source = infile(tmp_path)
    assert_waited_and_ran(run_with_model_started_later(4.0, lambda rest, grpc: grpc_args(grpc, source,
                                                                                        "--wait-ready", "30")))


def test_binary_data_needs_protocol_v2(tmp_path: Path) -> None:
    """``--binary-data`` is V2's binary tensor extension: with the Seldon protocol it is refused, not ignored."""
    (port,) = free_ports(1)
    for transport in ("rest", "grpc"):
        proc = run_ours(["-d", "m", "-g", "seldon", "-t", transport, "-h", f"127.0.0.1:{port}",
                         "-i", str(infile(tmp_path)), "--binary-data"])
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert "--binary-data" in lines[0] and "needs --protocol v2" in lines[0]
        assert proc.stdout == ""
        assert not (tmp_path / "in.out.txt").exists()
