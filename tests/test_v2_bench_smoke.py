"""bench/v2_binary_bench.py runs end to end on two lines (that it works, never how fast: figures go to
bench/RESULTS.md from runs by hand)."""

from __future__ import annotations

import subprocess
import sys

from tests.loopback import loopback_env
from tests.servers import REPO_ROOT
from tests.triton_servers import ensure_triton_venv


def test_v2_binary_bench_runs() -> None:
    ensure_triton_venv()
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "v2_binary_bench.py"), "-n", "2", "--runs", "1"],
                          capture_output=True, text=True, timeout=300, env=loopback_env(), cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "V2 REST, JSON tensors" in proc.stdout and "V2 REST, --binary-data" in proc.stdout
    assert "binary / JSON lines/s:" in proc.stdout
