"""Peak resident memory of a child process, for the million-line tests.

An absolute bound alone is at the mercy of the host (the same Parquet run peaks at 130-132 MB here
and peaked at 158 MB in the project's CI), while what these tests promise is *flat* memory: what the
run holds must not grow with the lines it has done. So the watcher also takes the peak once the
run's output has reached ``early_bytes`` (start-up, imports and the in-flight window are all in it
by then); the growth after that is what a leak would show (a million rows held as Python objects:
hundreds of MB).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Output written before the early peak is taken: a few per cent of a million lines' output.
EARLY_BYTES = 8 * 1024 * 1024
#: Most the peak may grow after that (a table's final join from the working file takes 19-21 MB here,
#: the CI host's 158 MB peak allows 46 MB); a million rows held as Python objects would be far more.
GROWTH_BOUND_KB = 60 * 1024
#: An absolute ceiling, far below what holding a million rows would take (hundreds of MB). The
#: issues name 150 MB; quiet runs here peak at 112 MB (S3 lines) and 130-132 MB (Parquet rows, the
#: table's join included), but the project's CI once measured 158 MB for the Parquet run, a host
#: difference this machine does not reproduce (not glibc arenas, jemalloc decay, the join's sort
#: runs or load: measured), so the ceiling leaves room and the growth check above is the guard.
RSS_CEILING_KB = 180 * 1024


def vm_hwm_kb(pid: int) -> int:
    """The process's peak resident set (VmHWM, kB); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


@dataclass
class Peaks:
    early: int = 0  # kB, once the output reached EARLY_BYTES (0: it never did)
    final: int = 0  # kB, the whole run's

    def assert_flat(self) -> None:
        """Memory did not grow with the lines done, and stayed under the ceiling."""
        assert 0 < self.early <= self.final, f"early peak {self.early} kB, final {self.final} kB"
        assert self.final - self.early < GROWTH_BOUND_KB, (
            f"peak RSS grew from {self.early / 1024:.0f} MB to {self.final / 1024:.0f} MB during the run")
        assert self.final < RSS_CEILING_KB, f"peak RSS {self.final / 1024:.0f} MB"


def size(path: Path | None) -> int:
    try:
        return path.stat().st_size if path is not None else 0
    except FileNotFoundError:
        return 0


def watch(child: subprocess.Popen[bytes], timeout: float, output: Path | None = None,
          stop_at_bytes: int | None = None) -> Peaks:
    """Poll the child's peak RSS until it exits (or, with ``stop_at_bytes``, SIGKILL its group once
    ``output`` has that many bytes)."""
    peaks = Peaks()
    until = time.monotonic() + timeout
    try:
        while child.poll() is None:
            if time.monotonic() > until:
                pytest.fail(f"still running after {timeout:.0f} s; peak RSS {peaks.final / 1024:.0f} MB")
            peaks.final = max(peaks.final, vm_hwm_kb(child.pid))
            written = size(output)
            if not peaks.early and written >= EARLY_BYTES:
                peaks.early = peaks.final
            if stop_at_bytes is not None and written >= stop_at_bytes:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                break
            time.sleep(0.05)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    return peaks
