"""``-t grpc -h dns://SERVER/NAME:PORT`` asks SERVER, as the README says (issue 25, low).

gRPC's c-ares resolver (grpcio's default) sends the queries to SERVER; its native resolver
(``GRPC_DNS_RESOLVER=native``) would silently ask the system's DNS instead, so that combination is
refused at start (exit 2, one line). Against a loopback DNS server (tests/dns_server.py, twisted.names)
that alone knows the model's name, and the real Seldon microservice's gRPC port.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.dns_server import DnsServer
from tests.loopback import loopback_env
from tests.servers import SeldonServer

CLI = str(Path(sys.executable).parent / "seldon-batch-processor")
NAME = "model.batch-test.invalid"


def run(tmp_path: Path, host: str, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "in.txt").write_text("".join(json.dumps([[i, 0.5]]) + "\n" for i in range(5)))
    return subprocess.run([CLI, "-d", "m", "-g", "seldon", "-t", "grpc", "-h", host, "-r", "0", "--timeout", "10",
                           "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.txt")],
                          capture_output=True, text=True, timeout=120, env={**loopback_env(), **env})


def test_dns_server_target_is_asked_and_the_batch_runs(tmp_path: Path, seldon_server: SeldonServer) -> None:
    """A name only the loopback DNS server knows: every line answered by the model, the server queried."""
    with DnsServer(tmp_path, NAME) as dns:
        proc = run(tmp_path, f"dns://127.0.0.1:{dns.port}/{NAME}:{seldon_server.grpc_port}")
        assert proc.returncode == 0, proc.stderr
        records = [json.loads(line) for line in (tmp_path / "out.txt").read_text().splitlines()]
        assert sorted(r["meta"]["tags"]["batch_index"] for r in records) == list(range(5))
        assert all(r["data"]["ndarray"] == [[r["meta"]["tags"]["batch_index"], 0.5]] for r in records)
        assert f"{NAME} A" in dns.queries()


def test_the_native_resolver_with_a_dns_server_is_refused_at_start(tmp_path: Path) -> None:
    """GRPC_DNS_RESOLVER=native would ignore SERVER: one line, exit 2, no output made."""
    proc = run(tmp_path, f"dns://127.0.0.1:53/{NAME}:9000", GRPC_DNS_RESOLVER="native")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "-h/--host" in lines[0] and "GRPC_DNS_RESOLVER" in lines[0], proc.stderr
    assert not (tmp_path / "out.txt").exists()
    # the system's DNS (dns:///NAME) stays allowed with the native resolver
    from seldon_batch_tx.grpc_checks import grpc_resolver_problem

    assert grpc_resolver_problem(f"dns:///{NAME}:9000", {"GRPC_DNS_RESOLVER": "native"}) is None
    assert grpc_resolver_problem(f"dns://10.0.0.1/{NAME}:9000", {}) is None
