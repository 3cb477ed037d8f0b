"""``--max-bytes-in-flight`` caps the input bytes all requests in flight hold together (issue 25, low).

``--workers`` x ``--max-line-bytes`` used to be the only bound (100 workers x 64 MiB = 6.4 GB). Through the
real command against tests/overload_server.py (an echo model that counts the requests it holds at once,
each held 0.3 s): 8 workers and 400 kB lines keep 8 requests in flight under the default cap, and at most
2 (800 kB) under a 1 MiB cap, every line still answered. A line larger than the cap runs alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.loopback import loopback_env
from tests.overload_server import OverloadServer

CLI = str(Path(sys.executable).parent / "seldon-batch-processor")
LINE = 400_000


@pytest.fixture
def model(tmp_path: Path) -> Iterator[OverloadServer]:
    with OverloadServer(tmp_path, threshold=1000, delay=0.3) as server:
        yield server


def run(tmp_path: Path, model: OverloadServer, lines: list[int], *args: str) -> list[dict[str, object]]:
    with open(tmp_path / "in.txt", "w") as f:
        for i, size in enumerate(lines):
            f.write(json.dumps(str(i % 10) * size) + "\n")
    proc = subprocess.run([CLI, "-d", "m", "-g", "seldon", "-h", model.where(), "-a", "str", "-w", "8", "-r", "0",
                           "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.txt"), *args],
                          capture_output=True, text=True, timeout=120, env=loopback_env())
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (tmp_path / "out.txt").read_text().splitlines()]
    assert sorted(r["meta"]["tags"]["batch_index"] for r in records) == list(range(len(lines)))  # type: ignore[index]
    return records


def test_the_cap_limits_requests_in_flight_by_their_bytes(tmp_path: Path, model: OverloadServer) -> None:
    run(tmp_path, model, [LINE] * 16)
    assert model.stats()["max_arriving"] >= 6  # the default cap (1 GiB) leaves all 8 workers busy
    urllib_reset(model)
    run(tmp_path, model, [LINE] * 16, "--max-bytes-in-flight", str(1 << 20))
    assert 1 <= model.stats()["max_arriving"] <= 2


def test_a_line_larger_than_the_cap_runs_alone(tmp_path: Path, model: OverloadServer) -> None:
    records = run(tmp_path, model, [100, 1_200_000, 100, 100], "--max-bytes-in-flight", str(1 << 20))
    assert len(records) == 4 and model.stats()["answers"] == 4


def urllib_reset(model: OverloadServer) -> None:
    import urllib.request

    request = urllib.request.Request(f"http://{model.where()}/reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def test_a_mini_batch_closes_early_at_the_cap(tmp_path: Path) -> None:
    """``-s 100`` with 300 kB lines and a 1 MiB cap: each request closes at 4 lines (the line that reaches the
    cap is the last), so no one request holds more than the cap and one line; every line is answered."""
    from tests.hostile_server import HostileServer

    row = "[[" + "1," * 150_000 + "1]]\n"
    (tmp_path / "in.txt").write_text(row * 10)
    with HostileServer(tmp_path / "requests.jsonl") as hostile:
        proc = subprocess.run([CLI, "-d", "echo", "-g", "seldon", "-h", hostile.rest_host, "-s", "100", "-r", "0",
                               "-u", "chunks", "--max-bytes-in-flight", str(1 << 20), "-i", str(tmp_path / "in.txt"),
                               "-o", str(tmp_path / "out.txt")], capture_output=True, text=True, timeout=120,
                              env=loopback_env())
        assert proc.returncode == 0, proc.stderr
        sent = sorted((r["batch_index"], r["bytes"]) for r in hostile.received() if r.get("batch_id") == "chunks")
    assert [index for index, _ in sent] == [0, 4, 8]  # the first line of each request
    assert all(size < (1 << 20) + 2 * len(row) for _, size in sent)
    records = [json.loads(line) for line in (tmp_path / "out.txt").read_text().splitlines()]
    assert sorted(r["meta"]["tags"]["batch_index"] for r in records) == list(range(10))
