"""Model-aware V2 against a real Triton (pytriton's bundled tritonserver, CPU Python models).

With no ``-p`` and no ``--input-name`` the processor reads each model's metadata (and Triton's
``/config``) and every line is answered right, over REST and gRPC, one line per request and in
mini-batches of 8: FP32 with batching, BYTES with and without batching (``-a str``), FP16 (over
REST Triton takes FP16 only as binary tensors: ``--binary-data``) and a model with two inputs (a
JSON object per line). Every value is checked against the model's own function
(tests/models/triton), and a sample against what ``tritonclient`` (http and grpc) gets from the
same server. ``--binary-data`` gives the same output lines as JSON.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.triton_servers import TritonServer, ensure_triton_venv
from tests.v2_runs import outputs, reference, run_v2

TRANSPORTS = ("rest", "grpc")


@pytest.fixture(scope="module")
def triton() -> Iterator[TritonServer]:
    """One real Triton serving every test model, for this module."""
    ensure_triton_venv()
    with TritonServer() as server:
        yield server


def host(server: TritonServer, transport: str) -> str:
    return server.rest_host if transport == "rest" else server.grpc_host


def tensor(datatype: str, shape: list[int], data: list[Any]) -> dict[str, Any]:
    return {"datatype": datatype, "shape": shape, "data": data}


def fp32_lines(rng: random.Random, n: int, multi_row: bool) -> tuple[list[str], list[dict[str, Any]]]:
    """Lines for add_fp32 (rows of 3; some lines of 2 rows when ``multi_row``) and what the model sees."""
    lines, requests = [], []
    for i in range(n):
        count = 2 if multi_row and i % 3 == 0 else 1
        rows = [[round(rng.uniform(-100, 100), 3) for _ in range(3)] for _ in range(count)]
        value: Any = rows if len(rows) > 1 or i % 2 else rows[0]  # flat lines and nested ones
        lines.append(json.dumps(value))
        requests.append({"INPUT": tensor("FP32", [len(rows), 3], [x for r in rows for x in r])})
    return lines, requests


TEXTS = ["hello", "Grüße, world", "a b c", "x" * 300, "1234", '"quoted"', "ok?"]


def bytes_lines(name: str, batching: bool) -> tuple[list[str], list[dict[str, Any]]]:
    requests = []
    for text in TEXTS:
        shown = json.loads(text) if text.startswith('"') else text  # -a str unquotes a JSON string
        requests.append({name: tensor("BYTES", [1, 1] if batching else [1], [shown])})
    return TEXTS, requests


def fp16_lines(rng: random.Random, n: int) -> tuple[list[str], list[dict[str, Any]]]:
    lines, requests = [], []
    for _ in range(n):
        row = [rng.randint(-512, 512) / 8 for _ in range(2)]  # exact in FP16
        lines.append(json.dumps(row))
        requests.append({"X": tensor("FP16", [1, 2], row)})
    return lines, requests


def two_input_lines(rng: random.Random, n: int) -> tuple[list[str], list[dict[str, Any]]]:
    lines, requests = [], []
    for _ in range(n):
        a = [rng.randint(-1000, 1000) / 4 for _ in range(4)]
        b = [rng.randint(-1000, 1000) / 4 for _ in range(4)]
        lines.append(json.dumps({"INPUT1": b, "INPUT0": a}))  # any key order
        requests.append({"INPUT0": tensor("FP32", [1, 4], a), "INPUT1": tensor("FP32", [1, 4], b)})
    return lines, requests


def cases(model: str, batch_size: int) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """The lines for ``model``, what the model sees of each, and the extra options (none but ``-a str``)."""
    rng = random.Random(f"{model}-{batch_size}")
    if model == "add_fp32":
        # mini-batches of 8 one-row lines stay within the model's max_batch_size 8
        return (*fp32_lines(rng, 20, multi_row=batch_size == 1), [])
    if model == "upper_bytes":
        return (*bytes_lines("INPUT", True), ["-a", "str"])
    if model == "upper_bytes_nobatch":
        return (*bytes_lines("TEXT", False), ["-a", "str"])
    if model == "half_fp16":
        return (*fp16_lines(rng, 12), [])
    return (*two_input_lines(rng, 12), [])


MODELS = ("add_fp32", "upper_bytes", "upper_bytes_nobatch", "half_fp16", "add_sub")


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("batch_size", [1, 8])
@pytest.mark.parametrize("model", MODELS)
def test_every_line_right_without_options(triton: TritonServer, model: str, transport: str, batch_size: int,
                                          tmp_path: Path) -> None:
    """No -p, no --input-name: the metadata gives names, datatypes and shapes; each answer is the model's function."""
    lines, requests, extra = cases(model, batch_size)
    if model == "half_fp16" and transport == "rest":
        extra = [*extra, "--binary-data"]  # Triton takes FP16 over REST only as binary tensors
    proc, records = run_v2(host(triton, transport), transport, model, tmp_path, lines, "-s", str(batch_size),
                           "-w", "2", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = reference("function", model, requests)
    for line, record, want in zip(lines, records, expected, strict=True):
        assert outputs(record) == want, line
        assert record["model_name"] == model
    discovered = [x for x in proc.stderr.splitlines() if f"V2 model {model}" in x]
    assert len(discovered) == 1, proc.stderr[-3000:]
    for spec in requests[0]:
        assert spec in discovered[0]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_lines_that_cannot_fit_fail_alone(triton: TritonServer, transport: str, tmp_path: Path) -> None:
    """A line of the wrong shape or type is that line's input_error, said before sending; its neighbours answer."""
    lines = ["[1, 2, 3]", "[1, 2]", '["a", "b", "c"]', "[[1, 2, 3], [4, 5]]", "[4, 5, 6]", '{"INPUT": [1, 2, 3]}',
             "[[[1, 2, 3]]]"]
    proc, records = run_v2(host(triton, transport), transport, "add_fp32", tmp_path, lines, "-s", "4")
    assert proc.returncode != 0
    reasons = {i: r["status"]["reason"] for i, r in enumerate(records) if "status" in r}
    assert set(reasons) == {1, 2, 3, 6}, reasons
    assert all(r["status"]["info"] == "input_error" for r in records if "status" in r)
    assert "does not fit the model's INPUT FP32[-1, 3]" in reasons[1]
    assert "not a valid FP32 element" in reasons[2]
    assert "ragged" in reasons[3]
    assert outputs(records[0])["OUTPUT"]["data"] == [3.0, 5.0, 7.0]
    assert outputs(records[4])["OUTPUT"]["data"] == [9.0, 11.0, 13.0]
    assert outputs(records[5])["OUTPUT"]["data"] == [3.0, 5.0, 7.0]  # an object naming the model's input


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_two_inputs_need_an_object(triton: TritonServer, transport: str, tmp_path: Path) -> None:
    """A model with two inputs: a plain line, a missing or unknown input, or rows that differ are input errors."""
    lines = ["[1, 2, 3, 4]", '{"INPUT0": [1, 2, 3, 4]}', '{"INPUT0": [1, 2, 3, 4], "INPUT1": [1, 1, 1, 1], "X": [1]}',
             '{"INPUT0": [[1, 2, 3, 4], [1, 2, 3, 4]], "INPUT1": [1, 1, 1, 1]}',
             '{"INPUT0": [[1, 2, 3, 4], [5, 6, 7, 8]], "INPUT1": [[1, 1, 1, 1], [2, 2, 2, 2]]}']
    proc, records = run_v2(host(triton, transport), transport, "add_sub", tmp_path, lines, "-s", "3")
    reasons = [r["status"]["reason"] if "status" in r else None for r in records]
    assert "the model takes 2 inputs (INPUT0, INPUT1)" in reasons[0]
    assert "input INPUT1 missing" in reasons[1]
    assert "the model has no input X" in reasons[2]
    assert "different numbers of rows" in reasons[3]
    out = outputs(records[4])
    assert out["SUM"] == {"shape": [2, 4], "data": [2.0, 3.0, 4.0, 5.0, 7.0, 8.0, 9.0, 10.0]}
    assert out["DIFF"] == {"shape": [2, 4], "data": [0.0, 1.0, 2.0, 3.0, 3.0, 4.0, 5.0, 6.0]}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_options_given_win(triton: TritonServer, transport: str, tmp_path: Path) -> None:
    """-p given wins over the metadata's datatype (the server then says what it thinks of it)."""
    proc, records = run_v2(host(triton, transport), transport, "add_fp32", tmp_path, ["[1, 2, 3]"], "-p", "FP64")
    assert "status" in records[0] and "FP64" in records[0]["status"]["reason"], records[0]


@pytest.mark.parametrize("client", ["http", "grpc"])
def test_parity_with_tritonclient(triton: TritonServer, client: str, tmp_path: Path) -> None:
    """A sample of lines through tritonclient gives the same outputs as ours (REST and gRPC, batch 1 and 8)."""
    rng = random.Random(client)
    for model, (lines, requests) in (("add_fp32", fp32_lines(rng, 10, multi_row=False)),
                                     ("upper_bytes", bytes_lines("INPUT", True))):
        url = triton.rest_host if client == "http" else triton.grpc_host
        theirs = reference(client, model, requests, url)
        extra = ["-a", "str"] if model == "upper_bytes" else []
        for transport in TRANSPORTS:
            for batch_size in (1, 8):
                _, records = run_v2(host(triton, transport), transport, model, tmp_path, lines, "-s", str(batch_size),
                                    *extra)
                assert [outputs(r) for r in records] == theirs, (model, transport, batch_size)


@pytest.mark.parametrize("http_client", ["fast", "treq"])
@pytest.mark.parametrize("batch_size", [1, 8])
@pytest.mark.parametrize("model", ["add_fp32", "upper_bytes", "upper_bytes_nobatch", "add_sub"])
def test_binary_data_gives_the_same_lines_as_json(triton: TritonServer, model: str, batch_size: int,
                                                  http_client: str, tmp_path: Path) -> None:
    """--binary-data over REST: the same output lines, byte for byte after parsing, as JSON mode."""
    lines, _, extra = cases(model, batch_size)
    args = ["-s", str(batch_size), "--http-client", http_client, *extra]
    _, plain = run_v2(triton.rest_host, "rest", model, tmp_path, lines, *args)
    proc, binary = run_v2(triton.rest_host, "rest", model, tmp_path, lines, *args, "--binary-data")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert binary == plain
    assert all("outputs" in r for r in binary)


def test_raw_lines_asking_for_binary_outputs_are_decoded(triton: TritonServer, tmp_path: Path) -> None:
    """A raw request asking Triton for a binary output gets the same JSON output line, not bad_response."""
    request = {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    binary = {**request, "outputs": [{"name": "OUTPUT", "parameters": {"binary_data": True}}]}
    proc, records = run_v2(triton.rest_host, "rest", "add_fp32", tmp_path, [json.dumps(request), json.dumps(binary)],
                           "-a", "raw")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert outputs(records[0]) == outputs(records[1]) == {"OUTPUT": {"shape": [1, 3], "data": [3.0, 5.0, 7.0]}}
