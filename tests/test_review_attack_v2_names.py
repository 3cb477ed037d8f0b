"""Review attack: a V2 line whose object names thousands of inputs the model does not have.

The error line listed every name (a 1.3 MB line made a 1 MB error line, 40,000 names no one reads);
it now lists at most ten, each cut, and says how many more there are.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from seldon_batch_tx.protocols.v2_inputs import MAX_LISTED, listed
from tests.loopback import loopback_env
from tests.triton_servers import TritonServer, ensure_triton_venv
from tests.v2_runs import PROCESSOR


def test_listed_names_are_bounded() -> None:
    assert listed(["a", "b"]) == "a, b"
    many = listed(f"n{i}" for i in range(1000))
    assert many.endswith(f"n{MAX_LISTED - 1} and {1000 - MAX_LISTED} more")
    assert len(listed(["x" * 10_000] * 3)) < 400


def test_real_triton_line_of_many_unknown_inputs(tmp_path: Path) -> None:
    ensure_triton_venv()
    line = json.dumps({f"unknown_input_{i:06d}": 1 for i in range(40_000)})
    src, out = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text(line + "\n" + json.dumps({"INPUT0": [1.0, 2.0], "INPUT1": [3.0, 4.0], "X": 1}) + "\n")
    with TritonServer(["add_sub"]) as server:
        proc = subprocess.run([PROCESSOR, "--protocol", "v2", "-d", "add_sub", "-g", "seldon", "-t", "rest",
                               "-h", server.rest_host, "-i", str(src), "-o", str(out)],
                              capture_output=True, text=True, timeout=120, env=loopback_env())
    records = sorted((json.loads(x) for x in out.read_text().splitlines()),
                     key=lambda r: r["meta"]["tags"]["batch_index"])
    assert proc.returncode == 1 and len(records) == 2, proc.stderr[-2000:]
    first, second = (r["status"]["reason"] for r in records)
    assert first.startswith("the model has no input unknown_input_000000, ") and len(first) < 1000
    assert f"and {40_000 - MAX_LISTED} more (its inputs: INPUT0, INPUT1)" in first
    assert second == "the model has no input X (its inputs: INPUT0, INPUT1)"
