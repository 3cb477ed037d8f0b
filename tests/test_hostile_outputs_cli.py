"""The real ``seldon-batch-processor`` against usage mistakes (one line, exit 2, nothing sent) and
hostile output files: resume refuses a huge index without allocating, leaves a foreign file
untouched, refuses a deep line (which verify reports), and a second run on the same output is refused.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests import hostile_cli_helpers
from tests.hostile_cli_helpers import (
    CLI,
    RSS_LIMIT_KB,
    base_args,
    data_file,
    read_records,
    run_cli,
)
from tests.hostile_server import HostileServer
from tests.loopback import loopback_env
from tests.servers import REPO_ROOT

hostile = hostile_cli_helpers.hostile  # a fixture shared with this topic's other files


@pytest.mark.parametrize(("args", "env", "option"), [
    (["-w", "0"], {}, "--workers"),
    ([], {"SELDON_BATCH_WORKERS": "0"}, "workers"),
    (["-h", "x:abc"], {}, "--host"),
    (["-h", "127.0.0.1:99999"], {}, "--host"),
    (["--call-credentials-token", "a\r\nX-Evil: 1"], {}, "--call-credentials-token"),
    ([], {"SELDON_BATCH_CALL_CREDENTIALS_TOKEN": "a\nb"}, "call-credentials-token"),
    (["--header", "X-A: b\r\nX-Evil: 1"], {}, "--header"),
    (["--max-line-bytes", "0"], {}, "--max-line-bytes"),
    (["--max-response-bytes", "-5"], {}, "--max-response-bytes"),
    (["--timeout", "nan"], {}, "--timeout"),
])
def test_usage_mistakes_are_one_line_exit_2(tmp_path: Path, hostile: HostileServer, args: list[str],
                                           env: dict[str, str], option: str) -> None:
    """A bad flag or environment value: ``PROG: error: <option> <value>: <why>`` on one line, status 2."""
    source, out = data_file(tmp_path / "in.txt"), tmp_path / "out.txt"
    batch_id = f"usage-{time.monotonic_ns()}"
    full = ["-d", "echo", "-g", "istio", "-h", hostile.rest_host, "-i", str(source), "-o", str(out),
            "-u", batch_id, *args]
    outcome = run_cli(full, tmp_path, env={**loopback_env(), **env}, wall=20)
    lines = outcome.stderr.strip().splitlines()
    assert outcome.code == 2, outcome.describe()
    assert len(lines) == 1 and "error:" in lines[0] and option in lines[0], outcome.stderr
    assert "Traceback" not in outcome.stderr
    assert not [r for r in hostile.received() if r.get("batch_id") == batch_id]


# -- resume against hostile outputs ---------------------------------------------------------------


def test_resume_refuses_huge_index_without_allocating(tmp_path: Path, hostile: HostileServer) -> None:
    """An output naming ``batch_index`` 10**15: refused (exit 2) fast, in bounded memory, file unchanged."""
    source, out = data_file(tmp_path / "in.txt"), tmp_path / "out.txt"
    line = {"data": {"ndarray": [[1]]}, "meta": {"tags": {"batch_id": "B", "batch_index": 10 ** 15,
                                                          "batch_instance_id": "x"}}}
    out.write_text(json.dumps(line) + "\n")
    before = out.read_bytes()
    outcome = run_cli(base_args(hostile, "echo", source, out, "fast", "--resume"), tmp_path, wall=20)
    assert outcome.code == 2, outcome.describe()
    assert outcome.peak_rss_kb < RSS_LIMIT_KB, outcome.describe()
    assert out.read_bytes() == before


def test_resume_leaves_a_foreign_file_untouched(tmp_path: Path, hostile: HostileServer) -> None:
    """``--resume`` onto a file that is not an output (no tags, torn tail): refused, not one byte changed."""
    source, out = data_file(tmp_path / "in.txt"), tmp_path / "out.txt"
    out.write_bytes(b"precious line one\nprecious line two\nno newline at the end")
    before = out.read_bytes()
    for flag in ("--resume", "--retry-failed"):
        outcome = run_cli(base_args(hostile, "echo", source, out, "fast", flag), tmp_path, wall=20)
        assert outcome.code == 2, outcome.describe()
        assert out.read_bytes() == before, flag


def test_deep_output_line_is_refused_by_resume_and_reported_by_verify(tmp_path: Path,
                                                                      hostile: HostileServer) -> None:
    """An output line nested 100,000 deep: ``--resume`` refuses (exit 2, no traceback); verify reports it."""
    source, out = data_file(tmp_path / "in.txt"), tmp_path / "out.txt"
    out.write_bytes(b"[" * 100_000 + b"]" * 100_000 + b"\n")
    outcome = run_cli(base_args(hostile, "echo", source, out, "fast", "--resume"), tmp_path, wall=20)
    assert outcome.code == 2 and "Traceback" not in outcome.stderr, outcome.describe()
    verify = subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "seldon-batch"), "verify", str(source), str(out)],
                            capture_output=True, text=True, timeout=30, env=loopback_env(), stdin=subprocess.DEVNULL)
    assert verify.returncode == 1 and "Traceback" not in verify.stderr, verify.stderr[-2000:]


def test_second_run_on_the_same_output_is_refused(tmp_path: Path, hostile: HostileServer) -> None:
    """While one run holds the output, a second one exits 2 and says who holds it; the first still finishes."""
    source, out = data_file(tmp_path / "in.txt", 40), tmp_path / "out.txt"
    first_err = tmp_path / "first.err"
    with open(first_err, "wb") as err:
        first = subprocess.Popen([CLI, *base_args(hostile, "echo", source, out, "fast", "-w", "1",
                                                  "--batch-interval", "0.1")],
                                 stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, env=loopback_env())
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (out.exists() and out.stat().st_size):
            time.sleep(0.05)
        assert first.poll() is None, first_err.read_text()
        second = run_cli(base_args(hostile, "echo", source, out, "fast", "--resume"), tmp_path, wall=20)
        assert second.code == 2, second.describe()
        assert str(first.pid) in second.stderr, second.stderr
        assert first.wait(40) == 0, first_err.read_text()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    read_records(out, 40)
