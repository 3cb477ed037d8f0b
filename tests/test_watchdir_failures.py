"""Watch-directory files that fail: to prepare (once, the poll keeping its pace, also after a
restart), to be filed away, to get an output line for every line, or to find a free name in
failed/; and an input check that accepts a BOM and deep JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.daemon.inputs import check_input
from seldon_batch_tx.daemon.layout import WatchDir
from seldon_batch_tx.pipeline.summary import Summary
from tests import watchdir_hostile_helpers
from tests.test_watchdir import Daemon, EchoModel, files, write_lines
from tests.watchdir_hostile_helpers import deadline, make, reason, stop

events = watchdir_hostile_helpers.events  # a fixture shared with this topic's other files


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


def test_a_table_dropped_in_goes_to_failed_saying_what_to_do(tmp_path: Path) -> None:
    """CSV and Parquet files are for seldon-batch-processor: the reason says so (not "none of the lines is JSON")."""
    daemon = make(tmp_path)
    incoming = daemon.path("incoming")
    (incoming / "t.csv").write_text("a,b\n1,2\n")
    (incoming / "p.parquet").write_bytes(b"PAR1\x00\x00PAR1")
    (incoming / "ok.jsonl").write_text("[1]\n")
    for name in ("t.csv", "p.parquet", "ok.jsonl"):
        (incoming / (name + ".ready")).touch()
    daemon.service.startService()
    daemon.pump(lambda: daemon.path("done", "ok.jsonl.summary.json").exists()
                and all(daemon.path("failed", n + ".reason.txt").exists() for n in ("t.csv", "p.parquet")))
    for name in ("t.csv", "p.parquet"):
        assert "watch directory takes JSON-lines files" in reason(daemon, name)
        assert "seldon-batch-processor -i TABLE" in reason(daemon, name)
    assert daemon.path("done", "ok.jsonl.summary.json").exists()
    stop(daemon)
