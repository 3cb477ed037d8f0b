"""``seldon-batch verify``: missing, duplicated, failed and unreadable lines, and its exit status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from seldon_batch_tx import exits
from seldon_batch_tx.outputs.lines import ranges
from seldon_batch_tx.outputs.verify import EXIT_COMPLETE, EXIT_FAILED_LINES, EXIT_INCOMPLETE, EXIT_USAGE, main


def line(index: int, failed: bool = False) -> str:
    record: dict[str, object] = {"meta": {"tags": {"batch_id": "b", "batch_index": index}}}
    if failed:
        record["status"] = {"status": "FAILURE", "reason": "x"}
    else:
        record["data"] = {"ndarray": [[index]]}
    return json.dumps(record) + "\n"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text("".join(f"[[{i}]]\n" for i in range(10)))
    return path


def test_ranges_are_compact() -> None:
    """Indexes print as ranges, cut after a limit."""
    assert ranges([0, 1, 2, 4, 6, 7]) == "0-2, 4, 6-7"
    assert ranges(range(0, 100, 2), limit=3) == "0, 2, 4 ... (47 more ranges)"
    assert ranges([]) == ""


def test_complete_output_in_any_order(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every index once, in any order: complete, exit 0."""
    out = tmp_path / "out.txt"
    out.write_text("".join(line(i) for i in reversed(range(10))))
    assert main([str(source), str(out)]) == EXIT_COMPLETE
    assert capsys.readouterr().out.startswith("complete: 10 output lines for 10 input lines")


def test_missing_duplicated_and_torn(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Missing and duplicated indexes and a torn line make the output incomplete (exit 1, also with
    --allow-failed)."""
    out = tmp_path / "out.txt"
    out.write_text("".join(line(i) for i in (0, 1, 2, 2, 5, 9)) + '{"meta": {"ta')
    assert main([str(source), str(out), "--json"]) == EXIT_INCOMPLETE == exits.EXIT_FAILED_LINES == 1
    report = json.loads(capsys.readouterr().out)
    assert report["missing_ranges"] == "3-4, 6-8" and report["duplicated_ranges"] == "2"
    assert report["unreadable"] == 1 and report["unreadable_lines"] == "7" and not report["complete"]
    assert main([str(source), str(out), "--allow-failed"]) == EXIT_INCOMPLETE


def test_failed_lines_have_their_own_exit_status(source: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Complete but with error lines: exit 1 as the run itself, or 0 with --allow-failed; the failed
    indexes are listed."""
    out = tmp_path / "out.txt"
    out.write_text("".join(line(i, failed=i in (3, 4)) for i in range(10)))
    assert main([str(source), str(out)]) == EXIT_FAILED_LINES == exits.EXIT_FAILED_LINES == 1
    assert "failed: 2 (3-4)" in capsys.readouterr().out
    assert main([str(source), str(out), "--allow-failed"]) == EXIT_COMPLETE


def test_shard_outputs(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A shard's output is checked against that shard's lines only; others' lines are unexpected."""
    out = tmp_path / "out.txt"
    out.write_text("".join(line(i) for i in (1, 4, 7)))
    assert main([str(source), str(out), "--shard-index", "1", "--shard-count", "3"]) == EXIT_COMPLETE
    out.write_text("".join(line(i) for i in (1, 4, 7, 2)))
    assert main([str(source), str(out), "--shard-index", "1", "--shard-count", "3"]) == EXIT_INCOMPLETE
    assert "unexpected: 1 (2)" in capsys.readouterr().out


def test_usage_errors(source: Path, tmp_path: Path) -> None:
    """A missing file or a bad shard is a usage error (exit 2)."""
    assert main([str(source), str(tmp_path / "nope.txt")]) == EXIT_USAGE
    assert main([str(source), str(source), "--shard-index", "3", "--shard-count", "3"]) == EXIT_USAGE
    assert main([]) == EXIT_USAGE


def test_console_script(source: Path, tmp_path: Path) -> None:
    """``seldon-batch verify`` runs as a command with the same exit status."""
    out = tmp_path / "out.txt"
    out.write_text("".join(line(i) for i in range(9)))
    result = subprocess.run([sys.executable, "-c", "from seldon_batch_tx.tools import main; main()",
                             "verify", str(source), str(out)], capture_output=True, text=True, timeout=60)
    assert result.returncode == EXIT_INCOMPLETE, result.stderr
    assert "missing: 1 (9)" in result.stdout
