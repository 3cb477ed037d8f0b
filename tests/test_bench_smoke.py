"""bench/run.py runs end to end on a tiny subset and prints its table.

Only that the suite works is checked here, never how fast anything is: the benchmark is
run by hand (`.venv/bin/python bench/run.py`), its figures go to bench/RESULTS.md.
"""

from __future__ import annotations

import subprocess
import sys

from tests.loopback import loopback_env
from tests.servers import REPO_ROOT

RUN = REPO_ROOT / "bench" / "run.py"


def test_quick_subset_prints_a_table() -> None:
    """One row of ours against nginx (no other venv needed): servers start, the run is
    verified line by line, and the table and targets are printed."""
    result = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--no-results", "--only", "ours-nginx-w50-b?"],
        cwd=str(REPO_ROOT), env=loopback_env(), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=80,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    assert "| row | tool | server |" in out
    row = next(line for line in out.splitlines() if line.startswith("| ours-nginx-w50-b1 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[6] not in ("-", ""), row  # a rate was measured, so the run was valid
    assert "invalid" not in row
    assert "## Server ceilings" in out


def test_list_names_rows() -> None:
    result = subprocess.run(
        [sys.executable, str(RUN), "--list"], cwd=str(REPO_ROOT), env=loopback_env(),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    ids = [line.split()[0] for line in result.stdout.splitlines()]
    assert "ours-nginx-w50-b1" in ids and "original-nginx-w50-b1" in ids and "mlserver-nginx-w50-b1" in ids
