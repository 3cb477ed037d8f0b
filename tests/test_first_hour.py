"""A user's first hour (issue 23): the README's local-model commands pasted into a shell score a file over REST
and gRPC and stop what they started; every entry point's ``--help`` and ``--version`` go to stdout with status 0;
a command started with SIGINT ignored (``cmd &`` in a script) says that SIGTERM stops its linger, and it does.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.loopback import LOOPBACK, free_ports, loopback_env, tcp_accepts
from tests.processes import stop_group
from tests.servers import REPO_ROOT, SeldonServer

BIN = Path(sys.executable).parent
README = REPO_ROOT / "README.md"


def readme_block(heading: str) -> str:
    """The first ```bash block after ``heading`` in README.md, as a user would copy it."""
    text = README.read_text()
    after = text[text.index(heading):]
    found = re.search(r"```bash\n(.*?)```", after, re.S)
    assert found is not None, f"no bash block after {heading!r}"
    return found.group(1)


def test_readme_local_model_commands_score_over_rest_and_grpc(tmp_path: Path) -> None:
    """Pasted into bash (ports and output paths moved out of the way of parallel runs), the README's
    commands start the real microservice, score the sample over REST and gRPC, and stop every process."""
    block = readme_block("### A model on this machine")
    rest, grpc, metrics = free_ports(3)
    script = (block.replace("9000", str(rest)).replace("5000", str(grpc))
              .replace("--background", f"--background --metrics-port {metrics}")
              .replace("out/sample.", f"{tmp_path}/sample."))
    assert script.count(".venv/bin/seldon-batch-processor") == 2 and "-t grpc" in script
    process = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=REPO_ROOT, env=loopback_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=900)  # a first run may install .venvs/seldon
    finally:
        stop_group(process, signal.SIGKILL)
        subprocess.run(["bash", "scripts/serve-model.sh", "--stop", "--rest-port", str(rest)], cwd=REPO_ROOT,
                       capture_output=True, timeout=60)
    assert process.returncode == 0, out[-3000:] + err[-3000:]
    inputs = (REPO_ROOT / "examples" / "data" / "sample.txt").read_text().splitlines()
    for transport in ("rest", "grpc"):
        lines = [json.loads(line) for line in (tmp_path / f"sample.{transport}.txt").read_text().splitlines()]
        assert len(lines) == len(inputs) and not [line for line in lines if "status" in line]
        assert sorted(line["meta"]["tags"]["batch_index"] for line in lines) == list(range(len(inputs)))
    assert out.count(f"{len(inputs)} lines: {len(inputs)} succeeded, 0 failed") == 2
    assert f"model microservice on 127.0.0.1:{rest} (REST) and 127.0.0.1:{grpc} (gRPC)" in out
    assert not tcp_accepts(LOOPBACK, rest) and not tcp_accepts(LOOPBACK, grpc)  # stopped, with its workers


ENTRY_POINTS = [
    [str(BIN / "seldon-batch-processor"), "--help"],
    [str(BIN / "seldon-batch"), "--help"],
    [str(BIN / "seldon-batch"), "-h"],
    [str(BIN / "seldon-batch"), "verify", "--help"],
    [str(BIN / "seldon-batch"), "merge", "--help"],
    [str(BIN / "twistd"), "seldon-batch", "--help"],
]


@pytest.mark.parametrize("command", ENTRY_POINTS, ids=[" ".join([Path(c[0]).name, *c[1:]]) for c in ENTRY_POINTS])
def test_help_goes_to_stdout_with_status_0(command: list[str]) -> None:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60, env=loopback_env())
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "usage" in proc.stdout.lower()


@pytest.mark.parametrize("program", ["seldon-batch", "seldon-batch-processor"])
def test_version_on_stdout_with_status_0(program: str) -> None:
    proc = subprocess.run([str(BIN / program), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == ""
    assert re.match(r"seldon-batch-tx \S+\nTwisted \S+\ngrpcio \S+\n$", proc.stdout), proc.stdout


def test_unknown_seldon_batch_command_is_a_usage_error() -> None:
    proc = subprocess.run([str(BIN / "seldon-batch"), "frobnicate"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("seldon-batch: error: unknown command 'frobnicate'\n")


@pytest.fixture(scope="module")
def server() -> Iterator[SeldonServer]:
    with SeldonServer() as running:
        yield running


def test_inherited_ignored_sigint_is_honoured_and_sigterm_ends_the_linger(server: SeldonServer,
                                                                          tmp_path: Path) -> None:
    """Started as a script's background job (SIGINT ignored): the linger line says SIGTERM stops it, SIGINT
    leaves it up, SIGTERM ends it with the batch's status."""
    (tmp_path / "in.txt").write_text("[[1]]\n[[2]]\n")
    command = [str(BIN / "seldon-batch-processor"), "-d", "m", "-g", "seldon", "-h", server.rest_host, "-i",
               "in.txt", "--dashboard", f"tcp:0:interface={LOOPBACK}", "--dashboard-linger", "forever"]
    process = subprocess.Popen(["bash", "-c", 'trap "" INT; exec "$@"', "bash", *command], cwd=tmp_path,
                               env=loopback_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    assert process.stderr is not None
    try:
        deadline = time.monotonic() + 60
        line = ""
        while time.monotonic() < deadline and "stays on" not in line:
            line = process.stderr.readline()
            assert line, "no linger line"
        assert f"until SIGTERM (kill {process.pid})" in line, line
        process.send_signal(signal.SIGINT)
        time.sleep(1.5)
        assert process.poll() is None  # ignored, as the shell asked
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        stop_group(process, signal.SIGKILL)


def test_linger_says_ctrl_c_when_sigint_is_default(server: SeldonServer, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("[[1]]\n")
    process = subprocess.Popen([str(BIN / "seldon-batch-processor"), "-d", "m", "-g", "seldon", "-h",
                                server.rest_host, "-i", "in.txt", "--dashboard", f"tcp:0:interface={LOOPBACK}",
                                "--dashboard-linger", "forever"], cwd=tmp_path, env=loopback_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert process.stderr is not None
    try:
        line = ""
        while "stays on" not in line:
            line = process.stderr.readline()
            assert line, "no linger line"
        assert "until Ctrl-C" in line, line
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    finally:
        stop_group(process, signal.SIGKILL)
