"""scripts/demo.sh for real: it sets up what it uses, prints the dashboard's URL on the --port asked for,
keeps the page up after the batch until Ctrl-C, and never reports an output an earlier run left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from typing import Any

from tests.loopback import LOOPBACK, free_port, loopback_env, tcp_accepts
from tests.processes import stop_group
from tests.servers import REPO_ROOT

DEMO = REPO_ROOT / "scripts" / "demo.sh"
OUTPUT = REPO_ROOT / "out" / "sample.out.txt"


def test_demo_keeps_the_dashboard_until_ctrl_c() -> None:
    port = free_port()
    process = subprocess.Popen(["bash", str(DEMO), "--port", str(port), "-w", "4"], cwd=REPO_ROOT,
                               env=loopback_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    assert process.stdout is not None
    read: list[str] = []
    seen: list[dict[str, Any]] = []  # what the dashboard showed while the batch ran
    done = threading.Event()
    watcher = threading.Thread(target=_watch, args=(f"http://127.0.0.1:{port}/api/batches", seen, done), daemon=True)
    watcher.start()
    try:
        deadline = time.monotonic() + 900  # a first run may install .venvs/seldon
        while time.monotonic() < deadline and not any("the dashboard stays on" in line for line in read):
            line = process.stdout.readline()
            if not line:
                break
            read.append(line)
        assert any(f"http://127.0.0.1:{port}/" in line for line in read), "".join(read)[-3000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
        rest, _ = process.communicate(timeout=60)
    finally:
        done.set()
        stop_group(process)  # SIGTERM first: demo.sh then stops its model server (a SIGKILL would leave it)
        model = re.search(r"model microservice on 127\.0\.0\.1:(\d+) \(REST\)", "".join(read))
        assert model is None or not tcp_accepts(LOOPBACK, int(model.group(1))), "the model server was left"
    assert process.returncode == 0, rest[-3000:]
    assert f"output: out/sample.out.txt ({len(OUTPUT.read_text().splitlines())} lines), exit status 0" in rest
    # paced to be watched: the page showed the batch moving, and it took 20 s or more (80 lines/s)
    assert any(b["state"] == "running" and 0 < b["done"] < b["total"] for b in seen), seen[-3:]
    elapsed = re.search(r"Benchmark: elapsed time ([\d.]+) s", "".join(read))
    assert elapsed is not None and float(elapsed.group(1)) >= 20, "".join(read)[-2000:]


def _watch(url: str, seen: list[dict[str, Any]], done: threading.Event) -> None:
    """Poll the demo's dashboard API every half second until `done`, recording each batch it shows."""
    while not done.wait(0.5):
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                seen.extend(json.loads(response.read())["batches"])
        except (OSError, ValueError, KeyError):
            continue


def test_demo_never_reports_a_stale_output() -> None:
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text("left by an earlier run\n")
    proc = subprocess.run(["bash", str(DEMO), "--port", str(free_port()), "-w", "0"], cwd=REPO_ROOT, env=loopback_env(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "no output was written, exit status 2" in proc.stdout and "output: out/" not in proc.stdout
    assert "-w/--workers 0: must be at least 1" in proc.stderr
    assert not OUTPUT.exists()
