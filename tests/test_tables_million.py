"""A 1,000,000-row Parquet input streamed in flat memory, and a run killed midway then resumed.

The real ``seldon-batch-processor`` reads a million-row Parquet file (several row groups) against
bench/'s loopback nginx (its 32-row mini-batch answer, ``-s 32``, so the run takes tens of seconds
on two cores) and writes a Parquet table. Peak RSS is the child's ``VmHWM``, polled while it runs
(tests/peak_rss.py): it must not grow once the run is under way, because rows are read a record
batch at a time, the working file is written line by line in input order and the table is joined
from it in one streamed pass (holding the rows, a million Python objects, would take hundreds of
MB). A run of 60,000 rows, one per request, is SIGKILLed once a third of its rows are written and
finished with ``--resume``: its table equals an uninterrupted run's.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tests.peak_rss import watch

ROWS = 1_000_000
#: Rows of the killed-and-resumed run (one request each: tens of seconds).
RESUME_ROWS = 60_000
TIMEOUT = 300.0
PROCESSOR = str(Path(sys.executable).parent / "seldon-batch-processor")


def make_input(path: Path, rows: int) -> None:
    n = pa.array(range(rows), pa.int64())
    table = pa.table({"id": n, "a": pc.multiply(n, 0.5), "b": pc.add(n, 1),
                      "c": pc.multiply(n, 2), "d": pc.subtract(n, 7)})
    pq.write_table(table, path, row_group_size=100_000)


def start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def same_tables(a: Path, b: Path) -> bool:
    """Equal row by row, a row group at a time (never both whole in memory)."""
    fa, fb = pq.ParquetFile(a), pq.ParquetFile(b)
    if fa.metadata.num_rows != fb.metadata.num_rows or fa.schema_arrow != fb.schema_arrow:
        return False
    return all(x.equals(y) for x, y in zip(fa.iter_batches(65536), fb.iter_batches(65536), strict=True))


def test_million_parquet_rows_stream_in_flat_memory_to_a_parquet_table(tmp_path: Path) -> None:
    from bench.servers import NginxServer

    source = tmp_path / "million.parquet"
    make_input(source, ROWS)
    log = tmp_path / "processor.log"
    with NginxServer(workers=1, rows=32) as nginx:
        whole = start([PROCESSOR, "-d", "bench", "-g", "seldon", "-h", nginx.batch_host, "-w", "50", "-s", "32",
                       "--columns", "a,b,c,d", "-i", str(source), "-o", str(tmp_path / "whole.parquet")], log)
        peaks = watch(whole, TIMEOUT, output=tmp_path / "whole.parquet.jsonl")
    assert whole.returncode == 0, log.read_text(errors="replace")[-2000:]
    peaks.assert_flat()
    print(f"{ROWS:,} Parquet rows: peak RSS {peaks.early / 1024:.0f} MB early, {peaks.final / 1024:.0f} MB at the end")
    table = pq.ParquetFile(tmp_path / "whole.parquet")
    assert table.metadata.num_rows == ROWS
    assert table.schema_arrow.names == ["id", "a", "b", "c", "d", "t:0", "t:1", "t:2", "t:3", "status",
                                        "error_kind", "error_reason", "batch_index"]
    for batch in table.iter_batches(65536, columns=["id", "batch_index", "status"]):
        assert batch.column(0).equals(batch.column(1))  # every row once, in input order
        assert set(batch.column(2).to_pylist()) == {"success"}


def test_a_run_killed_midway_resumes_to_the_table_of_an_uninterrupted_run(tmp_path: Path) -> None:
    """One row per request here (nginx's fixed 32-row answer would not fit a resumed run's partial units)."""
    from bench.servers import NginxServer

    rows = RESUME_ROWS
    source = tmp_path / "rows.parquet"
    make_input(source, rows)
    log = tmp_path / "processor.log"
    with NginxServer(workers=1) as nginx:
        def command(output: str, *more: str) -> list[str]:
            return [PROCESSOR, "-d", "bench", "-g", "seldon", "-h", nginx.host, "-w", "50", "--columns", "a,b,c,d",
                    "-i", str(source), "-o", str(tmp_path / output), *more]

        whole = start(command("whole.parquet"), log)
        watch(whole, TIMEOUT)
        assert whole.returncode == 0, log.read_text(errors="replace")[-2000:]
        line_bytes = (tmp_path / "whole.parquet.jsonl").stat().st_size // rows
        killed = start(command("killed.parquet"), log)
        watch(killed, TIMEOUT, output=tmp_path / "killed.parquet.jsonl", stop_at_bytes=line_bytes * rows // 3)
        assert killed.returncode == -signal.SIGKILL and not (tmp_path / "killed.parquet").exists()
        resumed = start(command("killed.parquet", "--resume"), log)
        watch(resumed, TIMEOUT)
        assert resumed.returncode == 0, log.read_text(errors="replace")[-2000:]
    assert "from an earlier run" in log.read_text(errors="replace")
    assert same_tables(tmp_path / "whole.parquet", tmp_path / "killed.parquet")
