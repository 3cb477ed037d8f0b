"""One redaction rule, through the real command (issue 25, high 1 and high 5).

* A presigned input URL (moto S3, its ``AWSAccessKeyId``/``Signature``/``Expires`` query) with
  ``--dashboard``: no page, API answer, metric label, download name or log line shows the query;
  the batch is named ``in.txt``.
* A server quoting the run's credentials (``--call-credentials-token``, a secret ``--header``, a
  secret ``--storage-options`` value) in a 503 body and in 200 answers: every output line and the
  debug log show ``[redacted]`` instead; a credential quoted where ``[redacted]`` cannot stand (a
  bare number) makes that line's error, never a leak; the same through ``twistd seldon-batch``.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hostile_server import HostileServer
from tests.loopback import loopback_env
from tests.s3_server import S3Server
from tests.servers import REPO_ROOT
from tests.test_daemon_real import Daemon

CLI = str(REPO_ROOT / ".venv" / "bin" / "seldon-batch-processor")
LINES = 4
TOKEN = "call-T0KEN-quoted-back"
HEADER_SECRET = "hdr-s3cret-value"
STORAGE_SECRET = "st0rage-s3cret"
NUMERIC_SECRET = "98765432"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileServer]:
    with HostileServer(tmp_path_factory.mktemp("hostile") / "requests.jsonl") as server:
        yield server


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server(tmp_path_factory.mktemp("moto") / "moto.log", auth=False) as server:
        yield server


def fetch(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def wait_for(check: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def test_presigned_input_url_query_is_never_shown(tmp_path: Path, s3: S3Server, hostile: HostileServer) -> None:
    s3.make_bucket("signed-input")
    client = s3.client()
    client.put_object(Bucket="signed-input", Key="in.txt",
                      Body="".join(f"[[{i}.5, 2.0]]\n" for i in range(LINES)).encode())
    url = client.generate_presigned_url("get_object", Params={"Bucket": "signed-input", "Key": "in.txt"},
                                        ExpiresIn=3600)
    query = url.split("?", 1)[1]
    signature = re.search(r"Signature=([^&]+)", query).group(1)  # type: ignore[union-attr]
    secrets = [query, signature, "AWSAccessKeyId", "Expires="]
    err = tmp_path / "stderr.txt"
    with open(err, "wb") as stderr:
        process = subprocess.Popen(
            [CLI, "-d", "echo", "-g", "istio", "-n", "ns", "-h", hostile.rest_host, "-i", url,
             "-o", str(tmp_path / "out.txt"), "-l", "debug", "--dashboard", "tcp:0:interface=127.0.0.1",
             "--dashboard-linger", "60"], stdout=subprocess.DEVNULL, stderr=stderr, stdin=subprocess.DEVNULL,
            env=s3.env(), start_new_session=True)
    try:
        where = wait_for(lambda: re.search(r"dashboard on http://127\.0\.0\.1:(\d+)/", err.read_text()), 30,
                         "the dashboard address")
        port = int(where.group(1))
        batches = wait_for(lambda: (b := json.loads(fetch(port, "/api/batches")[2])["batches"])
                           and b[0]["state"] == "done" and b, 30, "the batch to finish")
        assert batches[0]["name"] == "in.txt"
        batch_id = batches[0]["id"]
        detail = json.loads(fetch(port, f"/api/batches/{batch_id}")[2])
        assert detail["source"].endswith("/signed-input/in.txt?***"), detail["source"]
        shown = [fetch(port, path) for path in ("/", "/api/batches", f"/api/batches/{batch_id}",
                                                f"/batches/{batch_id}", "/metrics", f"/download/summary/{batch_id}")]
        assert all(code == 200 for code, _, _ in shown), [code for code, _, _ in shown]
        assert 'name="in.txt"' in shown[4][2].decode()
        assert "in.txt.summary.json" in shown[5][1]["content-disposition"]
        for _code, headers, body in shown:
            text = body.decode() + json.dumps(headers)
            for secret in secrets:
                assert secret not in text, (secret, text[:500])
    finally:
        stop(process)
    log = err.read_text()
    assert "in.txt?***" in log
    for secret in secrets:
        assert secret not in log


def run_quoting(tmp_path: Path, hostile: HostileServer, batch_id: str, *, default: Any,
                answers: dict[int, Any]) -> tuple[int, list[str], str]:
    hostile.script(batch_id, default=default, answers=answers)
    source, out = tmp_path / "in.txt", tmp_path / "out.txt"
    source.write_text("".join(f"[[{i}.5, 2.0]]\n" for i in range(LINES)))
    result = subprocess.run(
        [CLI, "-d", "script", "-g", "istio", "-n", "ns", "-h", hostile.rest_host, "-i", str(source), "-o", str(out),
         "-u", batch_id, "-s", "1", "-w", "1", "-r", "1", "--timeout", "5", "-l", "debug",
         "--call-credentials-token", TOKEN, "--header", f"X-Api-Key: {HEADER_SECRET}",
         "--header", f"X-Numeric-Key: {NUMERIC_SECRET}",
         "--storage-options", json.dumps({"secret": STORAGE_SECRET})],
        capture_output=True, text=True, timeout=60, env=loopback_env(), stdin=subprocess.DEVNULL)
    lines = out.read_text().splitlines()
    assert len(lines) == LINES, result.stderr[-2000:]
    return result.returncode, lines, result.stderr


QUOTED = f"headers were Authorization: Bearer {TOKEN}; X-Api-Key: {HEADER_SECRET}; secret={STORAGE_SECRET}"


def test_error_and_result_lines_quoting_credentials_are_redacted(tmp_path: Path, hostile: HostileServer) -> None:
    code, lines, log = run_quoting(
        tmp_path, hostile, f"quote-{time.monotonic_ns()}",
        default={"mode": "raw", "status": 503, "body": QUOTED},
        answers={1: {"mode": "json", "value": {"data": {"ndarray": [[QUOTED]]}}},
                 2: {"mode": "json", "value": {"data": {"ndarray": [[f'"{TOKEN}\\{HEADER_SECRET}"']]}}}})
    assert code == 1
    records = [json.loads(line) for line in lines]
    assert [r["status"]["info"] if "status" in r else "ok" for r in records] == ["http_503", "ok", "ok", "http_503"]
    assert "[redacted]" in lines[0] and "[redacted]" in lines[1] and "[redacted]" in lines[2]
    assert records[1]["data"]["ndarray"] == [[QUOTED.replace(TOKEN, "[redacted]").replace(
        HEADER_SECRET, "[redacted]").replace(STORAGE_SECRET, "[redacted]")]]
    assert "attempt 1 for line 0 failed" in log  # the debug lines are there, redacted
    for secret in (TOKEN, HEADER_SECRET, STORAGE_SECRET):
        assert all(secret not in line for line in lines), secret
        assert secret not in log, secret


def test_credential_quoted_outside_a_string_makes_that_line_an_error(tmp_path: Path,
                                                                     hostile: HostileServer) -> None:
    code, lines, log = run_quoting(
        tmp_path, hostile, f"numeric-{time.monotonic_ns()}", default="echo",
        answers={2: {"mode": "json", "value": {"data": {"ndarray": [[int(NUMERIC_SECRET)]]}}}})
    records = [json.loads(line) for line in lines]
    assert code == 1
    assert [r["status"]["info"] if "status" in r else "ok" for r in records] == ["ok", "ok", "bad_response", "ok"]
    assert "credential" in records[2]["status"]["reason"]
    assert all(NUMERIC_SECRET not in line for line in lines)
    assert NUMERIC_SECRET not in log


def test_daemon_outputs_and_debug_log_redact_a_quoted_token(tmp_path: Path, daemons: list[Daemon]) -> None:
    """``twistd seldon-batch`` at debug level: a 503 quoting the token, retried once, then an error line."""
    batch_id = f"daemon-quote-{time.monotonic_ns()}"
    with HostileServer(tmp_path / "requests.jsonl", mode="script") as server:
        # A JSON body: the model's own 503 (a plain-text 503 is a gateway's outage, which the daemon waits out).
        server.script(batch_id, default={"mode": "raw", "status": 503, "body": json.dumps({"error": QUOTED})})
        watch = tmp_path / "watch"
        daemon = Daemon(tmp_path, server, ["--watch-dir", str(watch), "--poll-interval", "0.2", "-l", "debug",
                                           "-r", "1", "--call-credentials-token", TOKEN,
                                           "--header", f"X-Api-Key: {HEADER_SECRET}"])
        daemons.append(daemon)
        daemon.wait_ready()
        incoming = watch / "incoming"
        (incoming / "quoted.txt.json").write_text(json.dumps({"batch-id": batch_id}))
        (incoming / ".quoted.txt.part").write_text("".join(f"[[{i}.5]]\n" for i in range(LINES)))
        os.rename(incoming / ".quoted.txt.part", incoming / "quoted.txt")
        out = watch / "done" / "quoted.out.txt"
        wait_for(lambda: (watch / "done" / "quoted.txt.summary.json").exists(), 60, "quoted.txt filed")
        lines = out.read_text().splitlines()
        daemon.stop()
    assert len(lines) == LINES and all("[redacted]" in line for line in lines)
    log = daemon.log()
    assert "attempt 1 for line" in log and "[redacted]" in log
    for secret in (TOKEN, HEADER_SECRET):
        assert all(secret not in line for line in lines)
        assert secret not in log
