"""--dashboard-linger: the command's dashboard stays up after the batch, with the exit status the batch's.

The real command against the real Seldon model microservice: the URL is printed with the port
really bound (``tcp:0``), the page still answers after the summary was printed, a number of seconds
ends the linger by itself, ``forever`` waits for Ctrl-C (SIGINT), and the exit status is the batch's.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.loopback import LOOPBACK, loopback_env
from tests.processes import read_stderr_until, stop_group, wait_until
from tests.servers import SeldonServer

PROCESSOR = str(Path(sys.executable).parent / "seldon-batch-processor")
LINGERING = re.compile(r"the dashboard stays on (http://\S+) ")


@pytest.fixture(scope="module")
def server() -> Iterator[SeldonServer]:
    with SeldonServer() as running:
        yield running


def start(server: SeldonServer, workdir: Path, linger: str) -> subprocess.Popen[str]:
    (workdir / "in.txt").write_text("[[1]]\n[[2]]\nnot json\n")  # one error line: exit status 1
    return subprocess.Popen([PROCESSOR, "-d", "m", "-g", "seldon", "-h", server.rest_host, "-i", "in.txt", "-r", "0",
                             "--dashboard", f"tcp:0:interface={LOOPBACK}", "--dashboard-linger", linger],
                            cwd=workdir, env=loopback_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def lingering_url(process: subprocess.Popen[str], timeout: float = 60) -> tuple[str, list[str]]:
    """Read stderr until the linger line; the lines read so far."""
    found, read = read_stderr_until(process, LINGERING, timeout)
    return found.group(1), read


def page(url: str) -> str:
    with urllib.request.urlopen(url + "api/batches", timeout=5) as response:
        return response.read().decode()


def test_linger_seconds_then_exit_with_the_batch_status(server: SeldonServer, tmp_path: Path) -> None:
    began = time.monotonic()
    process = start(server, tmp_path, "3")
    try:
        url, before = lingering_url(process)
        assert any(f"dashboard on {url}" in line for line in before)  # printed when it started
        assert ":0/" not in url
        assert '"state": "done"' in page(url).replace('":"', '": "')  # the finished batch, still shown
        assert process.wait(30) == 1
    finally:
        stop_group(process, signal.SIGKILL)
    assert time.monotonic() - began >= 3
    assert process.stdout is not None and "3 lines: 2 succeeded, 1 failed" in process.stdout.read()


def test_linger_forever_until_ctrl_c(server: SeldonServer, tmp_path: Path) -> None:
    process = start(server, tmp_path, "forever")
    try:
        url, _ = lingering_url(process)
        time.sleep(1.5)
        assert process.poll() is None and page(url)  # still up
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 1  # the batch's status, not the signal's
        wait_until(lambda: not _answers(url), 10, "the dashboard closed")
    finally:
        stop_group(process, signal.SIGKILL)


def _answers(url: str) -> bool:
    try:
        page(url)
    except OSError:
        return False
    return True
