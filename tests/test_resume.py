"""Resume: torn-line repair, the index scan and the --retry-failed rewrite, on real files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import globalLogPublisher

from seldon_batch_tx.resume import (
    IndexBitmap,
    ResumeError,
    line_info,
    prepare_resume,
    repair_torn_tail,
    scan_output,
)


def ok(index: int, batch_id: str = "b1") -> str:
    return json.dumps({"data": {"ndarray": [[index]]}, "meta": {"tags": {"batch_id": batch_id, "batch_index": index}}})


def err(index: int, batch_id: str = "b1") -> str:
    return json.dumps({"status": {"code": 503, "info": "http_503", "reason": "x", "status": "FAILURE"},
                       "meta": {"tags": {"batch_id": batch_id, "batch_index": index}}})


def write(path: Path, lines: list[str], tail: str = "") -> Path:
    path.write_text("".join(line + "\n" for line in lines) + tail)
    return path


def test_bitmap_grows_and_counts() -> None:
    """The bitmap is a set of ints of one bit each that grows past its size hint."""
    bits = IndexBitmap(8)
    assert bits.add(3) and not bits.add(3)
    assert bits.add(10_000_000)
    assert 3 in bits and 10_000_000 in bits and 4 not in bits and -1 not in bits
    assert len(bits) == 2 and list(bits) == [3, 10_000_000]
    bits.discard(3)
    assert 3 not in bits and len(bits) == 1
    assert len(bits._bits) < 3_000_000  # ~1.25 MB for ten million lines


def test_repair_torn_tail_keeps_whole_lines_and_logs_torn_bytes(tmp_path: Path) -> None:
    """A torn last line is cut off at the last newline and its bytes go to the log."""
    path = write(tmp_path / "out.txt", [ok(0), ok(1)], tail='{"data": {"ndarr')
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)  # type: ignore[arg-type]
    try:
        torn = repair_torn_tail(str(path))
    finally:
        globalLogPublisher.removeObserver(events.append)  # type: ignore[arg-type]
    assert torn == b'{"data": {"ndarr'
    assert path.read_text() == ok(0) + "\n" + ok(1) + "\n"
    assert any(e.get("torn") == torn for e in events)
    assert repair_torn_tail(str(path)) == b""  # nothing more to cut


def test_repair_torn_tail_of_a_single_torn_line(tmp_path: Path) -> None:
    """A file holding only a torn line becomes empty."""
    path = tmp_path / "out.txt"
    path.write_bytes(b"x" * 100_000)  # longer than one backwards read
    assert repair_torn_tail(str(path)) == b"x" * 100_000
    assert path.read_bytes() == b""


def test_scan_finds_done_failed_and_duplicates(tmp_path: Path) -> None:
    """The scan records every batch_index, which are errors, duplicates and the batch id."""
    path = write(tmp_path / "out.txt", [ok(0), err(2), ok(5), ok(5), err(7), ok(7)])
    scan = scan_output(str(path))
    assert list(scan.done) == [0, 2, 5, 7]
    assert list(scan.failed) == [2]  # 7 also has a success
    assert list(scan.duplicates) == [5, 7]
    assert scan.batch_id == "b1" and scan.lines == 6 and scan.failure_lines == 2


def test_line_info_accepts_float_indexes_and_numeric_failure_status() -> None:
    """A float batch_index (gRPC) counts as its int; status 1 is FAILURE as the real server writes it."""
    info = line_info(b'{"status": {"status": 1}, "meta": {"tags": {"batch_index": 4.0}}}')
    assert info.index == 4 and info.failed
    with pytest.raises(ValueError):
        line_info(b'{"meta": {}}')


def test_prepare_resume_reuses_the_files_batch_id(tmp_path: Path) -> None:
    """Resume keeps the file's lines and batch id; only lines without output are pending."""
    path = write(tmp_path / "out.txt", [ok(0), err(1), ok(3)], tail="{torn")
    state = prepare_resume(str(path), None)
    assert state is not None
    assert state.batch_id == "b1" and state.succeeded == 2 and state.failed == 1
    assert [i for i in range(5) if state.pending(i)] == [2, 4]
    assert state.torn == b"{torn"
    assert path.read_text().count("\n") == 3 and not path.read_text().endswith("{torn")


def test_prepare_resume_refuses_another_batch_id(tmp_path: Path) -> None:
    """A --batch-id that contradicts the file's is refused with a clear message."""
    path = write(tmp_path / "out.txt", [ok(0)])
    with pytest.raises(ResumeError, match="written with batch id b1"):
        prepare_resume(str(path), "other")
    assert prepare_resume(str(path), "b1") is not None


def test_prepare_resume_refuses_foreign_lines(tmp_path: Path) -> None:
    """A file whose lines are not ours (or of two batches) is not appended to."""
    with pytest.raises(ResumeError, match="line"):
        prepare_resume(str(write(tmp_path / "a.txt", [ok(0), "not json"])), None)
    with pytest.raises(ResumeError, match="several batches"):
        prepare_resume(str(write(tmp_path / "b.txt", [ok(0), ok(1, "b2")])), None)


def test_nothing_to_resume(tmp_path: Path) -> None:
    """A missing or empty output (or one holding only a torn line) starts from scratch."""
    assert prepare_resume(str(tmp_path / "missing.txt"), None) is None
    assert prepare_resume(str(write(tmp_path / "empty.txt", [])), None) is None
    assert prepare_resume(str(write(tmp_path / "torn.txt", [], tail='{"da')), None) is None


def test_retry_failed_rewrites_without_error_lines(tmp_path: Path) -> None:
    """--retry-failed drops error lines (atomically) so they are sent again; successes stay."""
    path = write(tmp_path / "out.txt", [ok(0), err(1), ok(2), err(3)])
    state = prepare_resume(str(path), None, retry_failed=True)
    assert state is not None
    assert state.dropped_failures == 2 and state.failed == 0 and state.succeeded == 2
    assert [i for i in range(4) if state.pending(i)] == [1, 3]
    assert path.read_text() == ok(0) + "\n" + ok(2) + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]  # no temp file left
