"""``--protocol v2``: the real CLI against the real MLServer 1.7.1 (example echo model), REST and gRPC.

The echo model (examples/mlserver/echo) answers each input with itself plus ``row_sum`` per row,
and reports in the response parameters what it saw (request id, batch_index, rows, headers).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from seldon_batch_tx.protocols.v2 import tensor_shape
from tests.loopback import loopback_env
from tests.mlserver_servers import MLServerServer, run_mlserver_infer

PROCESSOR = str(Path(sys.executable).parent / "seldon-batch-processor")
TRANSPORTS = ("rest", "grpc")


def host_of(server: MLServerServer, transport: str) -> str:
    return server.rest_host if transport == "rest" else server.grpc_host


def run_v2(server: MLServerServer, transport: str, tmp_path: Path, lines: list[str], *args: str,
           timeout: float = 90) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    """Run the CLI on ``lines``; the output lines in batch_index order (each index exactly once)."""
    src, out = tmp_path / "in.txt", tmp_path / "in.out.txt"
    src.write_text("".join(line + "\n" for line in lines))
    proc = subprocess.run([PROCESSOR, "--protocol", "v2", "-d", "echo", "-g", "seldon", "-t", transport,
                           "-h", host_of(server, transport), "-i", str(src), "-o", str(out), "-u", "B", *args],
                          capture_output=True, text=True, timeout=timeout, env=loopback_env())
    records = [json.loads(line) for line in out.read_text().splitlines()]
    indexes = sorted(r["meta"]["tags"]["batch_index"] for r in records)
    assert indexes == list(range(len(lines))), proc.stderr[-3000:]
    return proc, sorted(records, key=lambda r: r["meta"]["tags"]["batch_index"])


def outputs(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["name"]: o for o in record["outputs"]}


def flat(value: Any) -> list[Any]:
    return [x for v in value for x in flat(v)] if isinstance(value, list) else [value]


PLAIN = ["[1, 2, 3]", "[[4, 5, 6], [7, 8, 9]]", "[0.5, 1.5, 2]", "[[10, 20, 30]]", "[-1, -2, -3]"]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("batch_size", [1, 3])
def test_plain_arrays(mlserver_server: MLServerServer, transport: str, batch_size: int, tmp_path: Path) -> None:
    """Plain arrays become V2 requests; every line gets its own echo and row sums, id and tags, in mini-batches too."""
    proc, records = run_v2(mlserver_server, transport, tmp_path, PLAIN, "-s", str(batch_size), "-w", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for i, (line, record) in enumerate(zip(PLAIN, records, strict=True)):
        value = json.loads(line)
        if batch_size > 1 and not isinstance(value[0], list):
            value = [value]  # with mini-batches a flat line is one row
        rows = value if isinstance(value[0], list) else [[x] for x in value]
        out = outputs(record)
        assert out["input-0"]["data"] == pytest.approx(flat(value))
        assert out["input-0"]["shape"] == list(tensor_shape(value))
        has_float = i < 3 if batch_size > 1 else i == 2  # line 2 has a float: so has its mini-batch
        assert out["input-0"]["datatype"] == ("FP64" if has_float else "INT64")
        assert out["row_sum"]["data"] == pytest.approx([sum(r) for r in rows])
        tags = {"batch_id": "B", "batch_index": i, "batch_instance_id": record["id"]}
        assert record["meta"]["tags"] == tags
        assert {k: record["parameters"][k] for k in tags} == tags
        assert record["model_name"] == "echo" and record["model_version"] == "v1"
    if batch_size == 1:  # each request carried its own id and batch_index to the model
        assert [r["parameters"]["seen_batch_index"] for r in records] == list(range(len(PLAIN)))
        assert [r["parameters"]["seen_id"] for r in records] == [r["id"] for r in records]
    else:  # one request per mini-batch: 2 requests for 5 lines
        assert {r["parameters"]["seen_batch_index"] for r in records} == {0, 3}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_raw_requests_headers_and_version(mlserver_server: MLServerServer, transport: str, tmp_path: Path) -> None:
    """Whole InferenceRequests (several inputs, FP32, BYTES) in mini-batches, with --header and --model-version."""
    def req(x: list[list[float]], s: list[str]) -> str:
        return json.dumps({"inputs": [{"name": "x", "shape": [len(x), 2], "datatype": "FP32", "data": x},
                                      {"name": "s", "shape": [len(s)], "datatype": "BYTES", "data": s}]})
    lines = [req([[1, 2]], ["a"]), req([[3, 4], [5, 6]], ["b", "c"]), req([[0.5, 0.25]], ["d"])]
    proc, records = run_v2(mlserver_server, transport, tmp_path, lines, "-a", "raw", "-s", "2",
                           "--model-version", "v1", "--header", "seldon-model: echo")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert outputs(records[0])["x"]["data"] == [1, 2] and outputs(records[0])["s"]["data"] == ["a"]
    assert outputs(records[1])["x"] == {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [3, 4, 5, 6]}
    assert outputs(records[1])["s"]["data"] == ["b", "c"]
    assert outputs(records[1])["row_sum"]["data"] == [7, 11]
    assert outputs(records[2])["x"]["data"] == [0.5, 0.25]
    assert all(r["parameters"]["seen_seldon_model"] == "echo" for r in records)


def test_host_header_over_rest(mlserver_server: MLServerServer, tmp_path: Path) -> None:
    """--header Host: replaces the Host header (KServe routing), with either HTTP client."""
    for client in ("fast", "treq"):
        proc, records = run_v2(mlserver_server, "rest", tmp_path, ["[1]"], "--header", "Host: echo.ns.example.com",
                               "--http-client", client)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert records[0]["parameters"]["seen_host"] == "echo.ns.example.com"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_strings_as_bytes(mlserver_server: MLServerServer, transport: str, tmp_path: Path) -> None:
    """--data-type str: each text line is one BYTES element, mini-batched and split back."""
    lines = ["hello world", '"quoted, with \\"escapes\\""', "ünïcödé"]
    proc, records = run_v2(mlserver_server, transport, tmp_path, lines, "-a", "str", "-s", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [outputs(r)["input-0"]["data"] for r in records] == [["hello world"], ['quoted, with "escapes"'],
                                                               ["ünïcödé"]]
    assert all(outputs(r)["input-0"]["datatype"] == "BYTES" for r in records)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_mini_batch_with_bad_lines(mlserver_server: MLServerServer, transport: str, tmp_path: Path) -> None:
    """In a mini-batch, a line that is not JSON gets an error line; one that does not fit goes in a
    request of its own (issue 19); the others get their results."""
    lines = ["[1, 2]", "not json", "[3, 4, 5]", "[6, 7]", '["x", "y"]', "[8, 9]"]
    proc, records = run_v2(mlserver_server, transport, tmp_path, lines, "-s", "3")
    assert proc.returncode == 1
    failed = {r["meta"]["tags"]["batch_index"]: r["status"] for r in records if "status" in r}
    assert set(failed) == {1}
    assert "not valid JSON" in failed[1]["reason"] and failed[1]["info"] == "input_error"
    assert all(s["status"] == "FAILURE" and s["code"] is None for s in failed.values())
    assert [outputs(records[i])["row_sum"]["data"] for i in (0, 2, 3, 5)] == [[3], [12], [13], [17]]
    assert outputs(records[4])["input-0"]["data"] == ["x", "y"]
    assert records[1]["id"] == records[1]["parameters"]["batch_instance_id"]


@pytest.mark.parametrize(("transport", "code", "info"), [("rest", 400, "http_400"),
                                                         ("grpc", 3, "grpc_INVALID_ARGUMENT")])
def test_model_error_shows_the_status(mlserver_server: MLServerServer, transport: str, code: int, info: str,
                                      tmp_path: Path) -> None:
    """A model error is one error line per line with the HTTP status / gRPC code and the server's message."""
    lines = ['["fine"]', '["boom"]', '["also fine"]']
    proc, records = run_v2(mlserver_server, transport, tmp_path, lines, "-a", "data")
    assert proc.returncode == 1
    assert "status" not in records[0] and "status" not in records[2]
    status = records[1]["status"]
    assert (status["code"], status["info"], status["status"]) == (code, info, "FAILURE")
    assert "boom: this input asks the echo model to fail" in status["reason"]
    assert records[1]["model_name"] == "echo"


@pytest.mark.parametrize(("transport", "code", "info"), [("rest", 500, "http_500"), ("grpc", 13, "grpc_INTERNAL")])
def test_server_error_is_retried_then_reported(mlserver_server: MLServerServer, transport: str, code: int,
                                               info: str, tmp_path: Path) -> None:
    """A 5xx / INTERNAL is retried (--retries) and then written with its status."""
    proc, records = run_v2(mlserver_server, transport, tmp_path, ['["crash"]'], "-r", "1")
    assert proc.returncode == 1
    status = records[0]["status"]
    assert (status["code"], status["info"]) == (code, info)
    if transport == "rest":
        assert "(after 2 attempts)" in status["reason"]


@pytest.mark.parametrize(("transport", "said"), [("rest", "HTTP 404"), ("grpc", "ModelReady")])
def test_unknown_model(mlserver_server: MLServerServer, transport: str, said: str, tmp_path: Path) -> None:
    """--model-name of a model the server lacks: its readiness says so before the first line (issue 19): one
    line naming it, exit 4, no output (the lines are not spent as 404 / NOT_FOUND error lines)."""
    src, out = tmp_path / "in.txt", tmp_path / "in.out.txt"
    src.write_text("[1]\n[2]\n")
    host = mlserver_server.grpc_host if transport == "grpc" else mlserver_server.rest_host
    proc = subprocess.run([PROCESSOR, "--protocol", "v2", "-d", "m", "-g", "seldon", "-t", transport, "-h", host,
                           "-i", str(src), "-o", str(out), "--model-name", "nope", "-l", "error"],
                          capture_output=True, text=True, timeout=90, env=loopback_env())
    assert proc.returncode == 4, proc.stderr
    assert "the model is not reachable" in proc.stderr and said in proc.stderr and "nope" in proc.stderr.lower()
    assert not out.exists()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_response_that_does_not_split_is_a_mismatch(mlserver_server: MLServerServer, transport: str,
                                                    tmp_path: Path) -> None:
    """A mini-batch whose output has fewer rows than its inputs is never guessed into rows: it is split
    (issue 19) and each line gets the answer the model gives it alone, exactly as at -s 1."""
    line = json.dumps({"parameters": {"drop_last_row": True},
                       "inputs": [{"name": "x", "shape": [1, 1], "datatype": "INT64", "data": [1]}]})
    proc, records = run_v2(mlserver_server, transport, tmp_path, [line, line], "-a", "raw", "-s", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [outputs(r)["row_sum"]["shape"] for r in records] == [[0], [0]]  # the model's own answer, alone
    assert [r["parameters"]["seen_rows"] for r in records] == [1, 1]


def test_resume_a_v2_output(mlserver_server: MLServerServer, tmp_path: Path) -> None:
    """--resume reads V2 output lines (meta.tags) and sends only the missing lines."""
    lines = [f"[{i}]" for i in range(6)]
    run_v2(mlserver_server, "rest", tmp_path, lines)
    out = tmp_path / "in.out.txt"
    kept = out.read_text().splitlines()[:3]
    out.write_text("".join(k + "\n" for k in kept))
    proc = subprocess.run([PROCESSOR, "--protocol", "v2", "-d", "echo", "-g", "seldon", "-h", mlserver_server.rest_host,
                           "-i", str(tmp_path / "in.txt"), "-o", str(out), "--resume"],
                          capture_output=True, text=True, timeout=90, env=loopback_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert out.read_text().splitlines()[:3] == kept
    assert sorted(r["meta"]["tags"]["batch_index"] for r in records) == list(range(6))
    assert {r["meta"]["tags"]["batch_id"] for r in records} == {"B"}


def test_same_file_as_mlserver_infer(mlserver_server: MLServerServer, tmp_path: Path) -> None:
    """On the same V2 file and server, results match `mlserver infer`'s; only we keep the non-JSON line
    and send the batch identifiers to the model."""
    good = [json.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [i, i + 0.5]}]})
            for i in range(4)]
    lines = [*good[:2], "not json", *good[2:]]
    proc, ours = run_v2(mlserver_server, "rest", tmp_path, lines, "-a", "raw")
    assert proc.returncode == 1
    theirs_path = tmp_path / "theirs.txt"
    done = run_mlserver_infer(["-u", mlserver_server.rest_host, "-m", "echo", "-i", str(tmp_path / "in.txt"),
                               "-o", str(theirs_path), "-w", "2"])
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = {r["parameters"]["batch_index"]: r for r in map(json.loads, theirs_path.read_text().splitlines())}
    assert sorted(theirs) == [0, 1, 3, 4]  # mlserver infer silently drops the line that is not JSON
    assert ours[2]["status"]["info"] == "input_error"
    for index, record in theirs.items():  # same values; mlserver infer reshapes row_sum [1] -> [1, 1]
        assert {name: o["data"] for name, o in outputs(ours[index]).items()} == {
            o["name"]: o["data"] for o in record["outputs"]}
        assert record["parameters"]["seen_batch_index"] == -1  # it never tells the model the batch_index
        assert ours[index]["parameters"]["seen_batch_index"] == index
