"""Review attack: a server that answers 400 to every request, at ``-s 64`` (issue 19's splitting).

Without ``--max-failures`` each unit of n lines costs exactly 2n - 1 requests and every line gets
exactly one error line. With ``--max-failures 5`` the splitting went on to the end of every unit in
flight (507 requests for 4 workers at -s 64, 255 error lines, after the user asked to stop at 5); a
unit now stops splitting once the lines it has failed will stop the run. The lines left are "not
processed", and a ``--resume`` against a working model gives each of them its one output line.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile_server import HostileServer
from tests.loopback import loopback_env
from tests.v2_runs import PROCESSOR

LINES = 300


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileServer]:
    with HostileServer(tmp_path_factory.mktemp("hostile") / "requests.jsonl") as hostile:
        yield hostile


def run(server: HostileServer, tmp_path: Path, deployment: str, *extra: str) -> tuple[str, Counter[int], int]:
    """The run's summary, how many output lines each input line has, and the requests it made."""
    src, out = tmp_path / "in.txt", tmp_path / "out.txt"
    if not src.exists():
        src.write_text("".join(f"[[{i}, 2]]\n" for i in range(LINES)))
    before = len(server.received())  # the requests: its POSTs (the readiness probe is a GET)
    proc = subprocess.run([PROCESSOR, "-d", deployment, "-g", "istio", "-n", "ns", "-h", server.rest_host,
                           "-i", str(src), "-o", str(out), "-s", "64", "-w", "4", *extra],
                          capture_output=True, text=True, timeout=120, env=loopback_env())
    indexes = Counter(json.loads(x)["meta"]["tags"]["batch_index"] for x in out.read_text().splitlines())
    posts = sum(1 for r in server.received()[before:] if r.get("method") == "POST")
    return proc.stdout, indexes, posts


def test_every_line_one_error_at_most_2n_minus_1_requests(server: HostileServer, tmp_path: Path) -> None:
    summary, indexes, requests = run(server, tmp_path, "refuses-everything")  # an unknown mode: 400
    assert f"{LINES} lines: 0 succeeded, {LINES} failed" in summary
    assert sorted(indexes) == list(range(LINES)) and set(indexes.values()) == {1}
    assert requests == 4 * (2 * 64 - 1) + (2 * (LINES - 4 * 64) - 1)


def test_max_failures_stops_the_splitting(server: HostileServer, tmp_path: Path) -> None:
    summary, indexes, requests = run(server, tmp_path, "refuses-everything", "--max-failures", "5")
    assert "stopped early: 5 lines failed (--max-failures 5)" in summary
    assert set(indexes.values()) == {1}
    failed = len(indexes)
    assert f"0 succeeded, {failed} failed" in summary and f"{LINES - failed} not processed" in summary
    assert failed <= 4 * 8 and requests <= 4 * 20  # each unit in flight: a few halvings, not 127 requests
    summary, indexes, _ = run(server, tmp_path, "echo", "--resume")
    assert sorted(indexes) == list(range(LINES)) and set(indexes.values()) == {1}
    assert f"{LINES - failed} succeeded" in summary
