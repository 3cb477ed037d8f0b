"""The watch directory against hostile files: links, FIFOs, sockets, hard links, bad sidecars, long and
non-UTF-8 names, files that fail to prepare. In-process with a Clock, real files and an in-memory model."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.daemon.inputs import check_input
from seldon_batch_tx.daemon.layout import WatchDir, short_name
from seldon_batch_tx.daemon.service import WatchDirService
from seldon_batch_tx.daemon.sidecars import SIDECAR_ALLOWABLE, SIDECAR_NEVER, SIDECAR_SAFE, check_sidecar_allow
from seldon_batch_tx.pipeline.summary import Summary
from tests.test_watchdir import Daemon, EchoModel, files, write_lines

SECRET = "TOP-SECRET-do-not-send"


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail instead of hanging: a blocking open() of a FIFO is interrupted by SIGALRM."""
    def expired(_sig: int, _frame: Any) -> None:
        raise TimeoutError(f"blocked for more than {seconds} s")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    """Every log event emitted while the test runs."""
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)


def make(tmp_path: Path, **kw: Any) -> Daemon:
    daemon = Daemon(tmp_path / "watch", Clock(), EchoModel(), **kw)
    for sub in ("incoming", "processing", "done", "failed"):
        daemon.path(sub).mkdir(parents=True, exist_ok=True)
    return daemon


def stop(daemon: Daemon) -> None:
    if daemon.service.running:
        daemon.service.stopService()
        daemon.pump(seconds=6)


def reason(daemon: Daemon, name: str) -> str:
    return daemon.path("failed", name + ".reason.txt").read_text()


def sent(daemon: Daemon) -> str:
    return json.dumps(daemon.model.bodies)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_links_fifos_sockets_and_hard_links_go_to_failed_unread(tmp_path: Path) -> None:
    """Symlinks (to a file outside the watch directory, to a FIFO, dangling), a FIFO, a socket and a hard
    link in incoming/ and processing/ are moved to failed/ with a reason; nothing of theirs is read or sent,
    the daemon never blocks, and a good file still runs."""
    daemon = make(tmp_path)
    incoming, processing = daemon.path("incoming"), daemon.path("processing")
    outside = tmp_path / "outside.txt"
    outside.write_text(json.dumps([[SECRET]]) + "\n")
    (incoming / "link.txt").symlink_to(outside)
    (incoming / "link.txt.ready").touch()
    os.mkfifo(incoming / "fifo.txt")
    (incoming / "fifo.txt.ready").touch()
    (incoming / "dangling.txt").symlink_to(tmp_path / "nowhere")
    os.link(outside, incoming / "hard.txt")
    (incoming / "hard.txt.ready").touch()
    os.mkfifo(processing / "left-fifo.txt")
    (processing / "left-link.txt").symlink_to(outside)
    (incoming / "to-fifo.txt").symlink_to(processing / "left-fifo.txt")
    here = os.getcwd()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.chdir(incoming)  # AF_UNIX paths are short: bind by a relative name
        sock.bind("sock.txt")
    finally:
        os.chdir(here)
    write_lines(incoming / "good.txt", 3)
    (incoming / "good.txt.ready").touch()
    before = open_fds()
    try:
        with deadline(20):
            daemon.service.startService()
            daemon.pump(lambda: daemon.path("done", "good.txt.summary.json").exists()
                        and len(list(daemon.path("failed").glob("*.reason.txt"))) == 8, seconds=5)
    finally:
        sock.close()
    reasons = {p.name[: -len(".reason.txt")]: p.read_text() for p in daemon.path("failed").glob("*.reason.txt")}
    assert set(reasons) == {"link.txt", "fifo.txt", "dangling.txt", "hard.txt", "left-fifo.txt", "left-link.txt",
                            "to-fifo.txt", "sock.txt"}
    for name in ("link.txt", "dangling.txt", "left-link.txt", "to-fifo.txt"):
        assert "symbolic link" in reasons[name], reasons[name]
    assert "FIFO" in reasons["fifo.txt"] and "FIFO" in reasons["left-fifo.txt"]
    assert "socket" in reasons["sock.txt"] and "hard links" in reasons["hard.txt"]
    assert SECRET not in sent(daemon) and len(daemon.model.bodies) == 3
    assert files(daemon.path("done")) == ["good.out.txt", "good.txt", "good.txt.summary.json"]
    assert stat.S_ISLNK(os.lstat(daemon.path("failed", "link.txt")).st_mode)  # the link moved, not its target
    assert outside.read_text() == json.dumps([[SECRET]]) + "\n"
    assert files(incoming) == [] and files(processing) == []
    stop(daemon)
    assert open_fds() <= before


def test_sidecars_cannot_redirect_data_or_credentials(tmp_path: Path) -> None:
    """A sidecar may set only per-file options; host, headers, tokens, TLS and the like are the daemon's
    unless its operator allows them; values that cannot apply, and sidecars that are links or FIFOs, send
    the file to failed/ once."""
    daemon = make(tmp_path)
    incoming = daemon.path("incoming")
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"data-type": "str"}))
    cases: dict[str, Any] = {
        "host.txt": {"data-type": "str", "host": "elsewhere.example:80"},
        "token.txt": {"call-credentials-token": "x"},
        "header.txt": {"header": "X-Evil: 1"},
        "shard.txt": {"shard-index": 5},
        "crlf.txt": {"batch-id": "a\r\nX-Evil: 1"},
        "nested.txt": json.loads("[" * 50 + "]" * 50),
        "list.txt": {"workers": [1]},
        "never.txt": {"output-data-path": "/tmp/x"},
    }
    for name, sidecar in cases.items():
        write_lines(incoming / name, 1)
        (incoming / (name + ".json")).write_text(json.dumps(sidecar))
    write_lines(incoming / "deep.txt", 1)
    (incoming / "deep.txt.json").write_text("[" * 100_000 + "]" * 100_000)
    write_lines(incoming / "linked.txt", 1)
    (incoming / "linked.txt.json").symlink_to(outside)
    write_lines(incoming / "fifo-side.txt", 1)
    os.mkfifo(incoming / "fifo-side.txt.json")
    names = [*cases, "deep.txt", "linked.txt", "fifo-side.txt"]
    for name in names:
        (incoming / (name + ".ready")).touch()
    with deadline(20):
        daemon.service.startService()
        daemon.pump(lambda: all(daemon.path("failed", n + ".reason.txt").exists() for n in names), seconds=8)
    got = {name: reason(daemon, name) for name in names}
    for name in ("host.txt", "token.txt", "header.txt", "shard.txt"):
        assert "is the daemon's" in got[name] and "--sidecar-allow" in got[name], got[name]
    assert "'host'" in got["host.txt"] and "--sidecar-allow shard-index" in got["shard.txt"]
    assert "control characters" in got["crlf.txt"]
    assert "must hold a JSON object" in got["nested.txt"] and "not readable JSON" in got["deep.txt"]
    assert "workers" in got["list.txt"] and "not a per-file option" in got["never.txt"]
    assert "symbolic link" in got["linked.txt"] and "FIFO" in got["fifo-side.txt"]
    assert daemon.model.bodies == []  # nothing was sent for any of them
    stop(daemon)


def test_allowed_keys_apply_and_values_that_cannot_apply_fail_once(tmp_path: Path,
                                                                    events: list[dict[str, Any]]) -> None:
    """With --sidecar-allow, the key applies; a value that cannot (shard 5 of 1) sends the file to failed/
    once with the reason, and the daemon does not take it again."""
    daemon = make(tmp_path, sidecar_allow=frozenset({"shard-index", "namespace", "host"}))
    incoming = daemon.path("incoming")
    write_lines(incoming / "shard.txt", 2)
    (incoming / "shard.txt.json").write_text(json.dumps({"shard-index": 5}))
    write_lines(incoming / "port.txt", 2)
    (incoming / "port.txt.json").write_text(json.dumps({"host": "model.test:abc"}))
    write_lines(incoming / "ns.txt", 2)
    (incoming / "ns.txt.json").write_text(json.dumps({"namespace": "other"}))
    for name in ("shard.txt", "port.txt", "ns.txt"):
        (incoming / (name + ".ready")).touch()
    daemon.service.startService()
    daemon.pump(seconds=10)
    assert "do not fit together" in reason(daemon, "shard.txt") and "shard index 5" in reason(daemon, "shard.txt")
    assert "'host'" in reason(daemon, "port.txt") and "abc" in reason(daemon, "port.txt")
    assert daemon.path("done", "ns.txt.summary.json").exists()
    assert len(daemon.model.bodies) == 2
    assert len(events) < 40, [e.get("log_format") for e in events]
    stop(daemon)


def test_check_sidecar_allow_names_bad_keys() -> None:
    """--sidecar-allow takes the daemon's keys; never-per-file keys and unknown ones are refused by name."""
    assert check_sidecar_allow(["host", " Header ", "call_credentials_token", ""]) == {
        "host", "header", "call-credentials-token"}
    for bad in ("output-data-path", "dashboard", "colour"):
        with pytest.raises(ValueError, match=bad):
            check_sidecar_allow([bad])
    assert not SIDECAR_SAFE & SIDECAR_ALLOWABLE and not SIDECAR_NEVER & (SIDECAR_SAFE | SIDECAR_ALLOWABLE)
    assert {"host", "header", "call-credentials-token", "ca-cert", "use-ssl", "transport", "protocol",
            "deployment-name", "model-name", "model-version", "namespace", "gateway-type"} <= SIDECAR_ALLOWABLE


def test_a_file_that_fails_to_prepare_goes_to_failed_once_and_the_poll_keeps_its_pace(
        tmp_path: Path, events: list[dict[str, Any]]) -> None:
    """Whatever raises while preparing a file (here the transport factory) sends it to failed/ with the
    error; it is attempted once, scans stay one per --poll-interval, and the log stays small."""
    daemon = make(tmp_path)
    calls: list[str] = []

    def broken(config: BatchConfig, reactor: Any) -> Any:
        calls.append(config.input_data_path)
        raise RuntimeError("port 'abc' is not a number")
    daemon.service._transport_factory = broken
    write_lines(daemon.path("incoming", "boom.txt"), 2)
    daemon.path("incoming", "boom.txt.ready").touch()
    daemon.service.startService()
    daemon.pump(seconds=20)
    assert len(calls) == 1
    text = reason(daemon, "boom.txt")
    assert "RuntimeError" in text and "port 'abc'" in text
    assert daemon.service.polls <= 21  # one scan per second of clock, none in between
    assert len(events) < 30
    stop(daemon)


def test_a_file_that_cannot_be_filed_away_is_not_taken_again_even_after_a_restart(
        tmp_path: Path, events: list[dict[str, Any]]) -> None:
    """When failed/ cannot take a failing file, it stays in processing/ and is not retried while unchanged:
    no loop, no traceback per poll; a restarted daemon tries it once more, then leaves it too."""
    daemon = make(tmp_path)
    calls: list[int] = []
    failed = daemon.path("failed")

    def broken(config: BatchConfig, reactor: Any) -> Any:
        calls.append(1)
        failed.rmdir()
        failed.write_text("not a directory")  # every move into failed/ now fails
        raise RuntimeError("broken transport")
    daemon.service._transport_factory = broken
    write_lines(daemon.path("incoming", "stuck.txt"), 2)
    daemon.path("incoming", "stuck.txt.ready").touch()
    daemon.service.startService()
    daemon.pump(seconds=15)
    assert len(calls) == 1
    assert files(daemon.path("processing"))[-1] == "stuck.txt"
    failures = [e for e in events if e.get("log_failure") is not None]
    assert len(failures) <= 2 and len(events) < 40
    stop(daemon)

    again = Daemon(tmp_path / "watch", Clock(), EchoModel())
    again.service._transport_factory = broken
    events.clear()
    failed.unlink()
    again.service.startService()
    again.pump(seconds=15)
    assert len(calls) == 2 and len(events) < 40
    stop(again)


def test_long_and_non_utf8_names_are_processed_without_leaks(tmp_path: Path) -> None:
    """A 255-byte name runs under a shortened name (the original in its summary); a name that is not
    UTF-8 runs as it is; a BOM at the start is accepted; no file descriptor or lock is left behind."""
    daemon = make(tmp_path)
    incoming = os.fsencode(daemon.path("incoming"))
    long_name = "L" * 251 + ".txt"
    latin = os.fsdecode(b"caf\xe9-\xff.txt")
    write_lines(daemon.path("incoming", long_name), 3)
    write_lines(Path(os.fsdecode(os.path.join(incoming, os.fsencode(latin)))), 2)
    daemon.path("incoming", "bom.txt").write_bytes(b"\xef\xbb\xbf" + json.dumps([[1]]).encode() + b"\n")
    before = open_fds()
    daemon.service.startService()
    daemon.pump(lambda: len(list(daemon.path("done").glob("*.summary.json"))) == 3, seconds=10)
    summaries = {p.name: json.loads(p.read_text()) for p in daemon.path("done").glob("*.summary.json")}
    assert len(summaries) == 3, files(daemon.path("failed"))
    [long_summary] = [s for s in summaries.values() if s["original_name"] == long_name]
    short = short_name(long_name)
    assert long_summary["name"] == short and len(os.fsencode(short)) <= 255 - 24 and long_summary["succeeded"] == 3
    assert short != short_name("L" * 250 + "M.txt")  # distinct long names stay distinct
    assert any(s["name"] == latin and s["succeeded"] == 2 for s in summaries.values())
    assert any(s["name"] == "bom.txt" and s["succeeded"] == 1 for s in summaries.values())
    assert os.path.exists(os.path.join(os.fsencode(daemon.path("done")), b"caf\xe9-\xff.out.txt"))
    assert files(daemon.path("processing")) == [] and files(daemon.path("failed")) == []
    stop(daemon)
    assert open_fds() <= before


def test_a_long_name_left_in_processing_is_taken_up_under_a_short_one(tmp_path: Path) -> None:
    """A 255-byte name found in processing/ (no room for its work files) is renamed and processed."""
    daemon = make(tmp_path)
    long_name = "P" * 255
    write_lines(daemon.path("processing", long_name), 2)
    daemon.service.startService()
    daemon.pump(lambda: bool(list(daemon.path("done").glob("*.summary.json"))), seconds=5)
    [summary] = [json.loads(p.read_text()) for p in daemon.path("done").glob("*.summary.json")]
    assert summary["name"] == short_name(long_name) and summary["succeeded"] == 2
    assert files(daemon.path("processing")) == []
    stop(daemon)


def test_planted_links_at_work_and_output_names_are_never_followed(tmp_path: Path) -> None:
    """A symlink planted where the output, a summary or a done/ name will be is replaced or avoided,
    never written through; outputs and summaries are no more readable than the input."""
    daemon = make(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    processing, done = daemon.path("processing"), daemon.path("done")
    (processing / ".plant.txt.output").symlink_to(victim)
    (done / "plant.txt.summary.json").symlink_to(victim)
    src = daemon.path("incoming", "plant.txt")
    write_lines(src, 3)
    src.chmod(0o640)
    daemon.path("incoming", "plant.txt.ready").touch()
    daemon.service.startService()
    daemon.pump(lambda: bool(list(done.glob("plant*.summary.json"))) and not list(processing.iterdir()), seconds=5)
    assert victim.read_text() == "precious\n"
    [summary_path] = [p for p in done.glob("plant*.summary.json") if not p.is_symlink()]
    summary = json.loads(summary_path.read_text())
    assert summary["succeeded"] == 3 and summary["name"] != "plant.txt"  # the planted name was avoided
    output = Path(summary["output"])
    assert output.read_text().count("\n") == 3
    assert stat.S_IMODE(os.stat(output).st_mode) & ~0o640 == 0
    assert stat.S_IMODE(os.stat(summary_path).st_mode) & ~0o640 == 0
    stop(daemon)


def test_restart_with_a_planted_output_link_starts_the_file_over(tmp_path: Path) -> None:
    """After a crash, an output in processing/ that is a link (or a FIFO) is not ours: it is dropped and
    the file is processed from the start, the link's target untouched."""
    daemon = make(tmp_path)
    processing = daemon.path("processing")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    write_lines(processing / "again.txt", 2)
    (processing / ".again.txt.output").symlink_to(victim)
    write_lines(processing / "piped.txt", 2)
    os.mkfifo(processing / ".piped.txt.output")
    with deadline(20):
        daemon.service.startService()
        daemon.pump(lambda: len(list(daemon.path("done").glob("*.summary.json"))) == 2, seconds=5)
    assert victim.read_text() == "precious\n"
    for name in ("again", "piped"):
        assert daemon.path("done", f"{name}.out.txt").read_text().count("\n") == 2
    stop(daemon)


def test_input_check_accepts_bom_and_deep_json(tmp_path: Path) -> None:
    """The input check takes a BOM like the command line, and JSON too deep to parse is left to the engine
    (one error line) rather than crashing the check."""
    path = tmp_path / "in.txt"
    path.write_bytes(b"\xef\xbb\xbf[[1]]\n")
    check_input(str(path))
    path.write_bytes(b"[" * 100_000 + b"]" * 100_000 + b"\n")
    check_input(str(path))
    os.mkfifo(tmp_path / "fifo")
    with deadline(5), pytest.raises(Exception, match="FIFO"):
        check_input(str(tmp_path / "fifo"))


def test_sidecar_allow_is_checked_when_the_service_is_built(tmp_path: Path) -> None:
    """An operator's --sidecar-allow with a key that can never be per-file is refused up front."""
    base = BatchConfig(deployment_name="d", input_data_path="i", output_data_path="o")
    with pytest.raises(ValueError, match="output-data-path"):
        WatchDirService(str(tmp_path), base, Clock(), None,  # type: ignore[arg-type]
                        sidecar_allow=frozenset({"output-data-path"}))


class LinesLostBatch:
    """A batch whose run ends with lines that got no output line and no stop reason."""

    def __init__(self, config: BatchConfig, reactor: Any, **kw: Any) -> None:
        self.config = config

    async def run(self) -> Summary:
        return Summary(lines=3, succeeded=1, failed=0, retried=0, not_processed=2, elapsed=0.1, stopped_early=None)

    def stop(self, reason: str, grace: float | None = None) -> None:
        pass


def test_lines_without_output_send_the_file_to_failed_with_a_non_zero_exit_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that leaves lines without an output line is not done: failed/ with the count and a summary
    whose exit_code is the engine's (non-zero)."""
    monkeypatch.setattr("seldon_batch_tx.daemon.service.Batch", LinesLostBatch)
    daemon = make(tmp_path)
    write_lines(daemon.path("incoming", "lossy.txt"), 3)
    daemon.path("incoming", "lossy.txt.ready").touch()
    daemon.service.startService()
    daemon.pump(lambda: daemon.path("failed", "lossy.txt.reason.txt").exists(), seconds=3)
    assert "2 line(s) got no output line" in reason(daemon, "lossy.txt")
    summary = json.loads(daemon.path("failed", "lossy.txt.summary.json").read_text())
    assert summary["not_processed"] == 2 and summary["exit_code"] != 0
    assert files(daemon.path("done")) == []
    stop(daemon)


def test_a_fifo_renamed_in_is_refused_without_blocking(tmp_path: Path) -> None:
    """The rename path (inotify) takes a file without waiting for a scan, with the same guarded open."""
    daemon = make(tmp_path)
    daemon.service.startService()
    os.mkfifo(daemon.path("incoming", ".pipe.txt.part"))
    os.rename(daemon.path("incoming", ".pipe.txt.part"), daemon.path("incoming", "pipe.txt"))
    polls = daemon.service.polls
    with deadline(10):
        daemon.service.note_renamed_in("pipe.txt")
        daemon.clock.advance(0)
    assert daemon.service.polls == polls  # no scan: the renamed file alone was looked at
    assert "FIFO" in reason(daemon, "pipe.txt")
    stop(daemon)


def test_a_left_over_file_that_fails_to_prepare_goes_to_failed_after_a_restart(tmp_path: Path) -> None:
    """A file found in processing/ at start whose sidecar cannot apply, or whose first lines are not JSON,
    goes to failed/ once: no loop of retakes."""
    daemon = make(tmp_path)
    processing = daemon.path("processing")
    write_lines(processing / "sidecar.txt", 2)
    (processing / "sidecar.txt.json").write_text(json.dumps({"shard-index": 5}))
    (processing / "prose.txt").write_text("not json\nat all\n")
    daemon.service.startService()
    daemon.pump(seconds=5)
    assert "--sidecar-allow shard-index" in reason(daemon, "sidecar.txt")
    assert "JSON" in reason(daemon, "prose.txt")
    assert files(processing) == [] and daemon.model.bodies == []
    assert len([e for e in daemon.registry.entries() if e.stats.state == "failed"]) == 2
    stop(daemon)


def test_a_reject_that_finds_no_free_name_in_failed_leaves_the_file_and_writes_no_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Claim, settle and reject share one free-name rename (``WatchDir.rename_free``). A reject that
    found no free name used to write ``NAME.reason.txt`` in failed/ for a file it had not moved; now,
    like a claim and a settle, it leaves the file where it is and does not take it again while unchanged."""
    daemon = make(tmp_path)
    (daemon.path("failed") / "link.txt").write_text("taken\n")
    monkeypatch.setattr(WatchDir, "free_name", lambda self, name, *dirs: "link.txt")
    daemon.path("incoming", "link.txt").symlink_to(tmp_path / "nowhere")
    daemon.service.startService()
    daemon.pump(seconds=3)
    stop(daemon)
    assert daemon.path("incoming", "link.txt").is_symlink()
    assert not daemon.path("failed", "link.txt.reason.txt").exists()
    assert daemon.path("failed", "link.txt").read_text() == "taken\n"
    assert (str(daemon.path("incoming")), "link.txt") in daemon.service._skip
