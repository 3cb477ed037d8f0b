"""Issue 19, isolation in mini-batches, against the real servers: only the offending lines fail.

The real Seldon Core microservice serves ``tests/models/PickyModel.py`` (refuses a request holding
666 with HTTP 400 / gRPC UNKNOWN, answers a row holding 999 with ``inf``, doubles the rest); the
real MLServer serves the example echo model (``"boom"`` -> HTTP 400 / gRPC INVALID_ARGUMENT,
``row_sum`` of ``[1e308, 1e308]`` is ``inf``, which MLServer's REST JSON writes as ``null``, so
the ``inf`` row is checked over gRPC there).
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

from tests.mlserver_servers import MLServerServer
from tests.servers import SeldonServer, loopback_env

PROCESSOR = str(Path(sys.executable).parent / "seldon-batch-processor")
MODELS = Path(__file__).resolve().parent / "models"

#: -s 8: a 3-column line first in the first unit; in the second unit a refused line (666), a row
#: answered with inf (999) and a line of two rows among one-row lines.
SELDON_LINES = (["[1, 2, 3]"] + [f"[{i}, 1, 1, 1]" for i in range(1, 8)]
                + ["[1, 1, 1, 1]", "[666, 1, 1, 1]", "[2, 1, 1, 1]", "[999, 1, 1, 1]",
                   "[[1, 1, 1, 1], [2, 2, 2, 2]]", "[3, 1, 1, 1]"])


@pytest.fixture(scope="module")
def picky(seldon_venv: Path) -> Iterator[SeldonServer]:
    with SeldonServer("PickyModel", MODELS) as server:
        yield server


def run(args: list[str], tmp_path: Path, lines: list[str]) -> tuple[subprocess.CompletedProcess[str],
                                                                   dict[int, dict[str, Any]]]:
    """The CLI on ``lines``; its output lines by batch_index, asserting one per input line."""
    src, out = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text("".join(line + "\n" for line in lines))
    proc = subprocess.run([PROCESSOR, *args, "-i", str(src), "-o", str(out), "-u", "B"], capture_output=True,
                          text=True, timeout=120, env=loopback_env())
    records = [json.loads(line) for line in out.read_text().splitlines()]
    indexes = [r["meta"]["tags"]["batch_index"] for r in records]
    assert sorted(indexes) == list(range(len(lines))), proc.stderr[-3000:]
    return proc, dict(zip(indexes, records, strict=True))


def failed(records: dict[int, dict[str, Any]]) -> dict[int, str]:
    return {i: r["status"]["info"] for i, r in records.items() if r.get("status", {}).get("status") == "FAILURE"}


def rows(record: dict[str, Any]) -> list[list[float]]:
    data = record["data"]
    if "ndarray" in data:
        return [[float(x) for x in row] for row in data["ndarray"]]
    shape, values = data["tensor"]["shape"], data["tensor"]["values"]
    return [[float(x) for x in values[i * shape[1]:(i + 1) * shape[1]]] for i in range(shape[0])]


@pytest.mark.parametrize(("transport", "payload", "refused"), [
    ("rest", "ndarray", "http_400"), ("rest", "tensor", "http_400"),
    ("grpc", "ndarray", "grpc_UNKNOWN"), ("grpc", "tensor", "grpc_UNKNOWN")])
def test_seldon_only_the_offending_lines_fail(picky: SeldonServer, tmp_path: Path, transport: str, payload: str,
                                              refused: str) -> None:
    """The 3-column line goes alone and is answered; 666 and the inf row fail alone; no retry is spent."""
    host = picky.rest_host if transport == "rest" else picky.grpc_host
    proc, records = run(["-d", "picky", "-g", "seldon", "-t", transport, "-h", host, "-p", payload, "-s", "8"],
                        tmp_path, SELDON_LINES)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert failed(records) == {9: refused, 11: "bad_response"}
    assert "Infinity" in records[11]["status"]["reason"]
    if transport == "rest":
        assert "the value 666 is refused" in records[9]["status"]["reason"]
    for i, line in enumerate(SELDON_LINES):
        if i not in (9, 11):
            value = json.loads(line)
            expected = [[2.0 * x for x in row] for row in (value if isinstance(value[0], list) else [value])]
            assert rows(records[i]) == expected, i
    assert " 0 retries" in proc.stdout + proc.stderr  # the summary line


#: -s 8: lines the model raises on (777, text, a ragged row) among numbers; a text line must not turn
#: its neighbours' numbers into text (one array of strings), nor fail them.
RAISING_LINES = ["[1, 1, 1]", '["a", "b", "c"]', "[2, 2, 2]", "[1, [2], 3]", "[777, 1, 1]", "[3, 3, 3]",
                 "[4, 4, 4]", "[5, 5, 5]"]


@pytest.mark.parametrize(("transport", "raised"), [("rest", "http_500"), ("grpc", "grpc_UNKNOWN")])
def test_seldon_a_model_that_raises_fails_only_its_lines(picky: SeldonServer, tmp_path: Path, transport: str,
                                                         raised: str) -> None:
    """The microservice answers a model's exception with HTTP 500 MICROSERVICE_INTERNAL_ERROR (REST) or
    UNKNOWN (gRPC): about these lines, so the request is split, not retried; text lines go on their own."""
    host = picky.rest_host if transport == "rest" else picky.grpc_host
    proc, records = run(["-d", "picky", "-g", "seldon", "-t", transport, "-h", host, "-s", "8"], tmp_path,
                        RAISING_LINES)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert failed(records) == {1: raised, 3: raised, 4: raised}
    if transport == "rest":  # over REST a line alone is still retried: a model's exception may pass
        reason = records[4]["status"]["reason"]
        assert "the model cannot take 777" in reason and reason.endswith("(after 4 attempts)")
    for i in (0, 2, 5, 6, 7):
        assert rows(records[i]) == [[2.0 * x for x in json.loads(RAISING_LINES[i])]], i
    assert (" 9 retries" if transport == "rest" else " 0 retries") in proc.stdout + proc.stderr


def test_seldon_rest_a_passing_model_exception_is_retried(seldon_venv: Path, tmp_path: Path) -> None:
    """The first request holding 555 raises (HTTP 500 MICROSERVICE_INTERNAL_ERROR), later ones are answered:
    in a unit of several lines the request is split at once and every line answered; a line alone is
    retried."""
    with SeldonServer("PickyModel", MODELS) as server:
        args = ["-d", "picky", "-g", "seldon", "-h", server.rest_host]
        proc, records = run([*args, "-s", "8"], tmp_path, ["[1, 1]", "[555, 1]", "[2, 2]", "[3, 3]"])
        assert proc.returncode == 0 and not failed(records), proc.stderr[-3000:]
        assert " 0 retries" in proc.stdout + proc.stderr
    with SeldonServer("PickyModel", MODELS) as server:
        args = ["-d", "picky", "-g", "seldon", "-h", server.rest_host]
        proc, records = run([*args, "-s", "1"], tmp_path, ["[[555, 1]]"])
        assert proc.returncode == 0 and rows(records[0]) == [[1110.0, 2.0]], proc.stderr[-3000:]
        assert " 1 retries" in proc.stdout + proc.stderr


def test_seldon_grpc_a_request_past_the_servers_size_limit_is_split(picky: SeldonServer, tmp_path: Path) -> None:
    """8 lines of 60,000 numbers at -s 8 are ~5 MB of protobuf, past the microservice's 4 MB receive limit
    (RESOURCE_EXHAUSTED "Received message larger than max"): halves fit, and every line is answered."""
    lines = [json.dumps([float(i)] * 60_000) for i in range(1, 9)]
    proc, records = run(["-d", "picky", "-g", "seldon", "-t", "grpc", "-h", picky.grpc_host, "-s", "8"], tmp_path,
                        lines)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [records[i]["data"]["ndarray"][0][:2] for i in range(8)] == [[2 * i, 2 * i] for i in range(1, 9)]


def test_seldon_a_three_column_line_in_every_unit(picky: SeldonServer, tmp_path: Path) -> None:
    """The issue's run: one 3-column line among 4-column lines in each unit of 8: every line answered."""
    rng = random.Random(19)
    lines = []
    for unit in range(10):
        odd = rng.randrange(8)
        lines += ["[1, 2, 3]" if k == odd else f"[{unit}, {k}, 1, 1]" for k in range(8)]
    proc, records = run(["-d", "picky", "-g", "seldon", "-h", picky.rest_host, "-s", "8", "-w", "2"], tmp_path, lines)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not failed(records)
    assert all(len(rows(records[i])[0]) == len(json.loads(line)) for i, line in enumerate(lines))


V2_LINES = (["[1, 2, 3]"] + [f"[{i}, 1, 1, 1]" for i in range(1, 8)]
            + ['["a", "b", "c", "d"]', '["a", "boom", "c", "d"]', '["e", "f", "g", "h"]', "[1e308, 1e308, 1, 1]",
               "[[1, 1, 1, 1], [2, 2, 2, 2]]", "[5, 1, 1, 1]"])


@pytest.mark.parametrize(("transport", "offending"), [
    ("rest", {9: "http_400"}), ("grpc", {9: "grpc_INVALID_ARGUMENT", 11: "bad_response"})])
def test_v2_only_the_offending_lines_fail(mlserver_server: MLServerServer, tmp_path: Path, transport: str,
                                          offending: dict[int, str]) -> None:
    """V2 -s 8: a 3-column line first makes its own request, BYTES lines theirs; "boom" fails alone
    (split from its neighbours), the inf row sum fails alone (gRPC); the others are answered."""
    host = mlserver_server.rest_host if transport == "rest" else mlserver_server.grpc_host
    proc, records = run(["--protocol", "v2", "-d", "echo", "-g", "seldon", "-t", transport, "-h", host, "-s", "8"],
                        tmp_path, V2_LINES)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert failed(records) == offending
    assert "boom: this input asks the echo model to fail" in records[9]["status"]["reason"]
    sums = {i: next(o for o in r["outputs"] if o["name"] == "row_sum")["data"]
            for i, r in records.items() if i not in offending and i not in (8, 10)}
    assert sums[0] == [6] and sums[1] == [4] and sums[7] == [10] and sums[12] == [4, 8] and sums[13] == [8]
    assert records[1]["parameters"]["seen_rows"] == 7  # lines 1-7 still went as one request
    texts = {i: next(o for o in records[i]["outputs"] if o["name"] == "input-0")["data"] for i in (8, 10)}
    assert texts == {8: ["a", "b", "c", "d"], 10: ["e", "f", "g", "h"]}


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_v2_max_batch_rows(mlserver_server: MLServerServer, tmp_path: Path, transport: str) -> None:
    """--max-batch-rows 5 with lines of 1-3 rows at -s 8: no request the model sees holds more than 5 rows."""
    rng = random.Random(5)
    lines = [json.dumps([[rng.randrange(9), 1] for _ in range(rng.randint(1, 3))]) for _ in range(60)]
    host = mlserver_server.rest_host if transport == "rest" else mlserver_server.grpc_host
    proc, records = run(["--protocol", "v2", "-d", "echo", "-g", "seldon", "-t", transport, "-h", host, "-s", "8",
                         "--max-batch-rows", "5"], tmp_path, lines)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = [r["parameters"]["seen_rows"] for r in records.values()]
    assert max(seen) <= 5 and max(seen) >= 4  # capped, yet still mini-batched
    for i, line in enumerate(lines):
        assert next(o for o in records[i]["outputs"] if o["name"] == "input-0")["shape"][0] == len(json.loads(line))
