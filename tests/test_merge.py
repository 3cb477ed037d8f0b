"""``seldon-batch merge``: order, byte-exact copies, and refusal to hide holes or overlaps."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest

from seldon_batch_tx.outputs.merge import EXIT_INVALID, EXIT_OK, EXIT_USAGE, main


def line(index: int, *, failed: bool = False, batch_id: str = "b") -> bytes:
    tags = {"batch_id": batch_id, "batch_instance_id": f"id-{index}", "batch_index": index}
    record: dict[str, object] = {"meta": {"tags": tags}}
    if failed:
        record["status"] = {"code": 500, "info": "http_error", "reason": "boom", "status": "FAILURE"}
    else:
        record["data"] = {"names": [], "ndarray": [[index, "x"]]}
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def write_shards(tmp_path: Path, total: int, count: int, *, shuffle: bool = True,
                 seed: int = 7) -> list[str]:
    """Shard outputs as sharded runs write them: each shard's lines, in completion (random) order."""
    rng = random.Random(seed)
    paths = []
    for shard in range(count):
        indexes = list(range(shard, total, count))
        if shuffle:
            rng.shuffle(indexes)
        path = tmp_path / f"out.shard-{shard}-of-{count}.jsonl"
        path.write_bytes(b"".join(line(i, failed=i % 5 == 0) for i in indexes))
        paths.append(str(path))
    return paths


def test_unordered_shards_merge_in_index_order_byte_for_byte(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Shuffled shard outputs come out in batch_index order, each line exactly as written."""
    shards = write_shards(tmp_path, 100, 3)
    out = tmp_path / "merged.jsonl"
    assert main(["-o", str(out), "--expected", "100", *shards]) == EXIT_OK
    assert out.read_bytes() == b"".join(line(i, failed=i % 5 == 0) for i in range(100))
    assert "merged 100 lines (80 succeeded, 20 failed) from 3 shard outputs" in capsys.readouterr().err


def test_input_gives_the_total(tmp_path: Path) -> None:
    """--input INPUT counts the input's lines, so the merge knows how many lines to expect."""
    shards = write_shards(tmp_path, 10, 2)
    source = tmp_path / "in.txt"
    source.write_text("".join(f"[{i}]\n" for i in range(10)))
    out = tmp_path / "merged.jsonl"
    assert main(["-o", str(out), "--input", str(source), *shards]) == EXIT_OK
    assert len(out.read_bytes().splitlines()) == 10


def test_missing_lines_fail_with_compact_ranges_and_write_nothing(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A lost shard and a lost line are named as index ranges; no output file appears."""
    shards = write_shards(tmp_path, 30, 3, shuffle=False)
    lines = Path(shards[0]).read_bytes().splitlines(keepends=True)
    Path(shards[0]).write_bytes(b"".join(lines[:-1]))  # drop index 27
    out = tmp_path / "merged.jsonl"
    assert main(["-o", str(out), "--expected", "32", shards[0], shards[2]]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert "missing lines" in err and "1, 4, 7, 10, 13" in err and "27" in err and "30-31" in err
    assert "nothing written" in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_missing_last_lines_need_the_total(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --expected a gap inside the range still fails; with it, missing last lines fail too."""
    shards = write_shards(tmp_path, 9, 3, shuffle=False)
    lines = Path(shards[1]).read_bytes().splitlines(keepends=True)
    Path(shards[1]).write_bytes(lines[0] + lines[2])  # drop index 4
    out = tmp_path / "merged.jsonl"
    assert main(["-o", str(out), *shards]) == EXIT_INVALID
    assert "batch_index outside 0..7" in capsys.readouterr().err  # index 8 proves a hole below it
    assert main(["-o", str(out), "--expected", "12", *write_shards(tmp_path, 9, 3)]) == EXIT_INVALID
    assert "3 missing lines, batch_index 9-11" in capsys.readouterr().err
    assert not out.exists()


def test_duplicated_lines_fail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same index in two files (a shard run twice, or a file given twice) is refused."""
    shards = write_shards(tmp_path, 12, 2)
    extra = tmp_path / "again.jsonl"
    extra.write_bytes(line(3) + line(4) + line(5))
    out = tmp_path / "merged.jsonl"
    assert main(["-o", str(out), "--expected", "12", *shards, str(extra)]) == EXIT_INVALID
    assert "3 duplicated lines, batch_index 3-5" in capsys.readouterr().err
    assert not out.exists()


def test_unreadable_line_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A torn last line (a crashed shard) is reported with its file and line number."""
    shards = write_shards(tmp_path, 6, 2, shuffle=False)
    with open(shards[1], "ab") as f:
        f.write(b'{"meta":{"tags":{"batch_')
    out = tmp_path / "merged.jsonl"
    assert main(["-o", str(out), "--expected", "6", *shards]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert f"{shards[1]} line 4: not JSON (" in err and "(a torn last line?)" in err


def test_existing_output_is_replaced_only_on_success(tmp_path: Path) -> None:
    """A failed merge leaves an earlier output untouched (write to temp, then rename)."""
    out = tmp_path / "merged.jsonl"
    out.write_bytes(b"previous\n")
    shards = write_shards(tmp_path, 6, 2)
    assert main(["-o", str(out), "--expected", "7", *shards]) == EXIT_INVALID
    assert out.read_bytes() == b"previous\n"
    assert main(["-o", str(out), "--expected", "6", *shards]) == EXIT_OK
    assert out.read_bytes().count(b"\n") == 6


def test_usage_errors(tmp_path: Path) -> None:
    """Bad arguments exit 2 before anything is read."""
    assert main(["-o", str(tmp_path / "x")]) == EXIT_USAGE
    assert main(["-o", str(tmp_path / "x"), str(tmp_path / "nope.jsonl")]) == EXIT_USAGE
    shard = write_shards(tmp_path, 2, 1)[0]
    assert main(["-o", shard, shard]) == EXIT_INVALID


def test_a_million_unordered_lines_merge_quickly_in_bounded_memory(tmp_path: Path) -> None:
    """1M lines over 4 shuffled shards: done in well under a minute, index ~10 bytes a line."""
    total, count = 1_000_000, 4
    rng = random.Random(1)
    paths = []
    for shard in range(count):
        indexes = list(range(shard, total, count))
        # completion order: mostly in order, locally shuffled (as concurrent workers finish)
        for start in range(0, len(indexes), 64):
            window = indexes[start:start + 64]
            rng.shuffle(window)
            indexes[start:start + 64] = window
        path = tmp_path / f"s{shard}.jsonl"
        with open(path, "wb") as f:
            f.writelines(b'{"data":{"ndarray":[[%d]]},"meta":{"tags":{"batch_index":%d}}}\n' % (i, i)
                         for i in indexes)
        paths.append(str(path))
    out = tmp_path / "merged.jsonl"
    started = time.monotonic()
    assert main(["-o", str(out), "--expected", str(total), *paths]) == EXIT_OK
    elapsed = time.monotonic() - started
    assert elapsed < 60, elapsed
    assert os.path.getsize(out) == sum(os.path.getsize(p) for p in paths)
    with open(out, "rb") as f:
        for expected_index, raw in enumerate(f):
            assert raw.endswith(b'"batch_index":%d}}}\n' % expected_index)
