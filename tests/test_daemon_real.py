"""`twistd -n seldon-batch` as a real process against the real Seldon microservice, on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from tests.loopback import free_port, http_request, loopback_env
from tests.servers import SeldonServer

TWISTD = str(Path(sys.executable).parent / "twistd")


def wait_for(condition: Callable[[], Any], timeout: float, what: str, step: float = 0.1,
             details: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}" + (f"\n{details()}" if details else ""))


class Model(Protocol):
    """A loopback model server (the real microservice, tests/hostile_server.py...)."""

    @property
    def rest_host(self) -> str: ...


class Daemon:
    """A `twistd -n seldon-batch` child process; stopped by its pid."""

    def __init__(self, tmp: Path, server: Model, args: list[str], name: str = "daemon") -> None:
        self.port = free_port()
        self.log_path = tmp / f"{name}.log"
        self.command = [TWISTD, "-n", "--pidfile=", "seldon-batch", "-d", "echo", "-g", "seldon",
                        "-h", server.rest_host, "--dashboard", f"tcp:{self.port}:interface=127.0.0.1", *args]
        env = loopback_env()
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        return http_request("GET", f"127.0.0.1:{self.port}", path, timeout=timeout)

    def wait_ready(self, timeout: float = 20.0) -> None:
        def healthy() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                return self.get("/health")[0] == 200
            except OSError:
                return False
        wait_for(healthy, timeout, "the daemon's /health")

    def stop(self, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
                raise AssertionError(f"daemon did not exit within {timeout} s of SIGTERM:\n{self.log()[-3000:]}") \
                    from None
        return self.process.returncode


def write_lines(path: Path, count: int, start: int = 0) -> None:
    with open(path, "a") as f:
        for i in range(start, start + count):
            f.write(json.dumps([[i, 0.5, -1]]) + "\n")


def read_output(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "the output ends in a torn line"
    return [json.loads(line) for line in text.splitlines()]


def test_plugin_is_listed_by_twistd() -> None:
    """`twistd --help` lists seldon-batch (the plugin is found from the installed package)."""
    result = subprocess.run([TWISTD, "--help"], capture_output=True, text=True, timeout=60, env=loopback_env())
    assert "seldon-batch" in result.stdout


def test_watch_dir_complete_half_written_and_malformed(tmp_path: Path, seldon_server: SeldonServer,
                                                       daemons: list[Daemon]) -> None:
    """A renamed-in file is processed, a file still being written waits until complete, a malformed
    one goes to failed/ with its reason; the dashboard's API lists all three."""
    watch = tmp_path / "watch"
    daemon = Daemon(tmp_path, seldon_server, ["--watch-dir", str(watch), "--poll-interval", "0.3", "-w", "4"])
    daemons.append(daemon)
    daemon.wait_ready()
    incoming = watch / "incoming"

    write_lines(incoming / ".complete.txt.part", 50)
    os.rename(incoming / ".complete.txt.part", incoming / "complete.txt")
    (incoming / "malformed.txt").write_text("this is not JSON\nneither is this\n")
    half = incoming / "half.txt"
    write_lines(half, 5)
    for i in range(15):  # keeps growing for 1.5 s, five poll intervals: it must not be taken
        time.sleep(0.1)
        with open(half, "r+") as f:  # r+ never re-creates it: FileNotFoundError if it was taken
            f.seek(0, os.SEEK_END)
            f.write(json.dumps([[5 + i, 0.5, -1]]) + "\n")
    wait_for(lambda: (watch / "done" / "half.txt.summary.json").exists(), 15, "half.txt in done/")
    wait_for(lambda: (watch / "done" / "complete.txt.summary.json").exists(), 15, "complete.txt in done/")
    wait_for(lambda: (watch / "failed" / "malformed.txt.reason.txt").exists(), 15, "malformed.txt in failed/")

    done = watch / "done"
    assert sorted(p.name for p in done.iterdir()) == [
        "complete.out.txt", "complete.txt", "complete.txt.summary.json",
        "half.out.txt", "half.txt", "half.txt.summary.json"]
    out = read_output(done / "half.out.txt")
    assert sorted(o["meta"]["tags"]["batch_index"] for o in out) == list(range(20))  # every line, none missed
    assert all(o["data"]["ndarray"] == [[o["meta"]["tags"]["batch_index"], 0.5, -1]] for o in out)
    complete = read_output(done / "complete.out.txt")
    summary = json.loads((done / "complete.txt.summary.json").read_text())
    assert len(complete) == 50 and summary["succeeded"] == 50 and summary["failed"] == 0
    assert {o["meta"]["tags"]["batch_id"] for o in complete} == {summary["batch_id"]}
    reason = (watch / "failed" / "malformed.txt.reason.txt").read_text()
    assert "JSON" in reason and (watch / "failed" / "malformed.txt").exists()
    assert sorted(os.listdir(incoming)) == [] and sorted(os.listdir(watch / "processing")) == []

    code, body = daemon.get("/api/batches")
    listed = {b["name"]: b for b in json.loads(body)["batches"]}
    assert code == 200 and listed["complete.txt"]["state"] == "done" and listed["malformed.txt"]["state"] == "failed"
    assert listed["complete.txt"]["benchmark"]["lines"] == 50
    code, metrics = daemon.get("/metrics")
    assert code == 200 and b'seldon_batch_lines_total{result="succeeded"} 70' in metrics
    assert daemon.stop() == -signal.SIGTERM


def test_sigterm_mid_batch_leaves_whole_lines_and_restart_finishes(tmp_path: Path, seldon_server: SeldonServer,
                                                                  daemons: list[Daemon]) -> None:
    """SIGTERM during a slow batch: the process exits promptly, the output holds whole lines only, and the
    next daemon takes the file up again from processing/ and finishes it with a fresh output."""
    watch = tmp_path / "watch"
    slow = Daemon(tmp_path, seldon_server, ["--watch-dir", str(watch), "--poll-interval", "0.2", "-w", "2",
                                            "--batch-interval", "0.05", "--drain-timeout", "5"], name="slow")
    daemons.append(slow)
    slow.wait_ready()
    write_lines(watch / "incoming" / ".big.txt.part", 400)
    os.rename(watch / "incoming" / ".big.txt.part", watch / "incoming" / "big.txt")
    partial = watch / "processing" / ".big.txt.output"

    def some_lines_written() -> bool:
        return partial.exists() and partial.read_bytes().count(b"\n") >= 20

    wait_for(some_lines_written, 20, "the first output lines")
    started = time.monotonic()
    assert slow.stop(timeout=15) == -signal.SIGTERM
    assert time.monotonic() - started < 10
    out = read_output(partial)
    indexes = [o["meta"]["tags"]["batch_index"] for o in out]
    assert 20 <= len(out) < 400 and len(set(indexes)) == len(indexes)
    assert (watch / "processing" / "big.txt").exists() and not (watch / "done" / "big.txt").exists()
    assert "stays in processing/" in slow.log()

    again = Daemon(tmp_path, seldon_server, ["--watch-dir", str(watch), "--poll-interval", "0.2", "-w", "4"],
                   name="again")
    daemons.append(again)
    again.wait_ready()
    wait_for(lambda: (watch / "done" / "big.txt.summary.json").exists(), 30, "big.txt in done/ after the restart")
    final = read_output(watch / "done" / "big.out.txt")
    assert sorted(o["meta"]["tags"]["batch_index"] for o in final) == list(range(400))
    summary = json.loads((watch / "done" / "big.txt.summary.json").read_text())
    assert summary["restarted"] is True and summary["succeeded"] == 400
    assert summary["resumed"] == len(out)  # the lines written before SIGTERM were kept, not sent again
    assert {o["meta"]["tags"]["batch_id"] for o in final} == {summary["batch_id"]}
    assert again.stop() == -signal.SIGTERM


def test_one_file_mode_exit_status_says_whether_lines_failed(tmp_path: Path, seldon_server: SeldonServer,
                                                             daemons: list[Daemon]) -> None:
    """Without --watch-dir the plugin processes the input file and exits: 0 when every line succeeded,
    1 when some failed."""
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    write_lines(good, 30)
    write_lines(bad, 10)
    with open(bad, "a") as f:
        f.write("not json\n")
    for path, status, failed in ((good, 0, 0), (bad, 1, 1)):
        daemon = Daemon(tmp_path, seldon_server, ["-i", str(path), "-w", "3", "--benchmark"], name=path.stem)
        daemons.append(daemon)
        assert daemon.process.wait(60) == status, daemon.log()
        out = read_output(tmp_path / f"{path.stem}.out.txt")
        assert len(out) == path.read_text().count("\n")
        assert sum(1 for o in out if "status" in o) == failed
        assert "Benchmark: elapsed time" in daemon.log()


def test_command_line_dashboard_shows_its_one_batch(tmp_path: Path, seldon_server: SeldonServer) -> None:
    """`seldon-batch-processor --dashboard ENDPOINT` serves the same API for its single batch while it runs."""
    src = tmp_path / "in.txt"
    write_lines(src, 60)
    port = free_port()
    command = [str(Path(sys.executable).parent / "seldon-batch-processor"), "-d", "echo", "-g", "seldon",
               "-h", seldon_server.rest_host, "-i", str(src), "-w", "1", "--batch-interval", "0.05",
               "--dashboard", f"tcp:{port}:interface=127.0.0.1"]
    process = subprocess.Popen(command, env=loopback_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def running() -> dict[str, Any] | None:
            try:
                code, body = http_request("GET", f"127.0.0.1:{port}", "/api/batches", timeout=2)
            except OSError:
                return None
            batches = json.loads(body)["batches"] if code == 200 else []
            return batches[0] if batches and batches[0]["state"] == "running" and batches[0]["done"] > 0 else None
        seen = wait_for(running, 20, "the command line's dashboard")
        assert seen["name"] == "in.txt" and seen["total"] == 60
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
    assert len(read_output(tmp_path / "in.out.txt")) == 60
    refused = subprocess.run([*command[:-2], "--dashboard", f"tcp:{port}:interface=0.0.0.0"], env=loopback_env(),
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "not loopback-only" in refused.stderr
