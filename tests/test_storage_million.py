"""A million lines streamed from S3 in flat memory: the real ``seldon-batch-processor`` reads a
1,000,000-line object from moto's S3 server (authentication on, credentials from the environment)
and writes a local output, against bench/'s loopback nginx (its mini-batch endpoint, ``-s 32``, so
the run takes tens of seconds rather than minutes on two cores).

Peak RSS is the child's ``VmHWM`` (/proc/PID/status), polled while it runs (tests/peak_rss.py): it
must not grow once the run is under way, because the input is streamed through a bounded prefetch
queue (default 4 x 8 MiB chunks, 32 MiB at most) and the output goes to a file line by line, so
nothing grows with the line count; the interpreter with Twisted, s3fs/aiobotocore and botocore's
service models takes about 100-120 MB (measured: 96 MB here for 1,000,000 lines;
bench/storage_bench.py's real-command rows, -s 1: 116 MB for 200,000 lines, local and S3 alike).
Holding the 6 MB input, let alone per-line Python objects for a million lines (hundreds of MB),
would show as growth.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.peak_rss import watch
from tests.s3_server import S3Server

LINES = 1_000_000
TIMEOUT = 180.0
PROCESSOR = str(Path(sys.executable).parent / "seldon-batch-processor")



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
            peaks = watch(child, TIMEOUT, output=output)
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
        peaks.assert_flat()
        print(f"{LINES:,} lines from S3 in {wall:.1f} s ({LINES / wall:,.0f} lines/s), "
              f"peak RSS {peaks.early / 1024:.0f} MB early, {peaks.final / 1024:.0f} MB at the end")
