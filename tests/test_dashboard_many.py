"""The dashboard with many batches, colliding batch ids and ``-o -`` (issue 25, medium 12 and lows).

Through the real ``twistd seldon-batch`` daemon (and the real command for ``-o -``) against the
hostile server's echo model: 5,000 files at once leave ``/``, ``/api/batches`` and ``/metrics`` small
(the list is bounded and pages; counts and totals still cover every batch); once the files are done
at most ``keep`` (200) finished batches stay listed; two files whose sidecars give the same
``batch-id`` are both listed and the line counters never go down; ``-o -`` offers no download (never
a file named ``-`` in the working directory).
"""

from __future__ import annotations

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
from prometheus_client.parser import text_string_to_metric_families

from seldon_batch_tx.dashboard.registry import DEFAULT_LIMIT
from tests.hostile_server import HostileServer
from tests.loopback import http_request, loopback_env
from tests.servers import REPO_ROOT
from tests.test_daemon_real import Daemon, wait_for, write_lines

CLI = str(REPO_ROOT / ".venv" / "bin" / "seldon-batch-processor")
KEEP = 200
#: Largest answer allowed with thousands of batches (each was 3-4.5 MB before the bound).
MAX_BYTES = 400_000


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileServer]:
    with HostileServer(tmp_path_factory.mktemp("hostile") / "requests.jsonl") as server:
        yield server


def api(daemon: Daemon, path: str = "/api/batches") -> dict[str, Any]:
    code, body = daemon.get(path, timeout=10)
    assert code == 200, body[:300]
    return json.loads(body)  # type: ignore[no-any-return]


def lines_succeeded(daemon: Daemon) -> float:
    code, body = daemon.get("/metrics", timeout=10)
    assert code == 200
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "seldon_batch_lines_total" and sample.labels.get("result") == "succeeded":
                return float(sample.value)
    raise AssertionError("no seldon_batch_lines_total")


def drop(incoming: Path, name: str, lines: int, sidecar: dict[str, Any] | None = None) -> None:
    if sidecar is not None:
        (incoming / f"{name}.json").write_text(json.dumps(sidecar))
    write_lines(incoming / f".{name}.part", lines)
    os.rename(incoming / f".{name}.part", incoming / name)


def finished(counts: dict[str, int]) -> int:
    return counts["done"] + counts["failed"] + counts["stopped"]


def test_five_thousand_files_keep_every_answer_small(tmp_path: Path, hostile: HostileServer,
                                                     daemons: list[Daemon]) -> None:
    watch = tmp_path / "watch"
    daemon = Daemon(tmp_path, hostile, ["--watch-dir", str(watch), "--poll-interval", "0.2", "-w", "1",
                                        "--batch-interval", "0.5"])
    daemons.append(daemon)
    daemon.wait_ready()
    incoming = watch / "incoming"
    drop(incoming, "slow.txt", 20)  # runs while the rest queue up behind it
    for i in range(5000):
        drop(incoming, f"f{i:04}.txt", 1)
    wait_for(lambda: sum(api(daemon)["counts"].values()) >= 5000, 60, "5,000 batches known")
    for path in ("/api/batches", "/", "/metrics"):
        started = time.monotonic()
        code, body = daemon.get(path, timeout=10)
        assert code == 200 and len(body) < MAX_BYTES, (path, len(body), time.monotonic() - started)
    data = api(daemon)
    assert len(data["batches"]) <= DEFAULT_LIMIT
    assert sum(data["counts"].values()) == data["total"] >= 5000
    running = [b for b in data["batches"] if b["state"] == "running"]
    assert running, "the running batch is listed, however many queue behind it"
    second = api(daemon, "/api/batches?limit=50&offset=50")
    assert len(second["batches"]) == 50 and second["offset"] == 50
    assert daemon.get("/api/batches?limit=0")[0] == 400
    assert daemon.get("/api/batches?limit=abc")[0] == 400
    daemon.stop()


def test_finished_batches_stay_bounded_once_they_finish(tmp_path: Path, hostile: HostileServer,
                                                        daemons: list[Daemon]) -> None:
    """Files queued together and finished later: at most ``keep`` finished batches stay listed
    (the bound used to apply only when a batch was added), and the totals still count them all."""
    watch = tmp_path / "watch"
    daemon = Daemon(tmp_path, hostile, ["--watch-dir", str(watch), "--poll-interval", "0.2", "-w", "4",
                                        "--concurrent-batches", "8"])
    daemons.append(daemon)
    daemon.wait_ready()
    incoming = watch / "incoming"
    files = KEEP + 60
    for i in range(files):
        drop(incoming, f"g{i:04}.txt", 1)
    wait_for(lambda: lines_succeeded(daemon) >= files, 240, f"{files} files done", step=0.5)
    data = api(daemon)
    assert finished(data["counts"]) <= KEEP, data["counts"]
    assert data["total"] <= KEEP
    assert lines_succeeded(daemon) == files


def test_same_sidecar_batch_id_twice_lists_both_and_counts_never_go_down(
        tmp_path: Path, hostile: HostileServer, daemons: list[Daemon]) -> None:
    watch = tmp_path / "watch"
    daemon = Daemon(tmp_path, hostile, ["--watch-dir", str(watch), "--poll-interval", "0.2", "-w", "2"])
    daemons.append(daemon)
    daemon.wait_ready()
    incoming = watch / "incoming"
    drop(incoming, "a.txt", 3, {"batch-id": "same-id"})
    wait_for(lambda: lines_succeeded(daemon) >= 3, 60, "a.txt done")
    before = lines_succeeded(daemon)
    drop(incoming, "b.txt", 2, {"batch-id": "same-id"})
    wait_for(lambda: lines_succeeded(daemon) >= before + 2, 60, "b.txt done")
    seen = [before]
    for _ in range(5):
        seen.append(lines_succeeded(daemon))
        time.sleep(0.1)
    assert seen == sorted(seen) and seen[-1] == 5, seen
    batches = {b["name"]: b for b in api(daemon)["batches"]}
    assert set(batches) >= {"a.txt", "b.txt"}
    assert batches["a.txt"]["id"] != batches["b.txt"]["id"]
    for name, lines in (("a.txt", 3), ("b.txt", 2)):
        detail = api(daemon, f"/api/batches/{batches[name]['id']}")
        assert detail["name"] == name and detail["succeeded"] == lines


def test_stdout_output_offers_no_download_of_a_file_named_dash(tmp_path: Path, hostile: HostileServer) -> None:
    (tmp_path / "-").write_text("not this run's output: a file that happens to be named -\n")
    source, err = tmp_path / "in.txt", tmp_path / "stderr.txt"
    source.write_text("[[1.0, 2.0]]\n")
    with open(err, "wb") as stderr:
        process = subprocess.Popen(
            [CLI, "-d", "echo", "-g", "seldon", "-h", hostile.rest_host, "-i", str(source), "-o", "-",
             "--dashboard", "tcp:0:interface=127.0.0.1", "--dashboard-linger", "60"], cwd=tmp_path,
            stdout=subprocess.DEVNULL, stderr=stderr, stdin=subprocess.DEVNULL, env=loopback_env(),
            start_new_session=True)
    try:
        port = int(wait_for(lambda: re.search(r"dashboard on http://127\.0\.0\.1:(\d+)/", err.read_text()), 30,
                            "the dashboard address").group(1))
        where = f"127.0.0.1:{port}"

        def done() -> Any:
            batches = json.loads(http_request("GET", where, "/api/batches")[1])["batches"]
            return batches and batches[0]["state"] == "done" and batches[0]

        batch = wait_for(done, 30, "the batch to finish")
        assert "output" not in batch["downloads"]
        code, body = http_request("GET", where, f"/download/output/{batch['id']}")
        assert code == 404 and b"happens to be named" not in body
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(20)
