"""The one reader of output lines (resume.line_info) on anything, and verify/merge on hostile
output files: every line is readable or counted as unreadable with its number, never a crash."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from seldon_batch_tx.outputs import merge, verify
from seldon_batch_tx.outputs.lines import LineInfo, line_info

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20)


def tags_line(index: Any, status: Any = None, batch_id: Any = "b") -> bytes:
    record: dict[str, Any] = {"meta": {"tags": {"batch_id": batch_id, "batch_index": index}}}
    if status is not None:
        record["status"] = status
    return json.dumps(record).encode()


def check(raw: bytes) -> LineInfo | None:
    """line_info's contract: a LineInfo with an int index and a bool, or ValueError; nothing else."""
    try:
        info = line_info(raw)
    except ValueError:
        return None
    assert type(info.index) is int and type(info.failed) is bool
    assert info.batch_id is None or isinstance(info.batch_id, str)
    return info


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
@example(b"[" * 100_000 + b"]" * 100_000)
@example(b'{"meta": {"tags": {"batch_index": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}}")
@example(b"\xef\xbb\xbf" + tags_line(1))
@example(tags_line(1).replace(b"{", b"{\x00", 1))
@example(b'{"meta": {"tags": {"batch_index": 1' + b"0" * 5000 + b"}}}")
@example(tags_line(1).decode().encode("utf-16"))
@example(b"\xff\xfe" + tags_line(1))
def test_line_info_on_arbitrary_bytes(raw: bytes) -> None:
    """Any bytes: an answer or ValueError. UTF-16, a BOM, NUL, deep nesting, 5,000 digits: ValueError."""
    info = check(raw)
    if info is not None:
        assert raw.decode("utf-8")  # only strict UTF-8 is read
        assert b"\x00" not in raw.strip()


@settings(max_examples=300, deadline=None)
@given(index=JSON, status=JSON, batch_id=JSON)
def test_line_info_on_arbitrary_json(index: Any, status: Any, batch_id: Any) -> None:
    """One answer for every shape: an index only when it is an int (not bool, not float), an error
    line only when status is an object whose status is "FAILURE"."""
    raw = tags_line(index, status, batch_id)
    info = check(raw)
    is_index = isinstance(index, int) and not isinstance(index, bool)
    assert (info is not None) == is_index
    if info is not None:
        assert info.index == index
        assert info.failed == (isinstance(status, dict) and status.get("status") == "FAILURE")
        assert info.batch_id == (batch_id if isinstance(batch_id, str) else None)


HOSTILE = [
    b"[" * 100_000 + b"]" * 100_000,                       # nested 100,000 deep
    b'{"meta": {"tags": ' + b"[" * 50_000 + b"]" * 50_000 + b"}}",
    b"\xff\xfe\xfa not utf-8",
    b"\x00" * 10,
    tags_line(10**4000),                                    # a huge index
    tags_line(-7),
    tags_line(2.0),
    tags_line(True),
    b'{"meta": {"tags": {"batch_index": 1' + b"0" * 5000 + b"}}}",  # past Python's int digits limit
    b"x" * 300_000,                                         # longer than the line limit below
    b"",
]


def hostile_output(tmp_path: Path) -> tuple[Path, Path]:
    source = tmp_path / "in.txt"
    source.write_text("".join(f"[{i}]\n" for i in range(4)))
    out = tmp_path / "out.txt"
    good = [tags_line(i) for i in range(4)]
    out.write_bytes(b"\n".join([good[0], *HOSTILE[:6], good[1], *HOSTILE[6:], good[2], good[3]]) + b"\n")
    return source, out


def test_verify_counts_hostile_lines_with_their_numbers(tmp_path: Path) -> None:
    """Nested, non-UTF-8, NUL, huge/negative/float/bool indexes, over-long, blank: each one
    counted (out of range or unreadable, by line number), in bounded memory, never a crash."""
    source, out = hostile_output(tmp_path)
    tracemalloc.start()
    try:
        report = verify.verify(str(source), str(out), max_line_bytes=100_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak
    assert report.lines == 15 and report.seen.count == 4 and not report.missing and len(report.missing) == 0
    assert report.out_of_range_count == 2  # 10**4000 and -7
    assert report.unreadable == [2, 3, 4, 5, 9, 10, 11, 12, 13]
    assert "line 12: longer than 100000 bytes (300001 bytes)" in report.unreadable_reasons
    assert report.exit_code() == verify.EXIT_INCOMPLETE
    as_json = json.dumps(report.as_dict())
    assert "<4001-digit number>" in as_json and "-7" in as_json


def test_verify_command_on_a_hostile_output(tmp_path: Path, capsys: Any) -> None:
    """The command prints its report and exits 1 (incomplete); reasons name line numbers."""
    source, out = hostile_output(tmp_path)
    assert verify.main([str(source), str(out)]) == verify.EXIT_INCOMPLETE
    text = capsys.readouterr().out
    assert "unreadable lines: 9 (2-5, 9-13)" in text and "line 2: JSON nested too deeply" in text
    assert verify.main([str(source), str(out), "--json"]) == verify.EXIT_INCOMPLETE
    assert json.loads(capsys.readouterr().out)["unexpected"] == 2


def test_merge_refuses_hostile_shards_naming_lines_and_writes_nothing(tmp_path: Path, capsys: Any) -> None:
    """merge reads through the same reader: the hostile lines are problems with file and line."""
    source, out = hostile_output(tmp_path)
    merged = tmp_path / "merged.txt"
    assert merge.main(["-o", str(merged), "--input", str(source), str(out)]) == merge.EXIT_INVALID
    err = capsys.readouterr().err
    assert f"{out} line 2: JSON nested too deeply" in err and f"{out} line 4: not UTF-8" in err
    assert "2 lines have a batch_index outside 0..3" in err and "<4001-digit number>" in err
    assert not merged.exists()


def test_merge_and_verify_agree_on_float_indexes_and_numeric_status(tmp_path: Path) -> None:
    """A float batch_index is unreadable for both; a numeric ``status: 1`` is a success for both."""
    source = tmp_path / "in.txt"
    source.write_text("[0]\n[1]\n")
    out = tmp_path / "out.txt"
    out.write_bytes(tags_line(0, {"status": 1}) + b"\n" + tags_line(1, {"status": "FAILURE"}) + b"\n")
    report = verify.verify(str(source), str(out))
    assert report.complete and list(report.failed) == [1]
    index = merge.merge([str(out)], str(tmp_path / "m.txt"), 2)
    assert index.failures == 1
    out.write_bytes(tags_line(0) + b"\n" + tags_line(1.0) + b"\n")
    assert verify.verify(str(source), str(out)).unreadable == [2]
    try:
        merge.merge([str(out)], str(tmp_path / "m2.txt"), 2)
    except merge.MergeError as e:
        assert "line 2: meta.tags.batch_index is not an integer (1.0)" in str(e)
    else:
        raise AssertionError("a float index was merged")
