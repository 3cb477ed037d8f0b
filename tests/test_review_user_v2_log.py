"""A new user's first V2 run against the real MLServer (README "Try it"): the log says what happens.

Found in review: the metadata request logged Twisted's "Starting factory" / "Stopping factory"
lines (an unquiet connection pool), and a model that declares no inputs (MLServer's example) was
logged as "one request at a time (no batch dimension)" while ``-s`` went on stacking lines.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from seldon_batch_tx.protocols.v2_metadata import ModelMetadata, TensorSpec
from tests.mlserver_servers import MLServerServer
from tests.v2_runs import run_v2


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_log_of_a_model_without_declared_inputs(mlserver_server: MLServerServer, transport: str,
                                                 tmp_path: Path) -> None:
    """The discovery line says the options decide, the lines are stacked by -s, and no Twisted pool noise."""
    host = mlserver_server.rest_host if transport == "rest" else mlserver_server.grpc_host
    lines = [f"[{i}, {i + 1}]" for i in range(8)]
    proc, records = run_v2(host, transport, "echo", tmp_path, lines, "-s", "4", "-w", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "inputs none declared" in log and "requests follow the options as given" in log, log[-3000:]
    assert "one request at a time" not in log
    assert "Starting factory" not in log and "Stopping factory" not in log, log[-3000:]
    assert {r["parameters"]["seen_rows"] for r in records} == {4}  # -s 4 did stack four lines per request


def test_describe_names_what_the_codec_does() -> None:
    """Declared inputs: batching follows their first dimension; none declared: the options."""
    batching = ModelMetadata("m", (TensorSpec("x", "FP32", (-1, 3)),))
    fixed = ModelMetadata("m", (TensorSpec("x", "FP32", (3,)),))
    assert batching.describe().endswith("; batches rows")
    assert fixed.describe().endswith("; one request at a time (no batch dimension)")
    assert ModelMetadata("m", ()).describe().endswith("; requests follow the options as given")
