"""Reading a V2 model's metadata never fails a run: a server without it keeps today's requests.

A small HTTP server on loopback answers the metadata GET badly (404, not JSON, not metadata,
too large, never) and echoes every inference request; the CLI must still send every line as
before (``input-0``, inferred datatype), log why there was no metadata, and not wait past
``--timeout`` for it.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from seldon_batch_tx.protocols.v2_metadata import MAX_METADATA_BYTES
from tests.loopback import LOOPBACK, loopback_env
from tests.v2_runs import PROCESSOR, run_v2

ANSWERS: dict[str, tuple[int, bytes] | None] = {
    "404": (404, b'{"error": "no such model"}'),
    "not-json": (200, b"<html>hello</html>"),
    "not-metadata": (200, b'{"name": 3}'),
    "too-large": (200, b'{"name": "m", "pad": "' + b"x" * MAX_METADATA_BYTES + b'"}'),
    "hangs": None,
}


class Handler(BaseHTTPRequestHandler):
    mode = "404"
    release = threading.Event()

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        answer = ANSWERS[self.mode]
        if answer is None:
            self.release.wait(30)
            return
        status, body = answer
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body = json.dumps({"model_name": "m", "outputs": request["inputs"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    Handler.release.set()
    httpd.shutdown()
    httpd.server_close()
    Handler.release.clear()


@pytest.mark.parametrize("mode", sorted(set(ANSWERS) - {"hangs"}))
def test_no_metadata_keeps_todays_requests(server: ThreadingHTTPServer, mode: str, tmp_path: Path) -> None:
    Handler.mode = mode
    host = f"{LOOPBACK}:{server.server_address[1]}"
    started = time.monotonic()
    proc, records = run_v2(host, "rest", "m", tmp_path, ["[1, 2]", "[0.5]"], "--timeout", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["outputs"] for r in records] == [
        [{"name": "input-0", "shape": [2], "datatype": "INT64", "data": [1, 2]}],
        [{"name": "input-0", "shape": [1], "datatype": "FP64", "data": [0.5]}]]
    assert "requests follow the options as given" in proc.stderr
    assert time.monotonic() - started < 60


def test_a_server_that_never_answers_a_get_is_not_ready(server: ThreadingHTTPServer, tmp_path: Path) -> None:
    """Its readiness route never answers either: one line and exit 4 before the first line (issue 19),
    within --timeout rather than a hang."""
    Handler.mode = "hangs"
    src, out = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text("[1, 2]\n")
    started = time.monotonic()
    proc = subprocess.run([PROCESSOR, "--protocol", "v2", "-d", "m", "-g", "seldon", "-h",
                           f"{LOOPBACK}:{server.server_address[1]}", "-i", str(src), "-o", str(out), "--timeout", "2"],
                          capture_output=True, text=True, timeout=60, env=loopback_env())
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert "no readiness answer" in proc.stderr and "no answer in time" in proc.stderr
    assert time.monotonic() - started < 20 and not out.exists()
