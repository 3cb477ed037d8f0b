"""Resume: torn-line repair, the index scan and the --retry-failed rewrite, on real files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import globalLogPublisher

from seldon_batch_tx.outputs.lines import IndexBitmap, line_info
from seldon_batch_tx.outputs.resume import ResumeError, cut_torn_tail, prepare_resume, scan_output
from seldon_batch_tx.outputs.writer import OutputFile


def ok(index: int, batch_id: str = "b1") -> str:
    return json.dumps({"data": {"ndarray": [[index]]}, "meta": {"tags": {"batch_id": batch_id, "batch_index": index}}})


def err(index: int, batch_id: str = "b1") -> str:
    return json.dumps({"status": {"code": 503, "info": "http_503", "reason": "x", "status": "FAILURE"},
                       "meta": {"tags": {"batch_id": batch_id, "batch_index": index}}})


def write(path: Path, lines: list[str], tail: str = "") -> Path:
    path.write_text("".join(line + "\n" for line in lines) + tail)
    return path


def test_bitmap_counts_and_never_grows() -> None:
    """The bitmap is a set of ints of one bit each, sized once: indexes outside it are refused."""
    bits = IndexBitmap(10_000_001)
    assert bits.add(3) and not bits.add(3)
    assert bits.add(10_000_000)
    assert 3 in bits and 10_000_000 in bits and 4 not in bits and -1 not in bits and 10**100 not in bits
    assert len(bits) == 2 and list(bits) == [3, 10_000_000]
    bits.discard(3)
    bits.discard(10**100)
    assert 3 not in bits and len(bits) == 1
    assert len(bits._bits) < 1_300_000  # ~1.25 MB for ten million lines
    for outside in (10_000_001, -1, 10**4000):
        with pytest.raises(IndexError):
            bits.add(outside)
    assert len(bits._bits) < 1_300_000


def test_torn_tail_is_cut_and_its_bytes_logged(tmp_path: Path) -> None:
    """A torn last line is cut off at the last newline and its bytes go to the log."""
    path = write(tmp_path / "out.txt", [ok(0), ok(1)], tail='{"data": {"ndarr')
    scan = scan_output(str(path), 2)
    assert scan.torn is not None and scan.lines == 2
    assert path.read_text().endswith('{"data": {"ndarr')  # the scan only reads
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)  # type: ignore[arg-type]
    output = OutputFile(str(path))
    try:
        torn = cut_torn_tail(output, scan.torn)
    finally:
        output.close()
        globalLogPublisher.removeObserver(events.append)  # type: ignore[arg-type]
    assert torn == b'{"data": {"ndarr'
    assert path.read_text() == ok(0) + "\n" + ok(1) + "\n"
    assert any(e.get("torn") == torn for e in events)
    assert scan_output(str(path), 2).torn is None  # nothing more to cut


def test_a_long_torn_line_is_cut_without_being_held(tmp_path: Path) -> None:
    """A file holding only a torn line longer than the line limit becomes empty; the log keeps its head."""
    path = tmp_path / "out.txt"
    path.write_bytes(b"{" + b"x" * 300_000)
    state = prepare_resume(str(path), None, total=5, max_line_bytes=100_000)
    assert state is None and path.read_bytes() == b""


def test_scan_finds_done_failed_and_duplicates(tmp_path: Path) -> None:
    """The scan records every batch_index, which are errors, duplicates and the batch id."""
    path = write(tmp_path / "out.txt", [ok(0), err(2), ok(5), ok(5), err(7), ok(7)])
    scan = scan_output(str(path), 8)
    assert list(scan.done) == [0, 2, 5, 7]
    assert list(scan.failed) == [2]  # 7 also has a success
    assert list(scan.duplicates) == [5, 7]
    assert scan.batch_id == "b1" and scan.lines == 6 and scan.failure_lines == 2


def test_line_info_has_one_answer_for_indexes_and_status() -> None:
    """batch_index must be an int (3.0 or true is no index); only status.status "FAILURE" is an error
    line: the real Seldon microservice's numeric ``status: 1`` comes with a success."""
    info = line_info(b'{"status": {"status": 1}, "meta": {"tags": {"batch_index": 4}}}')
    assert info.index == 4 and not info.failed
    assert line_info(b'{"status": {"status": "FAILURE"}, "meta": {"tags": {"batch_index": 4}}}').failed
    assert not line_info(b'{"status": "FAILURE", "meta": {"tags": {"batch_index": 4}}}').failed
    for bad in (b'{"meta": {}}', b'{"meta": {"tags": {"batch_index": 4.0}}}',
                b'{"meta": {"tags": {"batch_index": true}}}', b'{"meta": {"tags": {"batch_index": "4"}}}',
                b"[1]", b"", b"\xff{}", b'\xef\xbb\xbf{"meta": {"tags": {"batch_index": 4}}}',
                b"[" * 100_000 + b"]" * 100_000):
        with pytest.raises(ValueError):
            line_info(bad)
    assert line_info(b'{"meta": {"tags": {"batch_index": -3}}}').index == -3  # an int; callers check the range


def test_prepare_resume_reuses_the_files_batch_id(tmp_path: Path) -> None:
    """Resume keeps the file's lines and batch id; only lines without output are pending."""
    path = write(tmp_path / "out.txt", [ok(0), err(1), ok(3)], tail="{torn")
    state = prepare_resume(str(path), None, total=5)
    assert state is not None
    assert state.batch_id == "b1" and state.succeeded == 2 and state.failed == 1
    assert [i for i in range(5) if state.pending(i)] == [2, 4]
    assert state.torn == b"{torn"
    assert path.read_text().count("\n") == 3 and not path.read_text().endswith("{torn")


def test_prepare_resume_refuses_another_batch_id(tmp_path: Path) -> None:
    """A --batch-id that contradicts the file's is refused with a clear message."""
    path = write(tmp_path / "out.txt", [ok(0)])
    with pytest.raises(ResumeError, match="written with batch id b1"):
        prepare_resume(str(path), "other", total=5)
    assert prepare_resume(str(path), "b1", total=5) is not None


def test_prepare_resume_refuses_foreign_lines(tmp_path: Path) -> None:
    """A file whose lines are not ours (or of two batches) is not appended to."""
    with pytest.raises(ResumeError, match="line"):
        prepare_resume(str(write(tmp_path / "a.txt", [ok(0), "not json"])), None, total=5)
    with pytest.raises(ResumeError, match="several batches"):
        prepare_resume(str(write(tmp_path / "b.txt", [ok(0), ok(1, "b2")])), None, total=5)


def test_nothing_to_resume(tmp_path: Path) -> None:
    """A missing or empty output (or one holding only a torn line) starts from scratch."""
    assert prepare_resume(str(tmp_path / "missing.txt"), None, total=5) is None
    assert prepare_resume(str(write(tmp_path / "empty.txt", [])), None, total=5) is None
    assert prepare_resume(str(write(tmp_path / "torn.txt", [], tail='{"da')), None, total=5) is None


def test_retry_failed_rewrites_without_error_lines(tmp_path: Path) -> None:
    """--retry-failed drops error lines (atomically) so they are sent again; successes stay."""
    path = write(tmp_path / "out.txt", [ok(0), err(1), ok(2), err(3)])
    state = prepare_resume(str(path), None, total=5, retry_failed=True)
    assert state is not None
    assert state.dropped_failures == 2 and state.failed == 0 and state.succeeded == 2
    assert [i for i in range(4) if state.pending(i)] == [1, 3]
    assert path.read_text() == ok(0) + "\n" + ok(2) + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]  # no temp file left


def test_a_foreign_json_file_without_a_newline_is_refused_unchanged(tmp_path: Path) -> None:
    """``json.dump`` writes one value and no newline: that is someone's file, not a torn line of ours,
    so --resume refuses it and changes nothing (it used to cut it as a torn tail and overwrite it)."""
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"model": "prod", "threshold": 0.7}))
    scan = scan_output(str(settings), 10)
    assert scan.torn is None and scan.bad_count == 1
    torn = tmp_path / "torn.jsonl"
    torn.write_text('{"data": {"ndarray": [[1]]}, "meta": {"tags": {"batch_index": 0, "batch_id": "b"')
    assert scan_output(str(torn), 10).torn is not None  # cut short: an interrupted write of ours
