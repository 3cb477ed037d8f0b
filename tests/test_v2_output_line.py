"""One V2 output line whatever the transport: REST and gRPC answers of Triton and KServe give the same
lines (documented order, nulls dropped); whole error reasons over REST; logs name the V2 service."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from seldon_batch_tx.core.failures import RequestFailed
from seldon_batch_tx.protocols.v2_lines import output_line
from seldon_batch_tx.transports.http import MAX_REASON_CHARS, classify
from tests.kserve_servers import MODEL_NAME, KServeServer, ensure_kserve_venv
from tests.triton_servers import TritonServer, ensure_triton_venv
from tests.v2_runs import run_v2

TAGS = {"batch_id": "B", "batch_instance_id": "i", "batch_index": 0}


def test_documented_order_and_nulls() -> None:
    rest = {"model_name": "m", "model_version": None, "id": "x", "parameters": None,
            "outputs": [{"name": "O", "shape": [1], "datatype": "FP32", "parameters": None, "data": [1.0]}]}
    grpc = {"model_name": "m", "id": "x", "outputs": [{"name": "O", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    line = output_line(rest, "i", TAGS)
    assert line == output_line(grpc, "i", TAGS)
    assert json.dumps(line) == json.dumps({"id": "i", "model_name": "m", "outputs": [
        {"name": "O", "datatype": "FP32", "shape": [1], "data": [1.0]}], "parameters": TAGS, "meta": {"tags": TAGS}})
    extra = output_line({"model_name": "m", "model_version": "1", "custom": {"a": 1}, "parameters": {"p": 1},
                         "meta": {"m": 2}, "outputs": [{"name": "O", "datatype": "BYTES", "shape": [1],
                                                        "parameters": {"content_type": "str"}, "data": ["a"]}]},
                        "i", TAGS)
    assert list(extra) == ["id", "model_name", "model_version", "outputs", "custom", "parameters", "meta"]
    assert list(extra["outputs"][0]) == ["name", "datatype", "shape", "parameters", "data"]
    assert extra["parameters"] == {"p": 1, **TAGS} and extra["meta"] == {"m": 2, "tags": TAGS}


def test_error_reasons_are_whole_up_to_the_bound() -> None:
    message = "the model says: " + "why " * 900
    with pytest.raises(RequestFailed) as e:
        classify(400, json.dumps({"error": message}).encode())
    assert message in e.value.reason
    with pytest.raises(RequestFailed) as e:
        classify(500, b"x" * (MAX_REASON_CHARS + 10))
    assert e.value.reason == f"HTTP 500: {'x' * MAX_REASON_CHARS}..."


@pytest.fixture(scope="module")
def triton() -> Iterator[TritonServer]:
    ensure_triton_venv()
    with TritonServer(["add_fp32", "upper_bytes", "half_fp16"]) as server:
        yield server


@pytest.fixture(scope="module")
def kserve() -> Iterator[KServeServer]:
    ensure_kserve_venv()
    with KServeServer() as server:
        yield server


@pytest.mark.parametrize("batch_size", [1, 8])
def test_triton_rest_and_grpc_give_the_same_lines(triton: TritonServer, batch_size: int, tmp_path: Path) -> None:
    rng = random.Random(batch_size)
    floats = [json.dumps([round(rng.uniform(-9, 9), 4) for _ in range(3)]) for _ in range(16)]
    for model, lines, extra in (("add_fp32", floats, []), ("upper_bytes", ["a", "Bé", "c d"], ["-a", "str"]),
                                ("half_fp16", ["[0.5, 1]", "[2, -3]"], ["--binary-data"])):
        _, rest = run_v2(triton.rest_host, "rest", model, tmp_path, lines, "-s", str(batch_size), *extra)
        proc, grpc = run_v2(triton.grpc_host, "grpc", model, tmp_path, lines, "-s", str(batch_size), *extra)
        assert [json.dumps(r) for r in rest] == [json.dumps(r) for r in grpc], model
        assert all("outputs" in r for r in rest)
    assert "service=inference.GRPCInferenceService, method=ModelInfer" in proc.stderr


@pytest.mark.parametrize("batch_size", [1, 8])
def test_kserve_rest_and_grpc_give_the_same_lines(kserve: KServeServer, batch_size: int, tmp_path: Path) -> None:
    """KServe's REST answer has null model_version and parameters; the lines do not."""
    lines = ["[1.5, 2]", "[[3, 4], [5, 6.25]]", "[7, 8]"]
    _, rest = run_v2(kserve.rest_host, "rest", MODEL_NAME, tmp_path, lines, "-s", str(batch_size))
    _, grpc = run_v2(kserve.grpc_host, "grpc", MODEL_NAME, tmp_path, lines, "-s", str(batch_size))
    assert [json.dumps(r) for r in rest] == [json.dumps(r) for r in grpc]
    assert all("model_version" not in r and "parameters" not in r["outputs"][0] for r in rest)
