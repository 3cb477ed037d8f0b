"""``--header`` values gRPC cannot carry are refused at start (issue 25, low).

A ``-bin`` key (binary metadata), a key with characters gRPC refuses, a ``grpc-`` key, a tab in a
value, or more metadata than a server takes (8 KiB by default) used to be found only per line, each
line retried and then an error line. Now: one line and exit 2 from the real command, nothing sent to
the (real, loopback) gRPC server; a sidecar allowed to set headers gets its file refused. REST, which
takes such HTTP headers, is unchanged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from seldon_batch_tx import cli
from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.daemon.files import Rejected
from seldon_batch_tx.daemon.sidecars import apply_sidecar
from tests.hostile_server import HostileServer
from tests.loopback import loopback_env

CLI = str(Path(sys.executable).parent / "seldon-batch-processor")
BAD_HEADERS = {
    "binary key": ("x-trace-bin: abc", "-bin"),
    "bad key character": ("x!trace: abc", "letters, digits"),
    "reserved key": ("grpc-timeout: 1S", "reserved by gRPC"),
    "tab in value": ("x-trace: a\tb", "no tab"),
    "too much metadata": ("x-big: " + "v" * 9000, "at most 8,192"),
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileServer]:
    server = HostileServer(tmp_path_factory.mktemp("hostile") / "requests.jsonl", grpc=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_the_command_refuses_each_header_grpc_cannot_carry(tmp_path: Path, hostile: HostileServer) -> None:
    """Exit 2, one line naming --header and why, no output file, no request at the gRPC server."""
    (tmp_path / "in.txt").write_text('[[1, 2]]\n[[3, 4]]\n')
    for case, (header, why) in BAD_HEADERS.items():
        proc = subprocess.run([CLI, "-d", "echo", "-g", "seldon", "-t", "grpc", "-h", hostile.grpc_host,
                               "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.txt"), "-u", "hdr",
                               "--header", header], capture_output=True, text=True, timeout=120, env=loopback_env())
        lines = proc.stderr.splitlines()
        assert proc.returncode == 2, (case, proc.stderr)
        assert len(lines) == 1 and "--header" in lines[0] and why in lines[0], (case, proc.stderr)
        assert "v" * 200 not in lines[0]  # a value is never shown (it may be a credential)
        assert not (tmp_path / "out.txt").exists()
    assert [r for r in hostile.received() if r.get("batch_id") == "hdr"] == []


def test_a_good_header_still_reaches_the_grpc_server(tmp_path: Path, hostile: HostileServer) -> None:
    """A header gRPC takes (any case: it is lower-cased) and a Host header still run the batch."""
    (tmp_path / "in.txt").write_text('[[1, 2]]\n')
    proc = subprocess.run([CLI, "-d", "echo", "-g", "seldon", "-t", "grpc", "-h", hostile.grpc_host,
                           "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.txt"), "-u", "good-hdr",
                           "--header", "X-Trace_ID.v2: abc", "--header", "Host: model.example"],
                          capture_output=True, text=True, timeout=120, env=loopback_env())
    assert proc.returncode == 0, proc.stderr
    assert "data" in json.loads((tmp_path / "out.txt").read_text())


def test_rest_takes_these_http_headers(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("[[1]]\n")
    for header in ("x-trace-bin: abc", "x!trace: abc", "x-trace: a\tb"):
        cli.parse(["-d", "m", "-i", str(tmp_path / "in.txt"), "--header", header])


def test_a_sidecar_header_grpc_cannot_carry_refuses_its_file(tmp_path: Path) -> None:
    """With --sidecar-allow header, a sidecar's -bin header on a gRPC daemon is the file's reason for failed/."""
    sidecar = tmp_path / "in.txt.json"
    sidecar.write_text(json.dumps({"header": ["x-trace-bin: abc"]}))
    config = BatchConfig(deployment_name="d", input_data_path=str(tmp_path / "in.txt"),
                         output_data_path=str(tmp_path / "out.txt"), transport="grpc")
    with pytest.raises(Rejected) as refused:
        apply_sidecar(config, str(sidecar), allow=frozenset({"header"}))
    assert "-bin" in str(refused.value) and "\n" not in str(refused.value)
