"""The real ``twistd -n seldon-batch --watch-dir`` daemon against hostile files and names (issue 11).

One daemon, one ``tests/hostile_server.py`` (echo) and a second server ("elsewhere") that no
request may ever reach. Dropped into ``incoming/``: a symlink and a hard link to a secret file
outside the watch directory, a FIFO, a 255-byte name, a name that is not UTF-8, sidecars that try
to redirect the daemon (``host``) or cannot apply (``{"host": "127.0.0.1:1"}``,
``{"shard-index": 5}``), a file whose first line is JSON nested 100,000 deep, an output name
pre-planted as a symlink to a victim file, a FIFO planted in ``processing/`` before the start;
then good files that must still be done. Throughout, ``/health``, ``/`` and ``/metrics`` answer
200 within a second, and the daemon's log grows by less than 200 KB over 10 s once everything is
filed (a daemon that retakes a failing file at once writes megabytes per second), also after a
restart.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hostile_server import HostileServer
from tests.loopback import http_request
from tests.test_daemon_real import Daemon, wait_for

SECRET = "TOPSECRET-7f3a9c"
TOKEN = "daemon-token-5b2e"
LOG_GROWTH_LIMIT = 200 * 1024
GOOD_LINES = 12


def state(watch: Path, daemon: Daemon) -> str:
    """The watch directory's listing and the daemon's log tail, for a failure message."""
    listing = {sub: sorted(x[:60] for x in names(watch / sub)) for sub in ("incoming", "processing", "done", "failed")}
    return f"{listing}\nlog tail:\n{daemon.log()[-4000:]}"


def hostile_daemon(tmp: Path, server: HostileServer, watch: Path, name: str) -> Daemon:
    """The daemon under test, with its credential token, fast polls and short timeouts."""
    return Daemon(tmp, server, ["-g", "istio", "-n", "ns", "--call-credentials-token", TOKEN,
                                "--watch-dir", str(watch), "--poll-interval", "0.2", "-w", "2", "-r", "0",
                                "--timeout", "2",
                                # values that cannot apply must be caught too, not only keys that are not allowed
                                "--sidecar-allow", "shard-index,shard-count"], name)


class Watcher(threading.Thread):
    """Polls /health, / and /metrics every 0.2 s while the test runs; records any failure or slow answer."""

    def __init__(self, daemon: Daemon) -> None:
        super().__init__(daemon=True)
        self.target = daemon
        self.stopping = threading.Event()
        self.failures: list[str] = []
        self.rounds = 0

    def run(self) -> None:
        deadline = time.monotonic() + 300  # bounded even if the test forgets to stop it
        while not self.stopping.is_set() and time.monotonic() < deadline:
            for path in ("/health", "/", "/metrics"):
                started = time.monotonic()
                try:
                    code, body = self.target.get(path, timeout=3.0)
                except OSError as e:
                    self.failures.append(f"{path}: {type(e).__name__}: {e}")
                    continue
                took = time.monotonic() - started
                if code != 200:
                    self.failures.append(f"{path}: HTTP {code}: {body[:200]!r}")
                elif took > 1.0:
                    self.failures.append(f"{path}: answered after {took:.1f} s")
            self.rounds += 1
            self.stopping.wait(0.2)

    def finish(self) -> list[str]:
        self.stopping.set()
        self.join(10)
        return self.failures


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[HostileServer, HostileServer]]:
    with HostileServer(tmp_path / "model.jsonl") as model, HostileServer(tmp_path / "elsewhere.jsonl") as other:
        yield model, other


def good_lines(count: int = GOOD_LINES, marker: float = 0.5) -> str:
    return "".join(json.dumps([[i, marker]]) + "\n" for i in range(count))


def drop(incoming: Path, name: str | bytes, content: str | bytes, sidecar: dict[str, Any] | None = None) -> None:
    """Write a file as a careful user does (hidden name, then rename in), its sidecar first."""
    raw = os.fsencode(name) if isinstance(name, str) else name
    base = os.fsencode(str(incoming))
    if sidecar is not None:
        with open(os.path.join(base, raw + b".json"), "w") as f:
            json.dump(sidecar, f)
    hidden = os.path.join(base, b"." + raw[:200] + b".part")
    with open(hidden, "wb") as f:
        f.write(content.encode() if isinstance(content, str) else content)
    os.rename(hidden, os.path.join(base, raw))


def names(directory: Path) -> set[bytes]:
    return set(os.listdir(os.fsencode(str(directory)))) if directory.exists() else set()


def same_file(entry: bytes, raw: bytes, suffix: bytes) -> bool:
    """Whether `entry` is `raw` + `suffix`, allowing the daemon's renames: ``STEM-N.EXT`` when the name
    was taken (e.g. by a planted output), a shortened prefix for names too long for their derived names."""
    if not entry.endswith(suffix):
        return False
    name = entry[: len(entry) - len(suffix)]
    if name == raw or (len(raw) > 200 and name.startswith(raw[:40])):
        return True
    stem, ext = os.path.splitext(raw)
    return bool(re.fullmatch(re.escape(stem) + rb"-\d+" + re.escape(ext), name))


def filed(watch: Path, raw: bytes) -> str | None:
    """``done`` or ``failed`` once the file (maybe renamed) is filed with its summary/reason."""
    for where, suffix in (("done", b".summary.json"), ("failed", b".reason.txt")):
        if any(same_file(entry, raw, suffix) for entry in names(watch / where)):
            return where
    return None


def reason_for(watch: Path, raw: bytes) -> str:
    for entry in names(watch / "failed"):
        if same_file(entry, raw, b".reason.txt"):
            return (watch / "failed" / os.fsdecode(entry)).read_text(errors="replace")
    raise AssertionError(f"no reason file for {raw[:60]!r} in failed/: {sorted(names(watch / 'failed'))}")


def output_records(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "torn output"
    return [json.loads(line) for line in text.splitlines()]


def done_output(watch: Path, raw: bytes) -> list[dict[str, Any]]:
    """The records of the output in done/ that belongs to `raw` (``STEM.out.EXT``, maybe shortened)."""
    stem, ext = os.path.splitext(raw)
    candidates = [e for e in names(watch / "done") if e == stem + b".out" + ext or
                  (len(raw) > 200 and e.startswith(raw[:40]) and b".out" in e)]
    assert len(candidates) == 1, (raw[:60], sorted(names(watch / "done")))
    return output_records(watch / "done" / os.fsdecode(candidates[0]))


def test_hostile_files_never_stop_spin_or_leak(tmp_path: Path, servers: tuple[HostileServer, HostileServer]) -> None:
    model, elsewhere = servers
    watch = tmp_path / "watch"
    for sub in ("incoming", "processing", "done", "failed"):
        (watch / sub).mkdir(parents=True)
    incoming = watch / "incoming"
    secret = tmp_path / "secret.txt"
    secret.write_text("".join(json.dumps([[SECRET]]) + "\n" for _ in range(5)))
    secret.chmod(0o600)
    victim = tmp_path / "victim.txt"
    victim.write_text("do not overwrite\n")
    os.mkfifo(watch / "processing" / "planted-fifo.txt")  # left in processing/ before the start

    daemon = hostile_daemon(tmp_path, model, watch, "daemon")
    try:
        daemon.wait_ready(30)
        watcher = Watcher(daemon)
        watcher.start()

        # -- hostile drops ------------------------------------------------------------------------------
        os.symlink(secret, incoming / "link.txt")
        with open(incoming / "link2.txt.json", "w") as f:
            json.dump({"data-type": "str", "host": elsewhere.rest_host}, f)
        os.symlink(secret, incoming / "link2.txt")
        os.link(secret, incoming / "hardlink.txt")
        os.mkfifo(incoming / "fifo.txt")
        long_name = b"L" * 251 + b".txt"  # 255 bytes: valid, too long for NAME.summary.json
        drop(incoming, long_name, good_lines())
        odd_name = b"caf\xe9-\xff\xfe<b>.txt"  # not UTF-8, with markup
        drop(incoming, odd_name, good_lines())
        drop(incoming, "host-elsewhere.txt", good_lines(marker=0.25), {"host": elsewhere.rest_host})
        drop(incoming, "host-bad-port.txt", good_lines(), {"host": "127.0.0.1:1"})
        drop(incoming, "shard.txt", good_lines(), {"shard-index": 5})
        drop(incoming, "token.txt", good_lines(), {"call-credentials-token": "x\r\nX-Evil: 1"})
        drop(incoming, "workers0.txt", good_lines(), {"workers": 0})
        drop(incoming, "batchsize.txt", good_lines(), {"batch-size": "abc"})
        drop(incoming, "badjson.txt", good_lines(), None)
        (incoming / "badjson.txt.json").write_text("{not json")  # after the file: must not matter either way
        drop(incoming, "deep-sidecar.txt", good_lines(), {"data-type": "data"})
        (incoming / "deep-sidecar.txt.json").write_text("[" * 100_000 + "]" * 100_000)
        deep = "[" * 100_000 + "]" * 100_000 + "\n"
        drop(incoming, "deep-first.txt", deep + good_lines())
        os.symlink(victim, watch / "done" / "planted.out.txt")
        drop(incoming, "planted.txt", good_lines())
        drop(incoming, "bom.txt", b"\xef\xbb\xbf" + good_lines().encode())

        hostile = [b"link.txt", b"link2.txt", b"hardlink.txt", b"fifo.txt", long_name, odd_name,
                   b"host-elsewhere.txt", b"host-bad-port.txt", b"shard.txt", b"token.txt", b"deep-first.txt",
                   b"planted.txt", b"bom.txt", b"planted-fifo.txt", b"workers0.txt", b"batchsize.txt",
                   b"badjson.txt", b"deep-sidecar.txt"]
        for raw in hostile:
            wait_for(functools.partial(filed, watch, raw), 30, f"{raw[:60]!r} filed in done/ or failed/",
                     details=lambda: state(watch, daemon))

        # -- then good files are still processed ------------------------------------------------------
        drop(incoming, "good.txt", good_lines())
        (incoming / "ready.txt").write_text(good_lines())
        (incoming / "ready.txt.ready").write_text("")
        for raw in (b"good.txt", b"ready.txt"):
            assert wait_for(functools.partial(filed, watch, raw), 30, f"{raw!r} filed",
                            details=lambda: state(watch, daemon)) == "done", \
                reason_for(watch, raw)
            records = done_output(watch, raw)
            assert sorted(r["meta"]["tags"]["batch_index"] for r in records) == list(range(GOOD_LINES))
            assert not any("status" in r for r in records)

        # -- bounded log growth once everything is filed ----------------------------------------------
        before = daemon.log_size()
        time.sleep(10)  # the measurement window itself, not a synchronisation
        growth = daemon.log_size() - before
        assert growth < LOG_GROWTH_LIMIT, f"log grew {growth} bytes in 10 s:\n{daemon.log()[-3000:]}"
        failures = watcher.finish()
        assert failures == [], failures[:10]
        assert watcher.rounds >= 20

        # -- what happened to each hostile file -------------------------------------------------------
        for raw in (b"link.txt", b"link2.txt", b"hardlink.txt", b"fifo.txt", b"planted-fifo.txt",
                    b"host-elsewhere.txt", b"host-bad-port.txt", b"shard.txt", b"token.txt", b"workers0.txt",
                    b"batchsize.txt"):
            assert filed(watch, raw) == "failed", raw
            assert reason_for(watch, raw).strip(), raw
        assert "\r\nX-Evil" not in daemon.log()
        for raw in (long_name, odd_name, b"deep-first.txt", b"bom.txt"):
            if filed(watch, raw) == "failed":
                assert reason_for(watch, raw).strip()
                assert raw not in (long_name, odd_name, b"bom.txt"), (raw[:60], reason_for(watch, raw))
                continue
            records = done_output(watch, raw)
            lines = GOOD_LINES + (1 if raw == b"deep-first.txt" else 0)
            assert sorted(r["meta"]["tags"]["batch_index"] for r in records) == list(range(lines)), raw[:60]
            errors = [r for r in records if "status" in r]
            assert len(errors) == (1 if raw == b"deep-first.txt" else 0), (raw[:60], errors[:2])
            if errors:
                assert errors[0]["status"]["info"] == "input_error" and errors[0]["meta"]["tags"]["batch_index"] == 0
        assert victim.read_text() == "do not overwrite\n"
        assert os.path.islink(watch / "done" / "planted.out.txt")
        if filed(watch, b"planted.txt") == "done":  # its output went to another name, or...
            outputs = [e for e in names(watch / "done") if re.fullmatch(rb"planted(-\d+)?\.out\.txt", e)
                       and not os.path.islink(watch / "done" / os.fsdecode(e))]
            assert len(outputs) == 1, sorted(names(watch / "done"))
            records = output_records(watch / "done" / os.fsdecode(outputs[0]))
            assert sorted(r["meta"]["tags"]["batch_index"] for r in records) == list(range(GOOD_LINES))
        else:  # ...the file was refused with a reason
            assert reason_for(watch, b"planted.txt").strip()
        assert names(watch / "processing") == set(), sorted(names(watch / "processing"))
        assert names(incoming) == set(), sorted(names(incoming))

        # -- nothing secret or credentialled went anywhere it should not ----------------------------
        received = model.received()
        assert received, "the model server saw no request at all"
        assert not [r for r in received if SECRET in json.dumps(r)], "the symlinked/hard-linked secret was sent"
        assert elsewhere.received() == [], elsewhere.received()[:3]
        for entry in names(watch / "done") | names(watch / "failed"):
            path = watch / ("done" if entry in names(watch / "done") else "failed") / os.fsdecode(entry)
            # The refused links themselves may be filed (same inode, same permissions): no copy may be.
            if path.is_file() and not path.is_symlink() and path.stat().st_ino != secret.stat().st_ino:
                assert SECRET not in path.read_text(errors="replace"), entry

        # -- the dashboard shows every name ----------------------------------------------------------
        code, body = daemon.get("/api/batches")
        assert code == 200
        json.loads(body)
        code, metrics = daemon.get("/metrics")
        assert code == 200 and b"seldon_batch_lines_total" in metrics
        # a tokenless loopback dashboard serves loopback Host names only (DNS rebinding)
        code, body = http_request("GET", f"127.0.0.1:{daemon.port}", "/api/batches", timeout=5,
                                  headers={"Host": "rebind.attacker.example"})
        assert code != 200 and SECRET.encode() not in body, code
    finally:
        stopped = daemon.stop()
    assert stopped in (0, -signal.SIGTERM), daemon.log()[-3000:]

    # -- a restart takes nothing failing up again and stays quiet -------------------------------------
    again = hostile_daemon(tmp_path, model, watch, "again")
    try:
        again.wait_ready(30)
        watcher = Watcher(again)
        watcher.start()
        wait_for(lambda: watcher.rounds >= 3, 20, "the restarted daemon's dashboard")
        before = again.log_size()
        time.sleep(5)  # the measurement window itself
        growth = again.log_size() - before
        assert growth < LOG_GROWTH_LIMIT // 2, f"log grew {growth} bytes in 5 s after a restart"
        assert watcher.finish() == []
        assert names(watch / "processing") == set()
    finally:
        again.stop()
