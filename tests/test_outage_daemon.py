"""The daemon through an outage (issue 19): the real microservice SIGKILLed in the middle of a file and
back 20 s later; the daemon pauses (its dashboard and /metrics say so) and files the input in done/
with every line a success, never in failed/, even with a short --outage-timeout."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from tests.servers import SeldonServer
from tests.test_daemon_real import Daemon, read_output, wait_for, write_lines

LINES = 2000


def out_lines(watch: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in (watch / "processing").glob(".*.output"))


def test_twenty_second_outage_mid_file_ends_in_done(tmp_path: Path, daemons: list[Daemon]) -> None:
    watch = tmp_path / "watch"
    with SeldonServer("EchoModel") as server:
        daemon = Daemon(tmp_path, server, ["--watch-dir", str(watch), "--poll-interval", "0.3", "-w", "2",
                                           "--batch-interval", "0.005", "--outage-timeout", "5"])
        daemons.append(daemon)
        daemon.wait_ready()
        write_lines(watch / "incoming" / ".big.txt.part", LINES)
        (watch / "incoming" / ".big.txt.part").rename(watch / "incoming" / "big.txt")
        wait_for(lambda: out_lines(watch) >= 200, 60, "200 lines written", details=daemon.log)
        server.stop(signal.SIGKILL)
        assert out_lines(watch) < LINES, "the file was finished before the model was killed"

        def waiting() -> bool:
            batches = json.loads(daemon.get("/api/batches")[1])["batches"]
            return any(b.get("waiting", "").startswith("waiting for the model since") for b in batches)

        wait_for(waiting, 15, "the dashboard to say it waits for the model", details=daemon.log)
        assert b"seldon_batch_batch_waiting_for_model{" in daemon.get("/metrics")[1]
        time.sleep(20)
        assert not (watch / "failed").exists() or not any((watch / "failed").iterdir())
        server.start()
        wait_for(lambda: (watch / "done" / "big.txt.summary.json").exists(), 120, "big.txt in done/",
                 details=daemon.log)
        out = read_output(watch / "done" / "big.out.txt")
        assert sorted(o["meta"]["tags"]["batch_index"] for o in out) == list(range(LINES))
        assert all(o["data"]["ndarray"] == [[o["meta"]["tags"]["batch_index"], 0.5, -1]] for o in out)
        summary = json.loads((watch / "done" / "big.txt.summary.json").read_text())
        assert summary["succeeded"] == LINES and summary["failed"] == 0
        assert "waiting for the model since" in daemon.log()
        assert daemon.stop() == -signal.SIGTERM
