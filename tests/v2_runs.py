"""Shared by the real-server V2 tests: run the CLI on some lines and read its output lines back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.loopback import loopback_env
from tests.servers import REPO_ROOT

PROCESSOR = str(Path(sys.executable).parent / "seldon-batch-processor")
REFERENCE = REPO_ROOT / "tests" / "triton_reference.py"
TRITON_PYTHON = REPO_ROOT / ".venvs" / "triton" / "bin" / "python"


def run_v2(host: str, transport: str, model: str, tmp_path: Path, lines: list[str], *args: str,
           timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    """Run the CLI (``--protocol v2``) on ``lines``; the output lines in input order, each index exactly once."""
    src, out = tmp_path / "in.txt", tmp_path / "in.out.txt"
    src.write_text("".join(line + "\n" for line in lines))
    out.unlink(missing_ok=True)
    proc = subprocess.run([PROCESSOR, "--protocol", "v2", "-d", model, "-g", "seldon", "-t", transport, "-h", host,
                           "-i", str(src), "-o", str(out), "-u", "B", *args],
                          capture_output=True, text=True, timeout=timeout, env=loopback_env())
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    indexes = sorted(r["meta"]["tags"]["batch_index"] for r in records)
    assert indexes == list(range(len(lines))), proc.stderr[-3000:]
    return proc, sorted(records, key=lambda r: r["meta"]["tags"]["batch_index"])


def outputs(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A result line's outputs by name (``shape`` and ``data`` only); AssertionError for an error line."""
    assert "outputs" in record, record
    return {o["name"]: {"shape": o["shape"], "data": o["data"]} for o in record["outputs"]}


def reference(mode: str, model: str, requests: list[dict[str, Any]], url: str = "") -> list[dict[str, Any]]:
    """Triton's side (tests/triton_reference.py in .venvs/triton): the model's own function, or tritonclient."""
    job = json.dumps({"mode": mode, "url": url, "model": model, "requests": requests})
    proc = subprocess.run([str(TRITON_PYTHON), str(REFERENCE)], input=job, capture_output=True, text=True,
                          timeout=120, env=loopback_env(), check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: list[dict[str, Any]] = json.loads(proc.stdout)
    return result
