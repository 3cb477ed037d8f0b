"""Model-aware V2 against a real KServe 0.21 model server (tests/models/kserve_model.py), REST and gRPC.

The model ``scale`` declares INPUT FP32[-1, 2] and answers 3 * INPUT - 1. With no ``-p`` and no
``--input-name`` every line is answered right, one per request and in mini-batches of 8; a line
that does not fit is its own input_error. REST and gRPC give the same answers.
"""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kserve_servers import MODEL_NAME, KServeServer, ensure_kserve_venv
from tests.v2_runs import outputs, run_v2

TRANSPORTS = ("rest", "grpc")


@pytest.fixture(scope="module")
def kserve() -> Iterator[KServeServer]:
    ensure_kserve_venv()
    with KServeServer() as server:
        yield server


def f32(x: float) -> float:
    """``x`` as the FP32 value the model computes with."""
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


def scale(x: float) -> float:
    """The model's function, in FP32 steps as numpy does it."""
    return f32(f32(f32(x) * 3) - 1)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("batch_size", [1, 8])
def test_every_line_right_without_options(kserve: KServeServer, transport: str, batch_size: int,
                                          tmp_path: Path) -> None:
    rng = random.Random(batch_size)
    rows_per_line = [1 + (i % 3 == 0) for i in range(20)]
    values = [[[round(rng.uniform(-50, 50), 2) for _ in range(2)] for _ in range(n)] for n in rows_per_line]
    lines = [json.dumps(v if len(v) > 1 or i % 2 else v[0]) for i, v in enumerate(values)] + ["[1, 2, 3]"]
    host = kserve.rest_host if transport == "rest" else kserve.grpc_host
    proc, records = run_v2(host, transport, MODEL_NAME, tmp_path, lines, "-s", str(batch_size), "-w", "2")
    for value, record in zip(values, records, strict=False):
        out = outputs(record)["OUTPUT"]
        assert out["shape"] == [len(value), 2]
        assert out["data"] == [scale(x) for row in value for x in row]
        assert record["model_name"] == MODEL_NAME
    assert records[-1]["status"]["info"] == "input_error"
    assert "does not fit the model's INPUT FP32[-1, 2]" in records[-1]["status"]["reason"]
    assert "V2 model scale" in proc.stderr and "inputs INPUT FP32[-1, 2]" in proc.stderr


@pytest.mark.parametrize("http_client", ["fast", "treq"])
def test_binary_data_gives_the_same_lines_as_json(kserve: KServeServer, http_client: str, tmp_path: Path) -> None:
    """KServe reads Triton's binary tensor extension too (a binary request is application/octet-stream)."""
    lines = ["[1.5, 2]", "[[3, 4], [5, 6.25]]", "[7, 8]", "[1, 2, 3]"]
    args = ["-s", "2", "--http-client", http_client]
    _, plain = run_v2(kserve.rest_host, "rest", MODEL_NAME, tmp_path, lines, *args)
    _, binary = run_v2(kserve.rest_host, "rest", MODEL_NAME, tmp_path, lines, *args, "--binary-data")
    assert binary == plain
    assert [("outputs" in r) for r in binary] == [True, True, True, False]
