"""The daemon's log hides the run's credentials in every line (issue 25), not only where the source redacts.

Real ``twistd -n seldon-batch`` / ``twist seldon-batch`` runs at ``-l debug`` against the hostile loopback
server, with the call token inside the input file's name: the batch's first log line quotes that path, which
no source-level redaction covers, so only the log-wide filter (:func:`seldon_batch_tx.logs.without_secrets`)
keeps it out. In-process checks cover tracebacks, braces and events that pass untouched.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import LogLevel, textFileLogObserver
from twisted.python.failure import Failure

from seldon_batch_tx.logs import hide_in_logs, without_secrets
from seldon_batch_tx.redaction import REDACTED, Secrets
from tests.daemon_log_observer import LOG_ENV
from tests.hostile_server import REPO_ROOT, HostileServer
from tests.loopback import loopback_env
from tests.test_daemon_real import TWISTD, Daemon, wait_for

TOKEN = "tok-Secret-0123456789abcdef"
TWIST = str(Path(sys.executable).parent / "twist")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileServer]:
    with HostileServer(tmp_path_factory.mktemp("recorder") / "requests.jsonl") as hostile:
        yield hostile


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """One daemon run of one file, to its end (killed after 90 s: a hang is a failure)."""
    return subprocess.run(command, cwd=cwd, env=env or loopback_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, timeout=90)


def batch_args(tmp_path: Path, server: HostileServer) -> list[str]:
    source = tmp_path / f"in-{TOKEN}.jsonl"
    source.write_text("[1]\n[2]\n[3]\n")
    return ["seldon-batch", "-d", "echo", "-g", "seldon", "-h", server.rest_host, "--dashboard", "none",
            "-l", "debug", "--call-credentials-token", TOKEN, "-i", str(source), "-o", str(tmp_path / "out.jsonl")]


def assert_hidden(log: str, tmp_path: Path) -> None:
    assert TOKEN not in log
    assert f"in-{REDACTED}.jsonl" in log  # the line is kept, only the credential is replaced
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 3


def test_twistd_log_file_hides_the_token(tmp_path: Path, server: HostileServer) -> None:
    """twistd's own ``--logfile`` observer, the default chain."""
    done = run([TWISTD, "-n", "--pidfile=", "--logfile", str(tmp_path / "d.log"), *batch_args(tmp_path, server)],
               tmp_path)
    assert done.returncode == 0, done.stdout
    assert_hidden((tmp_path / "d.log").read_text() + done.stdout, tmp_path)


def test_twistd_stdout_log_hides_the_token(tmp_path: Path, server: HostileServer) -> None:
    done = run([TWISTD, "-n", "--pidfile=", *batch_args(tmp_path, server)], tmp_path)
    assert done.returncode == 0, done.stdout
    assert "finished: 3 lines" in done.stdout  # the debug lines are there
    assert_hidden(done.stdout, tmp_path)


def test_twistd_logger_option_is_used_and_hides_the_token(tmp_path: Path, server: HostileServer) -> None:
    """A ``--logger`` of the operator's still gets every event, without the credential."""
    env = {**loopback_env(), "PYTHONPATH": str(REPO_ROOT), LOG_ENV: str(tmp_path / "custom.log")}
    done = run([TWISTD, "-n", "--pidfile=", "--logger", "tests.daemon_log_observer.observer",
                *batch_args(tmp_path, server)], tmp_path, env)
    assert done.returncode == 0, done.stdout
    custom = (tmp_path / "custom.log").read_text()
    assert "custom:" in custom and "3 lines" in custom
    assert_hidden(custom + done.stdout, tmp_path)


def test_twist_log_hides_the_token(tmp_path: Path, server: HostileServer) -> None:
    done = run([TWIST, "--log-level", "debug", *batch_args(tmp_path, server)], tmp_path)
    assert done.returncode == 0, done.stdout
    assert "3 lines" in done.stdout
    assert_hidden(done.stdout, tmp_path)


def test_daemon_hides_a_sidecars_token_while_its_file_runs(tmp_path: Path, server: HostileServer) -> None:
    """A token a file's sidecar brings (``--sidecar-allow call-credentials-token``), quoted by a failing
    server: hidden in the daemon's debug log and in the file's output, as the daemon's own would be."""
    sidecar_token = "side-Token-9876543210fedcba"
    batch_id = f"sidecar-{time.monotonic_ns()}"
    server.script(batch_id, default={"mode": "raw", "status": 500, "body": f"you sent Bearer {sidecar_token}"})
    watch = tmp_path / "watch"
    daemon = Daemon(tmp_path, server, ["-d", "script", "-g", "istio", "-n", "ns", "--watch-dir", str(watch),
                                       "--poll-interval", "0.2", "-l", "debug", "-r", "1", "--timeout", "5",
                                       "--sidecar-allow", "call-credentials-token"])
    try:
        daemon.wait_ready()
        (watch / "incoming" / "in.jsonl.json").write_text(json.dumps(
            {"call-credentials-token": sidecar_token, "batch-id": batch_id}))
        (watch / "incoming" / "in.jsonl").write_text("[1]\n[2]\n")
        (watch / "incoming" / "in.jsonl.ready").touch()
        wait_for(lambda: list((watch / "failed").glob("in*.summary.json")) or list(
            (watch / "done").glob("in*.summary.json")), 60, "the file to be filed", details=daemon.log)
    finally:
        daemon.stop()
    log = daemon.log()
    assert "attempt 1 for line 0 failed" in log and f"Bearer {REDACTED}" in log, log[-3000:]
    outputs = [p.read_text() for d in ("done", "failed") for p in (watch / d).glob("in*.out*")]
    assert outputs and all(text.count("\n") == 2 and REDACTED in text for text in outputs), outputs
    assert sidecar_token not in log + "".join(outputs)


@pytest.fixture
def hidden() -> Iterator[None]:
    hide_in_logs(Secrets([TOKEN]))
    yield
    hide_in_logs(Secrets())


def written(event: dict[str, Any]) -> str:
    out = io.StringIO()
    without_secrets(textFileLogObserver(out))(event)
    return out.getvalue()


def test_traceback_and_braces_are_redacted(hidden: None) -> None:
    try:
        raise ValueError(f"server said: Bearer {TOKEN} {{}}")
    except ValueError:
        failure = Failure()
    text = written({"log_format": "call {n} failed: {why}", "n": 1, "why": f"{{'auth': '{TOKEN}'}}",
                    "log_failure": failure, "log_level": LogLevel.error, "log_namespace": "t", "log_time": 0.0})
    assert TOKEN not in text
    assert f"call 1 failed: {{'auth': '{REDACTED}'}}" in text
    assert f"ValueError: server said: Bearer {REDACTED} {{}}" in text  # the traceback stays, redacted


def test_escaped_token_is_redacted(hidden: None) -> None:
    quoted = TOKEN.replace("-", "\\u002d")
    assert TOKEN.replace("-", "\\u002d") not in written({"log_format": "{body}", "body": quoted, "log_time": 0.0})


def test_events_without_a_secret_pass_untouched(hidden: None) -> None:
    seen: list[dict[str, Any]] = []
    event = {"log_format": "{n} lines", "n": 3, "log_time": 0.0}
    without_secrets(seen.append)(event)  # type: ignore[arg-type]
    assert seen == [event] and seen[0] is event


def test_nothing_searched_without_secrets() -> None:
    hide_in_logs(Secrets())
    seen: list[dict[str, Any]] = []
    event = {"log_format": TOKEN, "log_time": 0.0}
    without_secrets(seen.append)(event)  # type: ignore[arg-type]
    assert seen[0] is event
