"""The watch directory against hostile files: links, FIFOs, sockets, hard links, planted links, long
and non-UTF-8 names. In-process with a Clock, real files and an in-memory model. Bad sidecars:
test_watchdir_sidecars_hostile.py; files that fail: test_watchdir_failures.py.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

from seldon_batch_tx.daemon.layout import short_name
from tests.test_watchdir import Daemon, files, write_lines
from tests.watchdir_hostile_helpers import deadline, make, reason, stop

SECRET = "TOP-SECRET-do-not-send"


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
