"""`twistd -n seldon-batch --watch-dir` as a real process against hostile files, with a loopback model
server that records every request it receives (tests/hostile_server.py)."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile_server import HostileServer
from tests.test_daemon_real import Daemon, read_output, wait_for, write_lines

SECRET = "TOP-SECRET-line-of-the-daemon-user"
TOKEN = "daemon-credential-token"


@pytest.fixture(scope="module")
def recorder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileServer]:
    with HostileServer(tmp_path_factory.mktemp("recorder") / "requests.jsonl") as server:
        yield server


def test_hostile_files_dropped_together_then_a_good_file_runs(tmp_path: Path, recorder: HostileServer,
                                                              daemons: list[Daemon]) -> None:
    """A FIFO, a symlink to a file only the daemon may read, sidecars pointing the data elsewhere or set to
    impossible values, a FIFO in processing/, a 255-byte name and a name that is not UTF-8, all at once: the
    unsafe ones go to failed/ with reasons, nothing of the secret is sent, /health keeps answering, the
    log stays small, and a good file dropped afterwards is processed with an output no more readable than
    its input."""
    watch = tmp_path / "watch"
    for sub in ("incoming", "processing", "done", "failed"):
        (watch / sub).mkdir(parents=True)
    incoming, processing = watch / "incoming", watch / "processing"
    secret = tmp_path / "secret.txt"
    secret.write_text(json.dumps([[SECRET]]) + "\n")
    secret.chmod(0o600)
    os.mkfifo(processing / "left.txt")  # before the start: adoption must not block on it
    daemon = Daemon(tmp_path, recorder, ["--watch-dir", str(watch), "--poll-interval", "0.2", "-w", "4",
                                         "--call-credentials-token", TOKEN])
    daemons.append(daemon)
    daemon.wait_ready()

    os.mkfifo(incoming / "fifo.txt")
    (incoming / "fifo.txt.ready").touch()
    (incoming / "link.txt").symlink_to(secret)
    (incoming / "link.txt.ready").touch()
    sidecars = {"elsewhere.txt": {"data-type": "data", "host": "127.0.0.1:9"},
                "shard.txt": {"shard-index": 5}, "token.txt": {"header": "X-Auth-Token: stolen"}}
    for name, sidecar in sidecars.items():
        write_lines(incoming / name, 3)
        (incoming / (name + ".json")).write_text(json.dumps(sidecar))
        (incoming / (name + ".ready")).touch()
    long_name = "n" * 251 + ".txt"
    write_lines(incoming / long_name, 4)
    latin = os.fsdecode(b"donn\xe9es.txt")
    write_lines(incoming / latin, 2)
    assert daemon.get("/health")[0] == 200

    rejected = ["fifo.txt", "link.txt", "left.txt", *sidecars]
    wait_for(lambda: all((watch / "failed" / (n + ".reason.txt")).exists() for n in rejected), 20,
             "the hostile files in failed/")
    assert daemon.get("/health")[0] == 200
    reasons = {n: (watch / "failed" / (n + ".reason.txt")).read_text() for n in rejected}
    assert "FIFO" in reasons["fifo.txt"] and "FIFO" in reasons["left.txt"]
    assert "symbolic link" in reasons["link.txt"]
    assert "'host'" in reasons["elsewhere.txt"] and "--sidecar-allow host" in reasons["elsewhere.txt"]
    assert "--sidecar-allow shard-index" in reasons["shard.txt"] and "--sidecar-allow header" in reasons["token.txt"]

    good = incoming / "good.txt"
    write_lines(incoming / ".good.txt.part", 30)
    os.chmod(incoming / ".good.txt.part", 0o640)
    os.rename(incoming / ".good.txt.part", good)
    done = watch / "done"
    wait_for(lambda: (done / "good.txt.summary.json").exists(), 20, "good.txt in done/")
    wait_for(lambda: len(list(done.glob("*.summary.json"))) == 3, 20, "the long and non-UTF-8 names in done/")
    out = read_output(done / "good.out.txt")
    assert sorted(o["meta"]["tags"]["batch_index"] for o in out) == list(range(30))
    assert stat.S_IMODE(os.stat(done / "good.out.txt").st_mode) & ~0o640 == 0
    summaries = [json.loads(p.read_text()) for p in done.glob("*.summary.json")]
    assert sorted(s["succeeded"] for s in summaries) == [2, 4, 30]
    assert any(s["original_name"] == long_name for s in summaries)
    assert os.path.exists(os.path.join(os.fsencode(done), b"donn\xe9es.txt"))
    assert sorted(os.listdir(incoming)) == [] and sorted(os.listdir(processing)) == []

    requests = recorder.received()
    batch_ids = {s["batch_id"] for s in summaries}
    mine = [r for r in requests if r["batch_id"] in batch_ids]
    assert len(mine) == len(requests) == 36  # the good, long and non-UTF-8 files' lines, none of the rejected
    assert not any(SECRET in json.dumps(r) for r in requests)
    assert {r["auth"] for r in mine} == {TOKEN}

    size = len(daemon.log())
    time.sleep(2.0)  # ten idle polls: they must not add to the log
    assert len(daemon.log()) - size < 512, daemon.log()[size:]
    assert size < 64_000, "the log grew large"
    code, body = daemon.get("/api/batches")
    assert code == 200 and len(json.loads(body)["batches"]) >= 9
    assert daemon.get("/metrics")[0] == 200
    assert daemon.stop() == -signal.SIGTERM
