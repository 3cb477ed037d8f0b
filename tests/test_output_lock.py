"""One writer per output, outputs that never follow planted links, and resumes that change nothing
they refuse: real files, real locks, real processes (the CLI against a loopback server)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from seldon_batch_tx.outputs.resume import ResumeError, prepare_resume
from seldon_batch_tx.outputs.verify import verify
from seldon_batch_tx.outputs.writer import LineWriter, OutputFile, OutputLocked, OutputRefused, lock_holder
from tests.faultserver import FaultServer
from tests.loopback import loopback_env
from tests.processes import stop_group, wait_until
from tests.servers import REPO_ROOT

CLI = str(REPO_ROOT / ".venv" / "bin" / "seldon-batch-processor")
#: A child that locks an output as a run does and holds it until its stdin closes.
HOLDER = ("import sys; from seldon_batch_tx.outputs.writer import OutputFile; o = OutputFile(sys.argv[1]); "
          "print('locked', flush=True); sys.stdin.read()")


def ok(index: int, batch_id: str = "b1") -> str:
    return json.dumps({"data": {"ndarray": [[index]]}, "meta": {"tags": {"batch_id": batch_id, "batch_index": index}}})


def err(index: int, batch_id: str = "b1") -> str:
    return json.dumps({"status": {"code": 503, "info": "http_503", "reason": "x", "status": "FAILURE"},
                       "meta": {"tags": {"batch_id": batch_id, "batch_index": index}}})


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock on tmp_path/out.txt (which holds two lines)."""
    out = tmp_path / "out.txt"
    out.write_text(ok(0) + "\n" + ok(1) + "\n")
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT, start_new_session=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "locked"
        yield child
    finally:
        stop_group(child, timeout=10.0)


def test_a_second_writer_is_refused_names_the_holder_and_changes_nothing(
        tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    """Whether it would empty the file or resume it, a second run is refused before touching it."""
    out = tmp_path / "out.txt"
    before = out.read_bytes()
    for append in (False, True):
        with pytest.raises(OutputLocked) as caught:
            LineWriter(str(out), append=append)
        assert f"process {holder.pid} (python" in str(caught.value) and " -c)" in str(caught.value)
        assert "seldon_batch_tx" not in str(caught.value)  # its program, never its arguments
    with pytest.raises(OutputLocked):
        prepare_resume(str(out), None, total=2, retry_failed=True)
    assert out.read_bytes() == before
    holder.stdin.close()  # type: ignore[union-attr]
    holder.wait(timeout=10)
    LineWriter(str(out)).close()  # free again once the holder is gone
    assert out.read_bytes() == b""


def test_the_lock_holds_through_resume_reads_and_the_retry_failed_rewrite(tmp_path: Path) -> None:
    """Resume opens and closes the file and --retry-failed renames a new one into place: the run
    keeps its lock on whatever file the path names, and appends to it."""
    out = tmp_path / "out.txt"
    out.write_text(ok(0) + "\n" + err(1) + "\n" + ok(2) + "\n")
    os.chmod(out, 0o640)
    writer = LineWriter(str(out), append=True)
    try:
        state = prepare_resume(writer.output, None, total=4, retry_failed=True)
        assert state is not None and state.dropped_failures == 1
        assert stat.S_IMODE(out.stat().st_mode) == 0o640  # the rewrite keeps the permissions
        assert os.fstat(writer.output.fd).st_ino == out.stat().st_ino  # the locked file is the one named
        for _ in range(3):
            with pytest.raises(OutputLocked, match="this process"):
                OutputFile(str(out))
        writer.write(json.loads(ok(1)))
    finally:
        writer.close()
    assert out.read_text() == ok(0) + "\n" + ok(2) + "\n" + json.dumps(json.loads(ok(1)), separators=(",", ":")) + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]  # no temp file left


def test_links_and_special_files_are_never_written_through(tmp_path: Path) -> None:
    """A symlink or hard link planted where the output goes, a FIFO, a directory, the input
    itself: refused with a clear reason, nothing written anywhere, nothing blocks."""
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    link = tmp_path / "out-link.txt"
    link.symlink_to(target)
    hard = tmp_path / "out-hard.txt"
    os.link(target, hard)
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    folder = tmp_path / "dir"
    folder.mkdir()
    cases = {link: "symbolic link", hard: "hard links", fifo: "FIFO", folder: "not a regular file"}
    started = time.monotonic()
    for path, why in cases.items():
        for append in (False, True):
            with pytest.raises(OutputRefused, match=why):
                LineWriter(str(path), append=append)
        with pytest.raises(OutputRefused, match=why):
            prepare_resume(str(path), None, total=3)
    assert time.monotonic() - started < 10
    assert target.read_text() == "keep me\n" and link.is_symlink()
    source = tmp_path / "in.txt"
    source.write_text("[1]\n")
    with pytest.raises(OutputRefused, match="is the input file"):
        LineWriter(str(source), not_same_as=str(source))
    assert source.read_text() == "[1]\n"


def test_dev_null_takes_any_number_of_writers() -> None:
    """A character device (a benchmark's /dev/null) is written without a lock: nothing to protect."""
    first, second = LineWriter(os.devnull, fsync_interval=0.1), LineWriter(os.devnull, fsync_interval=0.1)
    for writer in (first, second):
        writer.write({"a": 1})
        writer.flush(now=1.0)
        writer.close()


def test_created_outputs_get_the_mode_asked_for_less_the_umask(tmp_path: Path) -> None:
    """The daemon passes the input's permission bits; an existing file keeps its own."""
    old = os.umask(0o027)
    try:
        LineWriter(str(tmp_path / "a.txt"), mode=0o600).close()
        LineWriter(str(tmp_path / "b.txt")).close()
        existing = tmp_path / "c.txt"
        existing.write_text("x\n")
        os.chmod(existing, 0o604)
        LineWriter(str(existing), mode=0o600).close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE(existing.stat().st_mode) == 0o604 and existing.read_text() == ""


#: A torn tail that looks like ours: an accepted file would lose it, a refused one must keep it.
OUR_TAIL = '{"data": {"nd'


@pytest.mark.parametrize("lines, tail", [
    pytest.param([ok(0), ok(1), "plain text, not ours"], OUR_TAIL, id="foreign-last-line"),
    pytest.param([ok(0), ok(1)], "not ours, no newline", id="foreign-torn-tail"),
    pytest.param([ok(0), ok(1), '{"data": 1, "meta": {"tags": {"batch_id": "b1", "batch_index": 4.0}}}'],
                 OUR_TAIL, id="float-index"),
    pytest.param([ok(0), '{"meta": {"tags": {"batch_id": "b1", "batch_index": true}}}'], OUR_TAIL,
                 id="bool-index"),
    pytest.param([ok(0), ok(2**62)], OUR_TAIL, id="huge-index"),
    pytest.param([ok(0), ok(int("9" * 4000))], OUR_TAIL, id="4000-digit-index"),
    pytest.param([ok(0), ok(-3)], OUR_TAIL, id="negative-index"),
    pytest.param([ok(0), ok(5)], OUR_TAIL, id="index-past-the-input"),
    pytest.param([ok(0), ok(1, "other")], OUR_TAIL, id="two-batches"),
    pytest.param([ok(0), "[" * 100_000 + "]" * 100_000], OUR_TAIL, id="nested-100000-deep"),
    pytest.param([ok(0), "\x00\x00"], OUR_TAIL, id="nul"),
])
def test_a_refused_resume_changes_nothing(tmp_path: Path, lines: list[str], tail: str) -> None:
    """Check first, read-only; only then repair: a file refused keeps every byte, torn tail
    included, and a huge index costs no memory (the bitmaps never grow past the input)."""
    out = tmp_path / "out.txt"
    out.write_bytes("".join(line + "\n" for line in lines).encode() + tail.encode())
    before = out.read_bytes()
    for retry_failed in (False, True):
        tracemalloc.start()
        try:
            with pytest.raises(ResumeError, match="nothing in it was changed"):
                prepare_resume(str(out), None, total=5, retry_failed=retry_failed)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 8 << 20, peak
        assert out.read_bytes() == before


def test_indexes_outside_the_input_are_named(tmp_path: Path) -> None:
    """The message says which lines hold which out-of-range index, huge ones by their size."""
    out = tmp_path / "out.txt"
    out.write_text(ok(0) + "\n" + ok(10**40) + "\n" + ok(-1) + "\n")
    with pytest.raises(ResumeError) as caught:
        prepare_resume(str(out), None, total=3)
    assert "2 lines have a batch_index outside the input's lines 0..2" in str(caught.value)
    assert "line 2: <41-digit number>" in str(caught.value) and "line 3: -1" in str(caught.value)


TOKEN = "lock-Secret-0123456789abcdef"


def _cli(server: FaultServer, source: Path, out: Path, *extra: str) -> list[str]:
    return [CLI, "-d", "model", "-g", "seldon", "-h", server.rest_host, "-i", str(source), "-o", str(out),
            "-w", "2", "-r", "2", "--timeout", "10", "-l", "warning", "-u", "lock-test", "--resume", *extra]


def _locked_by(path: Path, pid: int) -> bool:
    """Whether /proc/locks shows ``pid`` holding ``path`` (read only: polling never takes the lock)."""
    try:
        return lock_holder(path.stat()).startswith(f"process {pid} ")
    except FileNotFoundError:
        return False


def test_two_cli_runs_on_one_output_never_both_append(tmp_path: Path) -> None:
    """Two real ``seldon-batch-processor --resume`` processes on one output: the one that comes
    second while the first is writing exits 2 with one line naming the first's pid; started at
    the same moment, exactly one writes. Every input line ends up exactly once."""
    lines = 200
    source = tmp_path / "in.txt"
    source.write_text("".join(f"[[{i}.5]]\n" for i in range(lines)))
    env = loopback_env()
    with FaultServer(delay=0.03) as server:  # ~3 s of requests a run with two workers
        out = tmp_path / "out-sequential.txt"
        first = subprocess.Popen(_cli(server, source, out, "--call-credentials-token", TOKEN), env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            wait_until(lambda: _locked_by(out, first.pid), 60, "first run locking its output",
                       alive=lambda: first.poll() is None)
            second = subprocess.run(_cli(server, source, out), env=env, capture_output=True, text=True,
                                    timeout=60)
            _, first_err = first.communicate(timeout=120)
        finally:
            stop_group(first, timeout=10.0)
        assert first.returncode == 0, first_err[-2000:]
        assert second.returncode == 2, second.stderr[-2000:]
        assert second.stderr.count("\n") == 1 and f"locked by process {first.pid} (" in second.stderr
        assert "seldon-batch-processor)" in second.stderr and TOKEN not in second.stderr  # another run's token
        report = verify(str(source), str(out))
        assert report.complete and report.lines == lines

        for attempt in range(2):
            out = tmp_path / f"out-together-{attempt}.txt"
            runs = [subprocess.Popen(_cli(server, source, out), env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True) for _ in range(2)]
            try:
                results = [(run.pid, run.communicate(timeout=120)[1], run.returncode) for run in runs]
            finally:
                for run in runs:
                    stop_group(run, timeout=10.0)
            codes = sorted(code for _, _, code in results)
            assert codes in ([0, 0], [0, 2]), results
            for pid, stderr, code in results:
                if code == 2:
                    assert "locked by process" in stderr and str(pid) not in stderr.split("locked by")[1][:20]
            report = verify(str(source), str(out))
            assert report.complete and report.lines == lines and not report.duplicated.count, report.as_dict()
