"""A full disk when the daemon files a failed input (issue 25): the input is moved to failed/ (a
rename needs no space), its reason is written first, and the log says what really happened; before,
the summary took the last space, the reason was lost and the log said "could not move" although
the file had moved. A real (tiny) tmpfs filled to its last page, the real filing code."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import globalLogPublisher

from seldon_batch_tx.daemon.claims import Job
from seldon_batch_tx.daemon.filing import file_failed
from seldon_batch_tx.daemon.layout import WatchDir
from seldon_batch_tx.dashboard.registry import BatchEntry
from seldon_batch_tx.pipeline.stats import BatchStats
from seldon_batch_tx.pipeline.summary import Summary

PAGE = 4096


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True,
                          check=False)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (the test needs root): {done.stderr!r}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_to_last_page(mount: Path) -> None:
    """Fill the filesystem, then free exactly one page: one small file still fits, a second does not."""
    filler = mount / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * PAGE)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    os.truncate(filler, os.path.getsize(filler) - PAGE)


def test_a_full_disk_keeps_the_reason_and_logs_what_happened(tiny_disk: Path) -> None:
    dirs = WatchDir.at(str(tiny_disk / "watch"))
    dirs.create()
    (Path(dirs.processing) / "in.txt").write_bytes(b"[[1]]\n")
    entry = BatchEntry(BatchStats("b1", "in.txt"))
    job = Job("in.txt", -1, entry, st=os.stat(Path(dirs.processing) / "in.txt"))
    summary = Summary(lines=1, succeeded=0, failed=1, retried=0, not_processed=0, elapsed=1.0,
                      stopped_early="--max-failures 1 reached")
    fill_to_last_page(tiny_disk)
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        file_failed(dirs, job, "--max-failures 1 reached", summary)
    finally:
        globalLogPublisher.removeObserver(seen.append)
    failed = Path(dirs.failed)
    assert (failed / "in.txt").exists()  # moved: a rename needs no space
    assert (failed / "in.txt.reason.txt").read_text() == "--max-failures 1 reached\n"
    texts = [str(e.get("log_format", "")) for e in seen]
    assert not any("could not move" in t for t in texts), texts
    assert any("could not write its summary" in t for t in texts), texts
