"""The end of a run names why (issue 19): error kinds with counts and one sample reason each, in the
summary line the terminal and the log show."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from seldon_batch_tx.pipeline.stats import BatchStats
from seldon_batch_tx.pipeline.summary import MAX_KINDS_SHOWN, SAMPLE_CHARS, Summary
from tests.servers import SeldonServer, loopback_env

PROCESSOR = str(Path(sys.executable).parent / "seldon-batch-processor")


def summary_of(errors: list[tuple[str, str]], succeeded: int = 0) -> Summary:
    stats = BatchStats("B", "in")
    stats.succeeded = succeeded
    for index, (kind, reason) in enumerate(errors):
        stats.record_error(kind, index, reason)
    stats.total, stats.started, stats.finished = succeeded + len(errors), 0.0, 1.0
    return Summary.of(stats, None)


def test_kinds_counts_and_the_first_reason_of_each() -> None:
    text = summary_of([("connection", "cannot connect to 127.0.0.1:19009: connection refused")] * 1000).text()
    assert "0 succeeded, 1000 failed: connection x1000 (cannot connect to 127.0.0.1:19009: connection refused); " \
           in text
    text = summary_of([("input_error", "line 1: not JSON"), ("http_400", "HTTP 400: bad"),
                       ("input_error", "line 3: blank line")], succeeded=2).text()
    assert "2 succeeded, 3 failed: input_error x2 (line 1: not JSON), http_400 x1 (HTTP 400: bad); " in text


def test_no_failures_reads_as_before_and_long_reasons_are_cut() -> None:
    assert "5 succeeded, 0 failed, 0 retries" in summary_of([], succeeded=5).text()
    text = summary_of([("bad_response", "x" * 5000 + "\nsecond line")]).text()
    assert "x" * SAMPLE_CHARS + "..." in text and "x" * (SAMPLE_CHARS + 1) not in text and "\n" not in text
    many = summary_of([(f"kind_{i}", "r") for i in range(20)]).text()
    assert many.count(" x1 (r)") == MAX_KINDS_SHOWN


def test_the_command_prints_why(tmp_path: Path) -> None:
    """Against the real microservice: two kinds of bad line, named in the summary line on stdout."""
    source = tmp_path / "in.txt"
    source.write_text("[[1, 2]]\nnot json\n[[3, 4]]\n\n")
    with SeldonServer("EchoModel") as server:
        proc = subprocess.run([PROCESSOR, "-d", "echo", "-g", "seldon", "-h", server.rest_host, "-i", str(source)],
                              capture_output=True, text=True, timeout=120, env=loopback_env())
    assert proc.returncode == 1, proc.stderr
    line = proc.stdout.strip().splitlines()[0]
    assert "2 succeeded, 2 failed: input_error x2 (" in line
    reasons = {json.loads(x)["status"]["reason"] for x in (tmp_path / "in.out.txt").read_text().splitlines()
               if "status" in json.loads(x)}
    assert any(f"({reason})" in line for reason in reasons)
