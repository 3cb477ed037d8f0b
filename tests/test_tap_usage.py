"""`twistd -n seldon-batch` as a real process: usage mistakes are ONE line and exit 2, secrets from files.

twistd's own handling of a plugin's usage error prints the whole usage text and exits 1; the
plugin leaves with one line on stderr and status 2 instead, for flags, environment variables and
the daemon's own options (--sidecar-allow, --dashboard-token-file...). One-file mode refuses an
output it cannot resume or that another run holds with status 2; a dashboard token read from a
file guards the real dashboard; --sidecar-allow reaches the watch-directory service.
"""

from __future__ import annotations

import fcntl
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from seldon_batch_tx import cli
from seldon_batch_tx.daemon.service import WatchDirService
from seldon_batch_tx.dashboard.listener import DashboardService
from seldon_batch_tx.dashboard.progress import ProgressReporter
from seldon_batch_tx.options import ProcessorOptions
from seldon_batch_tx.runner import OneBatchService
from seldon_batch_tx.tap import Options, makeService
from tests.loopback import LOOPBACK, free_port, loopback_env
from tests.processes import stop_group, wait_until
from tests.test_cli_usage import (
    SECRET,
    RecordingServer,
    assert_one_line_usage_error,
    recording_server,  # noqa: F401 - a fixture
    run_command,
    workdir,  # noqa: F401 - a fixture
)

TWISTD = str(Path(sys.executable).parent / "twistd")
PROG = "twistd seldon-batch"
NOWHERE = f"{LOOPBACK}:9"


def twistd(*args: str) -> list[str]:
    return [TWISTD, "-n", "--pidfile=", "seldon-batch", *args]


#: (flags, environment, text the one line must hold).
MISTAKES: list[tuple[list[str], dict[str, str], list[str]]] = [
    ([], {"SELDON_BATCH_WORKERS": "0"}, ["--workers 0 (from $SELDON_BATCH_WORKERS): must be at least 1"]),
    ([], {"SELDON_BATCH_POLL_INTERVAL": "-1"}, ["--poll-interval -1 (from $SELDON_BATCH_POLL_INTERVAL)"]),
    ([], {"SELDON_BATCH_DASHBOARD_TOKEN": f"{SECRET}\nX: 1"},
     ["--dashboard-token (value not shown) (from $SELDON_BATCH_DASHBOARD_TOKEN)"]),
    (["-h", "x:abc"], {}, ["--host x:abc: port abc is not a number"]),
    (["--header", "X-A: 1\r\nX-Injected: 2"], {}, ["--header (value not shown): the value of header X-A"]),
    (["--call-credentials-token", f"{SECRET}\r\n"], {}, ["--call-credentials-token (value not shown)"]),
    (["--call-credentials-token-file", "two-lines.tok"], {}, ["--call-credentials-token-file two-lines.tok"]),
    (["--dashboard-token", f"{SECRET} x"], {}, ["--dashboard-token (value not shown)"]),
    (["--dashboard-token-file", "empty.tok"], {}, ["--dashboard-token-file empty.tok: is empty"]),
    (["--dashboard-token-file", "fifo.tok"], {}, ["--dashboard-token-file fifo.tok: is not a regular file"]),
    (["--dashboard-token-file", "good.tok", "--dashboard-token", SECRET], {},
     ["--dashboard-token-file good.tok: cannot be used with --dashboard-token"]),
    (["--dashboard", "tcp:0:interface=0.0.0.0"], {}, ["--dashboard tcp:0:interface=0.0.0.0", "not loopback-only"]),
    (["--sidecar-allow", "host,bogus"], {}, ["--sidecar-allow host,bogus", "bogus"]),
    (["--sidecar-allow", "input-data-path"], {}, ["--sidecar-allow input-data-path"]),
    (["--concurrent-batches", "0"], {}, ["--concurrent-batches 0: must be at least 1"]),
    (["--bogus"], {}, ["--bogus"]),
    (["stray"], {}, ["unexpected argument stray"]),
]


@pytest.mark.parametrize(("flags", "env", "expected"), MISTAKES,
                         ids=[f"{i}-{' '.join([*r[0], *r[1]])[:40]}" for i, r in enumerate(MISTAKES)])
def test_daemon_usage_mistake_is_one_line_and_exit_2(workdir: Path, flags: list[str],  # noqa: F811
                                                      env: dict[str, str], expected: list[str]) -> None:
    proc = run_command(twistd("-d", "m", "-g", "seldon", "--watch-dir", "w", "--dashboard", "none", *flags),
                       workdir, {"SELDON_BATCH_HOST": NOWHERE, **env})
    assert_one_line_usage_error(proc, PROG, *expected)
    assert proc.stdout == ""  # not twistd's usage text
    assert not (workdir / "w").exists()  # nothing was started


def test_one_file_mode_mistakes(workdir: Path) -> None:  # noqa: F811
    proc = run_command(twistd("-d", "m", "-i", "in.txt", "--sidecar-allow", "host", "--dashboard", "none"), workdir)
    assert_one_line_usage_error(proc, PROG, "--sidecar-allow host: needs --watch-dir")
    proc = run_command(twistd("-d", "m", "-i", "missing.txt"), workdir)
    assert_one_line_usage_error(proc, PROG, "--input-data-path missing.txt: the input file does not exist")


def test_one_file_mode_sends_the_token_from_a_file(workdir: Path,  # noqa: F811
                                                   recording_server: RecordingServer) -> None:  # noqa: F811
    proc = run_command(twistd("-d", "m", "-g", "seldon", "-h", recording_server.host, "-i", "in.txt",
                              "--dashboard", "none", "--call-credentials-token-file", "good.tok", "-l", "debug"),
                       workdir, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    assert [seen["x-auth-token"] for seen in recording_server.headers] == [[SECRET], [SECRET]]
    assert SECRET not in proc.stdout + proc.stderr + (workdir / "in.out.txt").read_text()


def test_one_file_mode_refusals_are_exit_2(workdir: Path,  # noqa: F811
                                           recording_server: RecordingServer) -> None:  # noqa: F811
    """An output that cannot be resumed, or that another run holds, ends the daemon with status 2."""
    output = workdir / "in.out.txt"
    output.write_text("not an output of ours\n")
    command = twistd("-d", "m", "-g", "seldon", "-h", recording_server.host, "-i", "in.txt", "--dashboard", "none",
                     "--resume")
    proc = run_command(command, workdir, timeout=90)
    assert proc.returncode == 2, proc.stdout[-2000:]
    assert "cannot resume" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr
    assert output.read_text() == "not an output of ours\n"
    output.write_text("")
    with open(output, "ab") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = run_command(command, workdir, timeout=90)
    assert proc.returncode == 2, proc.stdout[-2000:]
    assert "locked by" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr
    assert recording_server.headers == []


def test_dashboard_token_file_guards_the_dashboard(workdir: Path) -> None:  # noqa: F811
    """A non-loopback dashboard with --dashboard-token-file: the token from the file, and only it, opens it."""
    port = free_port()
    process = subprocess.Popen(
        twistd("-d", "m", "-h", NOWHERE, "--watch-dir", "w", "--dashboard", f"tcp:{port}:interface=0.0.0.0",
               "--poll-interval", "0.2"),
        cwd=workdir, env={**loopback_env(), "SELDON_BATCH_DASHBOARD_TOKEN_FILE": str(workdir / "good.tok")},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://{LOOPBACK}:{port}"

    def status(path: str, token: str | None = None) -> int:
        request = urllib.request.Request(base + path)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return 0

    try:
        wait_until(lambda: status("/health") == 200, 30, "the daemon's dashboard", alive=lambda: process.poll() is None)
        assert status("/api/batches") == 401
        assert status("/api/batches", "wrong") == 401
        assert status("/api/batches", SECRET) == 200
    finally:
        stop_group(process, signal.SIGTERM, timeout=15)
    assert process.stdout is not None
    log = process.stdout.read().decode("utf-8", "replace")
    assert SECRET not in log and "Traceback" not in log


def test_sidecar_allow_reaches_the_watch_directory(tmp_path: Path) -> None:
    """--sidecar-allow is checked and normalised by the daemon's rule, then handed to WatchDirService."""
    options = Options(environ={})
    options.parseOptions(["-d", "m", "--watch-dir", str(tmp_path), "--dashboard", "none",
                          "--sidecar-allow", " host , Header,call_credentials_token,"])
    top = makeService(options)
    services = [s for s in top if isinstance(s, WatchDirService)]
    assert len(services) == 1
    assert services[0]._sidecar_allow == frozenset({"host", "header", "call-credentials-token"})
    options = Options(environ={"SELDON_BATCH_SIDECAR_ALLOW": "transport"})
    options.parseOptions(["-d", "m", "--watch-dir", str(tmp_path), "--dashboard", "none"])
    assert options["sidecar-allow"] == frozenset({"transport"})
    options = Options(environ={})
    options.parseOptions(["-d", "m", "--watch-dir", str(tmp_path), "--dashboard", "none"])
    assert options["sidecar-allow"] == frozenset()


def test_help_still_works(workdir: Path) -> None:  # noqa: F811
    proc = run_command([TWISTD, "seldon-batch", "--help"], workdir)
    assert proc.returncode == 0
    for option in ("--call-credentials-token-file", "--dashboard-token-file", "--sidecar-allow"):
        assert option in proc.stdout


@pytest_twisted.ensureDeferred
async def test_command_and_daemon_build_the_same_tree(workdir: Path) -> None:  # noqa: F811
    """One runner: the command's tree is the daemon's one-file tree plus the stderr progress bar."""
    args = ["-d", "m", "-i", str(workdir / "in.txt"), "--dashboard", f"tcp:0:interface={LOOPBACK}"]
    options = Options(environ={})
    options.parseOptions(args)
    daemon = [type(s) for s in makeService(options)]
    command_options = ProcessorOptions(environ={})
    command_options.parseOptions(args)
    top, work = cli._tree(reactor, command_options.config())
    try:
        assert [type(s) for s in top] == [DashboardService, ProgressReporter, OneBatchService]
        assert work in top and daemon == [DashboardService, OneBatchService]
    finally:
        await top.stopService()  # the dashboard bound its port in privilegedStartService
