"""No file blocks the files behind it in the daemon, restarts included (issue 25, High 3).

A file slowed down by its sidecar to the limit (``{"batch-interval": 60}``: a line a minute) used to
hold the daemon's only slot until it ended, and after a restart ``processing/`` was taken up first
again. With ``--file-time-slice`` such a file yields its turn to the files waiting, keeps its output
so far and resumes after them. Real ``twistd -n seldon-batch`` processes against the real Seldon
microservice on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from tests.servers import SeldonServer
from tests.test_daemon_real import Daemon, read_output, wait_for, write_lines


def drop(incoming: Path, name: str, lines: int, sidecar: dict[str, object] | None = None) -> None:
    """A complete file (its sidecar first, then the file renamed in, then a ready marker)."""
    if sidecar is not None:
        (incoming / (name + ".json")).write_text(json.dumps(sidecar))
    write_lines(incoming / f".{name}.part", lines)
    os.rename(incoming / f".{name}.part", incoming / name)
    (incoming / (name + ".ready")).write_text("")


def first_line_written(watch: Path, name: str) -> bool:
    partial = watch / "processing" / f".{name}.output"
    return partial.exists() and partial.read_bytes().count(b"\n") >= 1


def test_a_slow_file_yields_its_turn_to_a_file_behind_it(tmp_path: Path, seldon_server: SeldonServer,
                                                         daemons: list[Daemon]) -> None:
    """One slot, a file sending a line a minute, then a small file: the small one is done within seconds (not
    minutes); the slow one keeps its first output line, stays in processing/ and is taken up again after it."""
    watch = tmp_path / "watch"
    incoming = watch / "incoming"
    daemon = Daemon(tmp_path, seldon_server, ["--watch-dir", str(watch), "--poll-interval", "0.2", "-w", "1",
                                              "--file-time-slice", "1", "--drain-timeout", "10"])
    daemons.append(daemon)
    daemon.wait_ready()
    drop(incoming, "slow.txt", 5, {"batch-interval": 60})
    wait_for(lambda: first_line_written(watch, "slow.txt"), 20, "slow.txt's first line", details=daemon.log)
    dropped = time.monotonic()
    drop(incoming, "fast.txt", 20)
    summary = watch / "done" / "fast.txt.summary.json"
    wait_for(summary.exists, 30, "fast.txt in done/ while slow.txt is unfinished", details=daemon.log)
    assert time.monotonic() - dropped < 30  # not after slow.txt's four more minutes
    assert json.loads(summary.read_text())["succeeded"] == 20
    assert sorted(o["meta"]["tags"]["batch_index"] for o in read_output(watch / "done" / "fast.out.txt")) == \
        list(range(20))
    assert "slow.txt had its turn of 1.0 s while other files wait" in daemon.log()
    assert (watch / "processing" / "slow.txt").exists() and not (watch / "done" / "slow.txt").exists()
    # taken up again once nothing waits, resuming: the line written in its first turn is kept
    wait_for(lambda: "slow.txt was left in processing/; taking it up again" in daemon.log(), 20,
             "slow.txt taken up again", details=daemon.log)
    kept = read_output(watch / "processing" / ".slow.txt.output")
    assert [o["meta"]["tags"]["batch_index"] for o in kept][:1] == [0]
    assert daemon.stop() == -signal.SIGTERM
    assert (watch / "processing" / "slow.txt").exists()


def test_after_a_restart_processing_does_not_starve_incoming(tmp_path: Path, seldon_server: SeldonServer,
                                                             daemons: list[Daemon]) -> None:
    """A slow file stopped with the daemon is taken up first by the next one, as before; a file waiting in
    incoming/ is still done within seconds, and the slow file resumes after it with its lines kept."""
    watch = tmp_path / "watch"
    incoming = watch / "incoming"
    first = Daemon(tmp_path, seldon_server, ["--watch-dir", str(watch), "--poll-interval", "0.2", "-w", "1"],
                   name="first")
    daemons.append(first)
    first.wait_ready()
    drop(incoming, "slow.txt", 4, {"batch-interval": 60})
    wait_for(lambda: first_line_written(watch, "slow.txt"), 20, "slow.txt's first line", details=first.log)
    assert first.stop() == -signal.SIGTERM
    assert (watch / "processing" / "slow.txt").exists()

    drop(incoming, "waiting.txt", 10)
    second = Daemon(tmp_path, seldon_server, ["--watch-dir", str(watch), "--poll-interval", "0.2", "-w", "1",
                                              "--file-time-slice", "1"], name="second")
    daemons.append(second)
    second.wait_ready()
    summary = watch / "done" / "waiting.txt.summary.json"
    wait_for(summary.exists, 30, "waiting.txt in done/ although slow.txt was taken up first", details=second.log)
    assert json.loads(summary.read_text())["succeeded"] == 10
    log = second.log()
    assert log.index("slow.txt was left in processing/") < log.index("claimed waiting.txt")
    assert "slow.txt had its turn" in log
    code, body = second.get("/api/batches")
    listed = {b["name"]: b for b in json.loads(body)["batches"]}
    assert code == 200 and listed["waiting.txt"]["state"] == "done"
    wait_for(lambda: second.log().count("slow.txt was left in processing/") >= 2, 20, "slow.txt resumed",
             details=second.log)
    kept = read_output(watch / "processing" / ".slow.txt.output")
    assert 1 <= len(kept) < 4 and kept[0]["meta"]["tags"]["batch_index"] == 0
    assert second.stop() == -signal.SIGTERM
