"""A million lines streamed from S3 in flat memory: the real ``seldon-batch-processor`` reads a
1,000,000-line object from moto's S3 server (authentication on, credentials from the environment)
and writes a local output, against bench/'s loopback nginx (its mini-batch endpoint, ``-s 32``,
so the run takes tens of seconds rather than minutes on two cores).

Peak RSS is the child's ``VmHWM`` (/proc/PID/status), polled while it runs. The bound, 150 MB:
the input is streamed through a bounded prefetch queue (default 4 x 8 MiB chunks, 32 MiB at
most) and the output goes to a file line by line, so nothing grows with the line count; the
interpreter with Twisted, s3fs/aiobotocore and botocore's service models takes about 100-120 MB
(measured: 96 MB here for 1,000,000 lines; bench/storage_bench.py's real-command rows, -s 1:
116 MB for 200,000 lines, local and S3 alike), leaving room for allocator noise.
Holding the 6 MB input, let alone per-line Python objects for a million lines (hundreds of MB),
would exceed it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.s3_server import S3Server

LINES = 1_000_000
RSS_BOUND_KB = 150 * 1024
TIMEOUT = 180.0
PROCESSOR = str(Path(sys.executable).parent / "seldon-batch-processor")



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


def test_million_lines_from_s3_in_flat_memory(tmp_path: Path) -> None:
    from bench.servers import NginxServer

    with S3Server(tmp_path / "moto.log") as s3, NginxServer(workers=1, rows=32) as nginx:
        s3.make_bucket("million")
        url = "s3://million/input.txt"
        s3.put(url, b"[[1]]\n" * LINES)
        output = tmp_path / "output.txt"
        log = tmp_path / "processor.log"
        command = [PROCESSOR, "-d", "bench", "-g", "seldon", "-h", nginx.batch_host, "-t", "rest",
                   "-a", "data", "-p", "ndarray", "-w", "50", "-s", "32", "-i", url, "-o", str(output)]
        start = time.monotonic()
        with open(log, "wb") as out:
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     env=s3.env(), start_new_session=True)
            peak = 0
            try:
                while child.poll() is None:
                    if time.monotonic() - start > TIMEOUT:
                        pytest.fail(f"still running after {TIMEOUT:.0f} s; peak RSS {peak / 1024:.0f} MB")
                    peak = max(peak, vm_hwm_kb(child.pid))
                    time.sleep(0.05)
            finally:
                if child.poll() is None:
                    os.killpg(child.pid, 9)
                    child.wait()
        wall = time.monotonic() - start
        tail = log.read_text(errors="replace")[-2000:]
        assert child.returncode == 0, tail
        count = failures = 0
        with open(output, "rb") as f:
            for line in f:
                count += 1
                failures += b'"FAILURE"' in line
        assert count == LINES, tail
        assert failures == 0, tail
        assert 0 < peak < RSS_BOUND_KB, f"peak RSS {peak / 1024:.0f} MB (bound {RSS_BOUND_KB / 1024:.0f} MB)"
        print(f"{LINES:,} lines from S3 in {wall:.1f} s ({LINES / wall:,.0f} lines/s), peak RSS {peak / 1024:.0f} MB")
