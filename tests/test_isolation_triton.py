"""Issue 19 against a real Triton: rows over the model's limit never fail a line that fits.

``add_fp32`` (tests/models/triton) takes at most 8 rows per request (``max_batch_size: 8``) and
answers ``2 * x + 1``. Lines of 1-3 rows at ``-s 8`` make units of up to 24 rows. Over REST the
V2 discovery reads the limit (``/config``) and no request passes it; over gRPC (no ``/config``)
Triton refuses the large requests with INVALID_ARGUMENT and they are split until they fit.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import loopback_env
from tests.triton_servers import TritonServer, ensure_triton_venv

PROCESSOR = str(Path(sys.executable).parent / "seldon-batch-processor")


@pytest.fixture(scope="module")
def triton() -> Iterator[TritonServer]:
    ensure_triton_venv()
    with TritonServer(["add_fp32"]) as server:
        yield server


def lines_of_rows(count: int) -> list[list[list[float]]]:
    rng = random.Random(19)
    return [[[float(rng.randrange(9)), 1.0, 2.0] for _ in range(rng.randint(1, 3))] for _ in range(count)]


def run(triton: TritonServer, tmp_path: Path, transport: str, values: list[Any], *args: str) -> tuple[
        subprocess.CompletedProcess[str], dict[int, dict[str, Any]]]:
    src, out = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text("".join(json.dumps(v) + "\n" for v in values))
    host = triton.rest_host if transport == "rest" else triton.grpc_host
    proc = subprocess.run([PROCESSOR, "--protocol", "v2", "-d", "add_fp32", "-g", "seldon", "-t", transport, "-h",
                           host, "-s", "8", "-i", str(src), "-o", str(out), "-u", "B", *args], capture_output=True,
                          text=True, timeout=120, env=loopback_env())
    records = [json.loads(line) for line in out.read_text().splitlines()]
    indexes = [r["meta"]["tags"]["batch_index"] for r in records]
    assert sorted(indexes) == list(range(len(values))), proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc, dict(zip(indexes, records, strict=True))


def check_answers(values: list[Any], records: dict[int, dict[str, Any]], skip: frozenset[int] = frozenset()) -> None:
    for i, rows in enumerate(values):
        if i in skip:
            continue
        output = records[i]["outputs"][0]
        assert output["shape"] == [len(rows), 3], records[i]
        assert output["data"] == [2 * x + 1 for row in rows for x in row]


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_rows_over_the_models_limit_fail_no_line(triton: TritonServer, tmp_path: Path, transport: str) -> None:
    values: list[Any] = lines_of_rows(60)
    proc, records = run(triton, tmp_path, transport, values)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    check_answers(values, records)
    if transport == "rest":
        assert "max_batch_size 8" in proc.stdout + proc.stderr


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_only_a_line_over_the_limit_fails(triton: TritonServer, tmp_path: Path, transport: str) -> None:
    """A line of 10 rows cannot fit a model of 8 rows per request: it fails alone, its unit is answered."""
    values: list[Any] = lines_of_rows(12)
    values.insert(5, [[1.0, 2.0, 3.0]] * 10)
    proc, records = run(triton, tmp_path, transport, values, "--max-batch-rows", "8")
    assert proc.returncode == 1
    failed = {i for i, r in records.items() if r.get("status", {}).get("status") == "FAILURE"}
    assert failed == {5}
    check_answers(values, records, skip=frozenset({5}))


def test_over_grpc_the_refused_requests_were_split(triton: TritonServer, tmp_path: Path) -> None:
    """gRPC states no max_batch_size: Triton refuses units of more than 8 rows, and they are split."""
    values: list[Any] = lines_of_rows(16)
    proc, records = run(triton, tmp_path, "grpc", values, "-l", "debug")
    assert proc.returncode == 0
    assert "refused together (grpc_INVALID_ARGUMENT): split in halves" in proc.stdout + proc.stderr
    check_answers(values, records)
