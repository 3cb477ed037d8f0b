"""Review of ``seldon-batch-processor`` by a new user, for real against the Seldon model microservice:

- two SIGTERMs (``timeout`` and a group kill) or two SIGINTs a few ms apart, during a batch or during
  ``--dashboard-linger forever``, end it as one does: no Twisted traceback, the same outcome lines and
  the README's exit status (3 for a stopped batch, the batch's own after the linger);
- a dashboard reachable from other hosts is refused naming what this command reads (the environment
  variable: it has no ``--dashboard-token``, ``twistd seldon-batch`` has);
- ``python -m seldon_batch_tx.cli`` runs the command (it did nothing and exited 0).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seldon_batch_tx.dashboard.security import TOKEN_ENV, check_endpoint
from tests.loopback import LOOPBACK, free_port, loopback_env
from tests.processes import read_stderr_until, stop_group
from tests.servers import SeldonServer

PROCESSOR = str(Path(sys.executable).parent / "seldon-batch-processor")
NOISE = ("Traceback", "critical", "CRITICAL", "ReactorNotRunning")
STOPPED = "stopped early: interrupted by a signal"


@pytest.fixture
def server(seldon_server: SeldonServer) -> SeldonServer:
    return seldon_server  # the session's EchoModel (conftest.py)


def start(server: SeldonServer, workdir: Path, *extra: str, lines: int = 3000) -> subprocess.Popen[str]:
    """The command in a session of its own, with the default dispositions of SIGINT and SIGTERM."""
    (workdir / "in.txt").write_text("".join(f"[[{n}]]\n" for n in range(lines)) + "not json\n")
    return subprocess.Popen([PROCESSOR, "-d", "m", "-g", "seldon", "-h", server.rest_host, "-i", "in.txt",
                             "-o", "out.txt", "-r", "0", *extra], cwd=workdir, env=loopback_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def read_until(process: subprocess.Popen[str], pattern: str) -> list[str]:
    return read_stderr_until(process, re.compile(pattern))[1]


def signal_twice(process: subprocess.Popen[str], number: int, gap: float) -> tuple[str, str]:
    try:
        process.send_signal(number)
        time.sleep(gap)
        if process.poll() is None:
            process.send_signal(number)
        out, err = process.communicate(timeout=60)
    finally:
        stop_group(process, signal.SIGKILL)
    return out, err


TWICE = [(signal.SIGTERM, 0.0), (signal.SIGTERM, 0.003), (signal.SIGINT, 0.0), (signal.SIGINT, 0.001)]


@pytest.mark.parametrize(("number", "gap"), TWICE, ids=[f"{s.name}-{g * 1000:g}ms" for s, g in TWICE])
def test_a_repeated_signal_during_the_batch_is_one_signal(server: SeldonServer, tmp_path: Path,
                                                          number: signal.Signals, gap: float) -> None:
    process = start(server, tmp_path, "--max-rate", "100")
    before = read_until(process, r"lines from in\.txt")
    time.sleep(0.5)  # requests in flight
    out, err = signal_twice(process, number, gap)
    err = "".join(before) + err
    assert not [word for word in NOISE if word in err], err[-3000:]
    assert process.returncode == 3, (process.returncode, out, err[-2000:])  # README: stopped early by a signal
    assert re.search(rf"^3001 lines: \d+ succeeded, .* not processed, {STOPPED};", out, re.M), out


LINGER = [(signal.SIGTERM, 0.0), (signal.SIGTERM, 0.003), (signal.SIGINT, 0.001)]


@pytest.mark.parametrize(("number", "gap"), LINGER, ids=[f"{s.name}-{g * 1000:g}ms" for s, g in LINGER])
def test_a_repeated_signal_during_the_linger_is_one_signal(server: SeldonServer, tmp_path: Path,
                                                           number: signal.Signals, gap: float) -> None:
    process = start(server, tmp_path, "--dashboard", f"tcp:0:interface={LOOPBACK}", "--dashboard-linger",
                    "forever", lines=2)
    before = read_until(process, r"the dashboard stays on http://\S+ until Ctrl-C")
    time.sleep(0.3)
    out, err = signal_twice(process, number, gap)
    err = "".join(before) + err
    assert not [word for word in NOISE if word in err], err[-3000:]
    assert process.returncode == 1, (process.returncode, out, err[-2000:])  # the batch's: one error line
    assert "3 lines: 2 succeeded, 1 failed" in out and STOPPED not in out


def test_a_dashboard_for_other_hosts_names_the_variable_this_command_reads(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("[[1]]\n")
    for endpoint in ("8081", "tcp:8081:interface=0.0.0.0"):
        run = subprocess.run([PROCESSOR, "-d", "echo", "-g", "seldon", "-h", f"{LOOPBACK}:{free_port()}",
                              "-i", "in.txt", "-o", "out.txt", "--dashboard", endpoint], cwd=tmp_path,
                             env={k: v for k, v in loopback_env().items() if k != TOKEN_ENV},
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 2 and run.stdout == "", run.stdout + run.stderr
        assert run.stderr.count("\n") == 1 and "not loopback-only" in run.stderr, run.stderr
        assert f"set {TOKEN_ENV} in the environment" in run.stderr and "--dashboard-token" not in run.stderr
        assert not (tmp_path / "out.txt").exists()
    # twistd seldon-batch has the option: its refusal still names it
    with pytest.raises(ValueError, match=f"set --dashboard-token \\(or {TOKEN_ENV}\\)"):
        check_endpoint("8081", None)


def test_python_m_runs_the_command(server: SeldonServer, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("[[1]]\n[[2]]\n")
    module = [sys.executable, "-m", "seldon_batch_tx.cli"]
    run = subprocess.run([*module, "-d", "m", "-g", "seldon", "-h", server.rest_host, "-i", "in.txt", "-o",
                          "out.txt"], cwd=tmp_path, env=loopback_env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 lines: 2 succeeded, 0 failed" in run.stdout
    assert len((tmp_path / "out.txt").read_text().splitlines()) == 2
    bad = subprocess.run([*module, "-w", "0"], cwd=tmp_path, env=loopback_env(), capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "seldon-batch-processor: error: -w/--workers 0: must be at least 1" in bad.stderr
