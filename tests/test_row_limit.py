"""Issue 19: the model's own row limit (Triton's ``max_batch_size``) and ``--max-batch-rows``.

A loopback server in a thread stands in for Triton's REST routes: ``GET /v2/models/m`` (metadata:
one input ``input-0`` of rows of 2) and ``GET /v2/models/m/config`` (``max_batch_size`` 16), read by
the V2 discovery before the run; ``/infer`` refuses a request of more rows with HTTP 400 in
Triton's words and answers a row holding 999 with a ``row_sum`` of ``Infinity`` (Python's JSON
writes it), which no output line can carry. tests/test_isolation_triton.py runs the real Triton.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.daemon.files import Rejected
from seldon_batch_tx.daemon.sidecars import apply_sidecar
from seldon_batch_tx.options import ProcessorOptions
from seldon_batch_tx.protocols.choose import make_codec
from seldon_batch_tx.protocols.v2_metadata import ModelMetadata, TensorSpec
from tests.servers import loopback_env

PROCESSOR = str(Path(sys.executable).parent / "seldon-batch-processor")
LIMIT = 16


class TritonLike(BaseHTTPRequestHandler):
    """Triton's config and infer routes for one model, ``m``; every request's row count is kept."""

    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _answer(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        if self.path == "/v2/models/m":
            self._answer(200, {"name": "m", "platform": "python", "inputs": [
                {"name": "input-0", "datatype": "INT64", "shape": [-1, 2]}], "outputs": [
                {"name": "row_sum", "datatype": "FP64", "shape": [-1]}]})
        elif self.path == "/v2/models/m/config" and self.server.config == "slow":
            time.sleep(4)  # past the client's --timeout 1: it goes on without a limit
            self._answer(200, {"max_batch_size": 1})
        elif self.path == "/v2/models/m/config" and self.server.config is not None:
            self._answer(200, self.server.config)
        else:
            self._answer(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802 - the base class's name
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        tensor = request["inputs"][0]
        rows = tensor["shape"][0]
        self.server.seen.append(rows)
        if rows > LIMIT:
            self._answer(400, {"error": f"inference request batch-size must be <= {LIMIT} for 'm'"})
            return
        width = len(tensor["data"]) // rows
        sums = [sum(tensor["data"][i * width:(i + 1) * width]) for i in range(rows)]
        sums = [float("inf") if s >= 999 else s for s in sums]
        self._answer(200, {"model_name": "m", "outputs": [
            {"name": "row_sum", "shape": [rows], "datatype": "FP64", "data": sums}]})


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up on the slow answer (BrokenPipe) is what the test wants


@pytest.fixture
def triton() -> Iterator[ThreadingHTTPServer]:
    server = QuietServer(("127.0.0.1", 0), TritonLike)
    server.daemon_threads = True
    server.config = {"name": "m", "max_batch_size": LIMIT}  # type: ignore[attr-defined]
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def run(server: ThreadingHTTPServer, tmp_path: Path, lines: list[str], *args: str) -> tuple[
        subprocess.CompletedProcess[str], dict[int, dict[str, Any]]]:
    src, out = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text("".join(line + "\n" for line in lines))
    host = f"127.0.0.1:{server.server_address[1]}"
    proc = subprocess.run([PROCESSOR, "--protocol", "v2", "-d", "m", "-g", "seldon", "-h", host, "-i", str(src),
                           "-o", str(out), "-u", "B", *args], capture_output=True, text=True, timeout=60,
                          env=loopback_env())
    records = [json.loads(line) for line in out.read_text().splitlines()]
    indexes = [r["meta"]["tags"]["batch_index"] for r in records]
    assert sorted(indexes) == list(range(len(lines))), proc.stderr[-3000:]
    return proc, dict(zip(indexes, records, strict=True))


def rows_lines(count: int, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    return [json.dumps([[rng.randrange(5), 1]] * rng.randint(1, 3)) for _ in range(count)]


def test_requests_stay_within_the_models_stated_limit(triton: ThreadingHTTPServer, tmp_path: Path) -> None:
    """The issue's run: lines of 1-3 rows at -s 8 against a model of max_batch_size 16: no request
    over 16 rows, no line failed (before: requests of up to 24 rows, a third of the lines failed)."""
    proc, records = run(triton, tmp_path, rows_lines(300), "-s", "8", "-w", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert max(triton.seen) <= LIMIT and max(triton.seen) >= LIMIT - 2  # type: ignore[attr-defined]
    assert "max_batch_size 16" in proc.stdout + proc.stderr  # the discovery's log line


def test_max_batch_rows_below_the_models_limit_wins(triton: ThreadingHTTPServer, tmp_path: Path) -> None:
    proc, _ = run(triton, tmp_path, rows_lines(60), "-s", "8", "--max-batch-rows", "5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert max(triton.seen) <= 5  # type: ignore[attr-defined]


def test_without_the_route_there_is_no_limit(triton: ThreadingHTTPServer, tmp_path: Path) -> None:
    """A server with no config route (MLServer, KServe): requests as large as the lines make them,
    and a request the model refuses for its size is split until each part fits."""
    triton.config = None  # type: ignore[attr-defined]
    lines = [json.dumps([[1, 1]] * 3)] * 16
    proc, records = run(triton, tmp_path, lines, "-s", "8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert triton.seen == [24, 12, 12, 24, 12, 12]  # type: ignore[attr-defined]


def test_a_slow_config_answer_is_not_waited_for(triton: ThreadingHTTPServer, tmp_path: Path) -> None:
    """The question is bounded by --timeout (at most 10 s): no answer in time, no limit, the run goes on."""
    triton.config = "slow"  # type: ignore[attr-defined]
    started = time.monotonic()
    proc, _ = run(triton, tmp_path, rows_lines(20), "-s", "8", "--timeout", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert max(triton.seen) > 1  # type: ignore[attr-defined]
    assert time.monotonic() - started < 30


def test_a_line_over_the_limit_fails_alone(triton: ThreadingHTTPServer, tmp_path: Path) -> None:
    lines = rows_lines(10) + [json.dumps([[1, 1]] * 20)] + rows_lines(10, seed=4)
    proc, records = run(triton, tmp_path, lines, "-s", "8")
    assert proc.returncode == 1
    failed = {i: r["status"] for i, r in records.items() if "status" in r}
    assert list(failed) == [10] and failed[10]["info"] == "input_error" and "max_batch_size" in failed[10]["reason"]
    assert max(triton.seen) <= LIMIT  # type: ignore[attr-defined]


def test_an_inf_row_over_rest_fails_that_line_only(triton: ThreadingHTTPServer, tmp_path: Path) -> None:
    lines = ["[1, 2]", "[3, 4]", "[999, 1]", "[5, 6]", "[7, 8]"]
    proc, records = run(triton, tmp_path, lines, "-s", "8")
    assert proc.returncode == 1
    failed = {i: r["status"]["info"] for i, r in records.items() if "status" in r}
    assert failed == {2: "bad_response"}
    assert [records[i]["outputs"][0]["data"] for i in (0, 1, 3, 4)] == [[3], [7], [11], [15]]


def test_the_codec_takes_the_lower_of_option_and_model() -> None:
    base = {"deployment_name": "m", "input_data_path": "i", "output_data_path": "o", "protocol": "v2",
            "batch_size": 8}
    spec = (TensorSpec("input-0", "FP32", (-1, 2)),)
    for option, stated, expected in ((None, 16, 16), (5, 16, 5), (32, 16, 16), (None, None, None), (7, None, 7),
                                     (None, 0, None)):
        model = ModelMetadata("m", spec, max_batch_size=stated)
        codec = make_codec(BatchConfig(**base, max_batch_rows=option, v2_model=model))  # type: ignore[arg-type]
        assert codec.max_rows == expected, (option, stated)


def test_max_batch_rows_option(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("[1]\n")

    def parse(*args: str) -> BatchConfig:
        options = ProcessorOptions()
        options.parseOptions(["-d", "x", "-i", str(tmp_path / "in.txt"), *args])
        return options.config()
    assert parse().max_batch_rows is None
    assert parse("--max-batch-rows", "32").max_batch_rows == 32
    assert parse("--max-batch-rows", "none").max_batch_rows is None
    for bad in ("-1", "1000001", "x"):
        with pytest.raises(Exception, match="max-batch-rows"):
            parse("--max-batch-rows", bad)


def test_a_sidecar_may_lower_max_batch_rows_never_raise_it(tmp_path: Path) -> None:
    """The daemon's --max-batch-rows protects the model like its --max-rate: a sidecar only lowers it."""
    base = BatchConfig(deployment_name="m", input_data_path=str(tmp_path / "in.txt"),
                       output_data_path=str(tmp_path / "out.txt"), max_batch_rows=16)
    sidecar = tmp_path / "in.txt.json"

    def applied(settings: dict[str, Any], config: BatchConfig = base) -> int | None:
        sidecar.write_text(json.dumps(settings))
        return apply_sidecar(config, str(sidecar)).max_batch_rows

    assert applied({"max-batch-rows": 8}) == 8
    assert applied({"max-batch-rows": 64}) == 16
    assert applied({"max-batch-rows": "none"}) == 16
    assert applied({}) == 16
    assert applied({"max-batch-rows": 64}, base.replace(max_batch_rows=None)) == 64
    with pytest.raises(Rejected, match="max-batch-rows"):
        applied({"max-batch-rows": 2_000_000})
