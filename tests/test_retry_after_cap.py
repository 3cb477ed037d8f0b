"""A server's ``Retry-After`` is honoured only up to a cap (issue 25, low).

``--adaptive`` against ``429 Retry-After: 999999`` used to take 20 minutes per line even with ``-r 0``:
each of the 20 spare tries waited the 60 s cap. A refusal asking for more than the cap is not load shed
for a moment: it spends ``--retries`` like any error (so with ``-r 0`` the line fails at once, saying
so), and a spare try waits at most 10 s. Through the real command against tests/hostile_server.py.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seldon_batch_tx.pipeline.attempts import MAX_RETRY_AFTER, OVERLOAD_SPARE, SPARE_RETRY_AFTER, backoff_delay
from tests.hostile_server import HostileServer
from tests.loopback import loopback_env

CLI = str(Path(sys.executable).parent / "seldon-batch-processor")
REFUSE = {"mode": "raw", "status": 429, "body": "slow down", "headers": [["Retry-After", "999999"]]}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileServer]:
    server = HostileServer(tmp_path_factory.mktemp("hostile") / "requests.jsonl")
    server.start()
    try:
        yield server
    finally:
        server.stop()


Run = tuple[subprocess.CompletedProcess[str], float, list[dict[str, Any]]]


def run(tmp_path: Path, hostile: HostileServer, batch_id: str, *args: str) -> Run:
    (tmp_path / "in.txt").write_text("".join(json.dumps([[i, 1.0]]) + "\n" for i in range(3)))
    started = time.monotonic()
    proc = subprocess.run([CLI, "-d", "script", "-g", "istio", "-h", hostile.rest_host, "-u", batch_id,
                           "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.txt"), "--timeout", "5", *args],
                          capture_output=True, text=True, timeout=120, env=loopback_env())
    elapsed = time.monotonic() - started
    return proc, elapsed, [json.loads(line) for line in (tmp_path / "out.txt").read_text().splitlines()]


def test_adaptive_with_no_retries_does_not_wait_for_a_far_retry_after(tmp_path: Path, hostile: HostileServer) -> None:
    """``--adaptive -r 0`` against 429 Retry-After: 999999: one request per line, each line an http_429
    error line whose reason names the wait asked for and the cap; the run ends in seconds, not hours."""
    hostile.script("far-retry-after", default=REFUSE)
    proc, elapsed, records = run(tmp_path, hostile, "far-retry-after", "-r", "0", "--adaptive", "-w", "2")
    assert proc.returncode == 1, proc.stderr
    assert elapsed < 30
    assert sorted(r["meta"]["tags"]["batch_index"] for r in records) == [0, 1, 2]
    for record in records:
        assert record["status"]["info"] == "http_429" and record["status"]["code"] == 429
        assert "asked to retry after 999999 s; at most 60 s is waited" in record["status"]["reason"]
    sent = [r for r in hostile.received() if r.get("batch_id") == "far-retry-after"]
    assert len(sent) == 3  # no spare tries for a refusal that asks for days


def test_the_caps() -> None:
    """A retry waits at most 60 s for Retry-After, a spare --adaptive try at most 10 s: with -r 0 a line's
    waits add up to at most 20 x 10 s (the README's worst case)."""
    rng = random.Random(7)
    assert backoff_delay(0, 999999, rng=rng) == MAX_RETRY_AFTER == 60.0
    assert backoff_delay(0, 999999, rng=rng, most=SPARE_RETRY_AFTER) == SPARE_RETRY_AFTER == 10.0
    assert backoff_delay(0, 2.0, rng=rng) == 2.0
    worst = max(backoff_delay(a, 59.0, rng=rng, most=SPARE_RETRY_AFTER) for a in range(OVERLOAD_SPARE))
    assert worst <= 10.0 and OVERLOAD_SPARE * SPARE_RETRY_AFTER == 200.0
