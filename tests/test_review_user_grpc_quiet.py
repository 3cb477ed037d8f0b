"""gRPC's C core does not write its own log lines into ours (found in review).

``-t grpc --use-ssl`` against a plaintext server printed one ``I1205 06:20:58.771411 ...
ssl_transport_security.cc ... Handshake failed`` line per attempt on stderr, in gRPC's format,
between the run's structured log lines. Only gRPC's errors show now, unless ``--log-level debug`` or
the user's own ``$GRPC_VERBOSITY`` asks for more.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from seldon_batch_tx.logs import quiet_grpc_core
from tests.loopback import loopback_env
from tests.servers import SeldonServer

BIN = Path(sys.executable).parent
CORE_LINE = re.compile(r"^[IWE]\d{4} \d\d:\d\d:\d\d", re.M)  # absl's format, as gRPC's C core writes it


@pytest.mark.parametrize("command", [["seldon-batch-processor"], ["twistd", "-n", "seldon-batch"]])
def test_tls_to_a_plaintext_server_logs_no_core_lines(seldon_server: SeldonServer, command: list[str],
                                                       tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("[[1, 2]]\n" * 4)
    args = [str(BIN / command[0]), *command[1:], "-d", "echo", "-g", "seldon", "-t", "grpc", "--use-ssl",
            "-h", seldon_server.grpc_host, "-i", str(src), "-o", str(tmp_path / "out.txt"), "-r", "0",
            "--timeout", "3", "-w", "2"]
    if command[0] == "twistd":
        args += ["--dashboard", "none"]
    env = loopback_env()
    env.pop("GRPC_VERBOSITY", None)
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode != 0  # the handshake cannot succeed: that is not what this test is about
    assert "TLS handshake failed" in proc.stdout + proc.stderr, proc.stdout[-3000:]  # readiness (issue 19)
    assert not CORE_LINE.search(proc.stderr), proc.stderr[-3000:]


def test_user_choice_and_debug_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRPC_VERBOSITY", raising=False)
    quiet_grpc_core("debug")
    assert "GRPC_VERBOSITY" not in os.environ
    quiet_grpc_core("info")
    assert os.environ["GRPC_VERBOSITY"] == "ERROR"
    monkeypatch.setenv("GRPC_VERBOSITY", "INFO")
    quiet_grpc_core("warning")
    assert os.environ["GRPC_VERBOSITY"] == "INFO"
