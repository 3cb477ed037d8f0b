"""`seldon-batch-processor` as a real process: every usage mistake is ONE line and exit 2.

Each class of mistake (a flag, an environment variable, a secret file, an output held by another
run) is run through the installed command; the test asserts status 2, exactly one stderr line
that names the option, no traceback, nothing on stdout, no output file, and that a secret value
never appears. Secrets read from files are checked end to end against a loopback HTTP server
that records the headers it receives.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from seldon_batch_tx.exits import EXIT_UNREACHABLE
from tests.loopback import LOOPBACK, loopback_env

BIN = Path(sys.executable).parent
PROCESSOR = str(BIN / "seldon-batch-processor")
SECRET = "S3cretT0ken-d41d8cd9"
#: Where nothing listens: a run that got past the checks would fail its lines, not hang.
NOWHERE = f"{LOOPBACK}:9"


def run_command(command: list[str], cwd: Path, env: dict[str, str] | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = loopback_env()
    full_env.update(env or {})
    return subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def assert_refused(proc: subprocess.CompletedProcess[str], prog: str, *expected: str) -> str:
    """Status 2 and one ``PROG: error: ...`` line holding ``expected`` (the run's log lines may surround it)."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"{prog}: error: ")]
    assert len(errors) == 1, proc.stderr[-2000:]
    for text in expected:
        assert text in errors[0], (text, errors[0])
    assert "Traceback" not in proc.stderr + proc.stdout
    return errors[0]


def assert_one_line_usage_error(proc: subprocess.CompletedProcess[str], prog: str, *expected: str) -> str:
    """Status 2, one stderr line ``PROG: error: ...`` holding ``expected``, no traceback, no secret."""
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert "Traceback" not in proc.stderr + proc.stdout
    assert SECRET not in proc.stderr + proc.stdout
    return lines[0]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "in.txt").write_text("[[1, 2]]\n[[3, 4]]\n")
    (tmp_path / "empty.tok").write_text("")
    (tmp_path / "two-lines.tok").write_text(f"{SECRET}\nX-Injected: 1\n")
    (tmp_path / "spaced.tok").write_text(f"{SECRET} more\n")
    (tmp_path / "good.tok").write_text(f"{SECRET}\n")
    os.mkfifo(tmp_path / "fifo.tok")
    return tmp_path


#: Settings the cases below may replace (given as variables, so that a case's variable is not overridden).
BASE_ENV = {"SELDON_BATCH_HOST": NOWHERE, "SELDON_BATCH_TIMEOUT": "2"}
#: (flags, environment, text the one line must hold): one row per class of mistake.
MISTAKES: list[tuple[list[str], dict[str, str], list[str]]] = [
    # environment variables, checked like flags
    ([], {"SELDON_BATCH_WORKERS": "0"}, ["--workers 0 (from $SELDON_BATCH_WORKERS): must be at least 1"]),
    ([], {"SELDON_BATCH_WORKERS": "many"}, ["--workers many (from $SELDON_BATCH_WORKERS): not a whole number"]),
    ([], {"SELDON_BATCH_HOST": "x:abc"}, ["--host x:abc (from $SELDON_BATCH_HOST): port abc is not a number"]),
    ([], {"JOB_COMPLETION_INDEX": "abc"}, ["--shard-index abc (from $JOB_COMPLETION_INDEX)"]),
    ([], {"SELDON_BATCH_USE_SSL": "maybe"}, ["--use-ssl maybe (from $SELDON_BATCH_USE_SSL): not a boolean"]),
    ([], {"SELDON_BATCH_TIMEOUT": "nan"}, ["--timeout nan (from $SELDON_BATCH_TIMEOUT): must be a finite number"]),
    ([], {"SELDON_BATCH_HEADER": "X-A: 1\rInjected: 2"},
     ["--header (value not shown) (from $SELDON_BATCH_HEADER): the value of header X-A must be printable ASCII"]),
    ([], {"SELDON_BATCH_CALL_CREDENTIALS_TOKEN": f"{SECRET}\r\nX-Injected: 1"},
     ["--call-credentials-token (value not shown) (from $SELDON_BATCH_CALL_CREDENTIALS_TOKEN)"]),
    ([], {"SELDON_BATCH_CALL_CREDENTIALS_TOKEN_FILE": "missing.tok"},
     ["--call-credentials-token-file missing.tok (from $SELDON_BATCH_CALL_CREDENTIALS_TOKEN_FILE): cannot be read"]),
    (["--dashboard", "tcp:0:interface=127.0.0.1"], {"SELDON_BATCH_DASHBOARD_TOKEN": f"{SECRET}\nX: 1"},
     ["$SELDON_BATCH_DASHBOARD_TOKEN (value not shown): must be printable ASCII"]),
    # flags
    (["-h", "x:abc"], {}, ["--host x:abc: port abc is not a number"]),
    (["-h", "x:70000"], {}, ["--host x:70000: port 70000 is not in 1-65535"]),
    (["-h", "::1"], {}, ["--host ::1: an IPv6 address must be in brackets"]),
    (["-h", "evil.example/path:80"], {}, ["--host", "is not a host name"]),
    (["--header", "X-A: 1\r\nX-Injected: 2"], {}, ["--header (value not shown): ", "X-A", "printable ASCII"]),
    (["--header", "X-A: 1\x1b[2J"], {}, ["--header (value not shown): the value of header X-A"]),
    (["--header", "Bad Name: 1"], {}, ["--header (value not shown): a header name may only hold"]),
    (["--header", "Content-Length: 0"], {}, ["set by the HTTP client itself"]),
    (["--call-credentials-token", f"{SECRET}\r\nX-Injected: 1"], {}, ["--call-credentials-token (value not shown)"]),
    (["--call-credentials-token", f"{SECRET} x"], {}, ["--call-credentials-token (value not shown)"]),
    (["-w", "0"], {}, ["--workers 0: must be at least 1"]),
    (["-w", "9" * 30], {}, ["--workers", "too large"]),
    (["--timeout", "inf"], {}, ["--timeout inf: must be a finite number"]),
    (["--max-response-bytes", "0"], {}, ["--max-response-bytes 0: must be at least 1"]),
    (["-d", "../../other"], {}, ["--deployment-name ../../other: must not contain /"]),
    (["-t", "pigeon"], {}, ["--transport pigeon: not one of rest, grpc"]),
    (["--use-ssl=maybe"], {}, ["--use-ssl maybe: not a boolean"]),
    (["stray"], {}, ["unexpected argument stray"]),
    (["--bogus"], {}, ["--bogus"]),
    (["--timeout"], {}, ["--timeout"]),
    # secrets from files
    (["--call-credentials-token-file", "missing.tok"], {}, ["--call-credentials-token-file missing.tok: cannot"]),
    (["--call-credentials-token-file", "empty.tok"], {}, ["--call-credentials-token-file empty.tok: is empty"]),
    (["--call-credentials-token-file", "two-lines.tok"], {}, ["--call-credentials-token-file two-lines.tok: must"]),
    (["--call-credentials-token-file", "spaced.tok"], {}, ["--call-credentials-token-file spaced.tok: must hold"]),
    (["--call-credentials-token-file", "fifo.tok"], {}, ["fifo.tok: is not a regular file"]),
    (["--call-credentials-token-file", "."], {}, ["--call-credentials-token-file .: is not a regular file"]),
    (["--call-credentials-token-file", "good.tok", "--call-credentials-token", SECRET], {},
     ["--call-credentials-token-file good.tok: cannot be used with --call-credentials-token"]),
]


@pytest.mark.parametrize(("flags", "env", "expected"), MISTAKES,
                         ids=[f"{i}-{' '.join([*r[0], *r[1]])[:40]}" for i, r in enumerate(MISTAKES)])
def test_usage_mistake_is_one_line_and_exit_2(workdir: Path, flags: list[str], env: dict[str, str],
                                               expected: list[str]) -> None:
    base = ["-d", "m", "-g", "seldon", "-i", "in.txt", "-r", "0"]
    proc = run_command([PROCESSOR, *base, *flags], workdir, {**BASE_ENV, **env})
    assert_one_line_usage_error(proc, "seldon-batch-processor", *expected)
    assert proc.stdout == ""
    assert not (workdir / "in.out.txt").exists()  # refused before anything was opened or sent


def test_flag_replaces_a_bad_environment_variable(workdir: Path) -> None:
    """A value given on the command line wins; the bad variable it replaces is not an error."""
    proc = run_command([PROCESSOR, "-d", "m", "-g", "seldon", "-h", NOWHERE, "-i", "in.txt", "-r", "0",
                        "--timeout", "2", "-w", "2"], workdir, {"SELDON_BATCH_WORKERS": "0"})
    # it ran: the model is not reachable there (issue 19: exit 4, nothing written), no usage error
    assert proc.returncode == EXIT_UNREACHABLE, proc.stderr[-2000:]
    assert "the model is not reachable" in proc.stderr and not (workdir / "in.out.txt").exists()


# -- secrets from files reach the server, and nowhere else ------------------------------------------------


class RecordingServer:
    """A loopback HTTP server answering Seldon predictions with the request's data; keeps the headers."""

    def __init__(self) -> None:
        self.headers: list[dict[str, list[str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                seen: dict[str, list[str]] = {}
                for name, value in self.headers.items():
                    seen.setdefault(name.lower(), []).append(value)
                outer.headers.append(seen)
                answer = json.dumps({"data": body.get("data"), "meta": body.get("meta", {})}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.host = f"{LOOPBACK}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> RecordingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def recording_server() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


def test_token_file_is_sent_and_never_printed(workdir: Path, recording_server: RecordingServer) -> None:
    """The token read from a file goes in X-Auth-Token, with headers from flags and $SELDON_BATCH_HEADER."""
    proc = run_command([PROCESSOR, "-d", "m", "-g", "seldon", "-h", recording_server.host, "-i", "in.txt",
                        "--call-credentials-token-file", "good.tok", "--header", "X-From-Flag: f", "-b",
                        "-l", "debug"], workdir, {"SELDON_BATCH_HEADER": "X-One: 1\nX-Two: 2\n"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(recording_server.headers) == 2
    for seen in recording_server.headers:
        assert seen["x-auth-token"] == [SECRET]
        assert (seen["x-one"], seen["x-two"], seen["x-from-flag"]) == (["1"], ["2"], ["f"])
    assert SECRET not in proc.stdout + proc.stderr
    assert SECRET not in (workdir / "in.out.txt").read_text()


def test_token_file_from_the_environment(workdir: Path, recording_server: RecordingServer) -> None:
    proc = run_command([PROCESSOR, "-d", "m", "-g", "seldon", "-h", recording_server.host, "-i", "in.txt"],
                       workdir, {"SELDON_BATCH_CALL_CREDENTIALS_TOKEN_FILE": str(workdir / "good.tok")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [seen["x-auth-token"] for seen in recording_server.headers] == [[SECRET], [SECRET]]


# -- outputs another run holds --------------------------------------------------------------------------


def test_output_held_by_another_run_is_exit_2(workdir: Path, recording_server: RecordingServer) -> None:
    """While another process holds the output's lock the command refuses in one line and sends nothing."""
    output = workdir / "in.out.txt"
    output.write_text("kept\n")
    with open(output, "ab") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = run_command([PROCESSOR, "-d", "m", "-g", "seldon", "-h", recording_server.host, "-i", "in.txt",
                            "--resume"], workdir)
    line = assert_refused(proc, "seldon-batch-processor", "locked by")
    assert str(os.getpid()) in line  # names the process that holds it
    assert output.read_text() == "kept\n" and recording_server.headers == []


def test_resume_of_a_foreign_file_is_exit_2(workdir: Path, recording_server: RecordingServer) -> None:
    output = workdir / "in.out.txt"
    output.write_text("not an output of ours\n")
    proc = run_command([PROCESSOR, "-d", "m", "-g", "seldon", "-h", recording_server.host, "-i", "in.txt",
                        "--resume"], workdir)
    assert_refused(proc, "seldon-batch-processor", "cannot resume")
    assert output.read_text() == "not an output of ours\n" and recording_server.headers == []


# -- the dashboard's port ---------------------------------------------------------------------------------


def test_dashboard_port_taken_is_exit_2(workdir: Path) -> None:
    """A --dashboard port another process holds is one line and status 2 (strports' bind error), before any
    output is opened or a line sent."""
    with socket.socket() as held:
        held.bind((LOOPBACK, 0))
        held.listen()
        port = held.getsockname()[1]
        proc = run_command([PROCESSOR, "-d", "m", "-g", "seldon", "-h", NOWHERE, "-i", "in.txt",
                            "--dashboard", f"tcp:{port}:interface={LOOPBACK}"], workdir)
    assert_one_line_usage_error(proc, "seldon-batch-processor", f"--dashboard tcp:{port}:interface={LOOPBACK}: ",
                                "listen")
    assert proc.stdout == "" and not (workdir / "in.out.txt").exists()


@pytest.mark.parametrize(("args", "env", "expected"), [
    (["--header", f"Authorization=Bearer_{SECRET}"], {}, "--header (value not shown): is not a header NAME:VALUE"),
    (["--header", f"Authorization: Bearer {SECRET}\r\nX-Evil: 1"], {}, "the value of header Authorization"),
    ([], {"SELDON_BATCH_HEADER": f"Authorization Bearer {SECRET}"}, "(from $SELDON_BATCH_HEADER)"),
    (["-h", f"user:{SECRET}@127.0.0.1:19000"], {}, "-h/--host ***@127.0.0.1:19000: holds a user part"),
    (["-h", f"user:{SECRET}@127.0.0.1"], {}, "-h/--host ***@127.0.0.1: holds a user part"),
    (["-h", f"user:pa/{SECRET}@127.0.0.1:1"], {}, "-h/--host ***@127.0.0.1:1"),
    (["-h", f"x\nuser:{SECRET}@127.0.0.1:1"], {}, "***@127.0.0.1:1"),
    ([], {"SELDON_BATCH_HOST": f"u:{SECRET}@127.0.0.1"}, "***@127.0.0.1 (from $SELDON_BATCH_HOST)"),
    (["--header", f"X-Api-Key={SECRET}:1"], {}, "a header name may only hold"),
    (["-h", f"http://user:{SECRET}@127.0.0.1:x"], {}, "http://***@127.0.0.1:x"),
])
def test_refused_header_or_host_never_shows_its_credential(tmp_path: Path, args: list[str], env: dict[str, str],
                                                           expected: str) -> None:
    """A header value may be a credential, a host's user part holds a password: the error shows neither."""
    proc = run_command([PROCESSOR, "-d", "m", "-i", "in.txt", "-o", "out.txt", *args], tmp_path, env)
    line = assert_refused(proc, "seldon-batch-processor", expected)
    assert SECRET not in proc.stderr + proc.stdout, line
