"""storage: the URL layer, the prefetching stream, stdin/stdout helpers and staged outputs on
fsspec's in-memory filesystem (the S3 tests against a real server are in test_storage_s3.py)."""

from __future__ import annotations

import io
import os
import threading
import time
import uuid
from pathlib import Path

import pytest
import pytest_twisted

from seldon_batch_tx.storage import (
    StdoutLines,
    StorageError,
    check_access,
    display,
    filesystem,
    is_remote,
    is_stdio,
    merge_paths,
    open_input,
    open_output,
    parse_storage_options,
    prefetching,
    redact,
    stage_output,
    storage_options,
)
from seldon_batch_tx.storage.paths import BOTOCORE_LIMITS


def test_paths_tell_local_remote_and_stdio() -> None:
    assert is_remote("s3://bucket/key") and is_remote("gs://b/k") and is_remote("memory://x")
    assert not is_remote("data/in.txt") and not is_remote("file:///tmp/x") and not is_remote("-")
    assert is_stdio("-") and not is_stdio("./-")


def test_secrets_are_never_shown() -> None:
    assert display("ftp://user:pa55@host/x?sig=abc") == "ftp://***@host/x?***"
    shown = redact({"key": "AKIA", "secret": "s", "token": "t", "anon": False,
                    "client_kwargs": {"region_name": "r", "aws_session_token": "x"}})
    assert shown == {"key": "***", "secret": "***", "token": "***", "anon": False,
                     "client_kwargs": {"region_name": "r", "aws_session_token": "***"}}
    with pytest.raises(StorageError) as bad:
        parse_storage_options('{"secret": "hunter2"')
    assert "hunter2" not in str(bad.value) and "--storage-options" in str(bad.value)
    with pytest.raises(StorageError, match="JSON object"):
        parse_storage_options('["x"]')
    assert parse_storage_options('{"anon": true}') == {"anon": True}


def test_endpoint_from_environment_unless_given() -> None:
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}
    limits = {"config_kwargs": BOTOCORE_LIMITS}  # bounded botocore timeouts and retries (issue 25)
    assert storage_options("s3://b/k", {}, env) == {"endpoint_url": "http://127.0.0.1:9000", **limits}
    assert storage_options("s3://b/k", {"endpoint_url": "http://x"}, env) == {"endpoint_url": "http://x", **limits}
    assert storage_options("gs://b/k", {}, env) == {}
    assert storage_options("s3://b/k", {}, {"AWS_ENDPOINT_URL_S3": "http://s3", **env})["endpoint_url"] == "http://s3"


def test_unknown_protocol_is_one_line() -> None:
    with pytest.raises(StorageError, match="unknown storage protocol nosuch://"):
        filesystem("nosuch://b/k")
    message = check_access("nosuch://b/k")
    assert message is not None and "\n" not in message


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_prefetched_lines_match_a_buffered_file(chunk: int) -> None:
    data = b"".join(b"line %d %s\n" % (i, b"x" * (i % 97)) for i in range(3000)) + b"last without newline"
    stream = prefetching(io.BytesIO(data).read, chunk_bytes=chunk, depth=2, buffer_bytes=4096)
    reference = io.BufferedReader(io.BytesIO(data))  # type: ignore[arg-type]
    for limit in (-1, 5, 100, 33) * 2000:  # readline(limit) as the reader calls it, across chunk edges
        got, want = stream.readline(limit), reference.readline(limit)
        assert got == want
        if not want:
            break
    assert stream.read() == reference.read() == b""
    stream.close()


def test_prefetch_queue_is_bounded_and_close_stops_the_thread() -> None:
    reads: list[int] = []

    def endless(n: int) -> bytes:
        reads.append(n)
        return b"x" * n

    before = threading.active_count()
    stream = prefetching(endless, chunk_bytes=1000, depth=3)
    time.sleep(0.3)
    assert len(reads) <= 3 + 2  # the queue's depth, one waiting to be queued, one being read
    stream.close()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before


def test_a_failed_read_reaches_the_reader_and_a_stall_times_out() -> None:
    def failing(n: int) -> bytes:
        raise ConnectionResetError("reset by peer")

    with pytest.raises(StorageError, match="read failed: ConnectionResetError: reset by peer"):
        prefetching(failing, name="s3://b/k").readline()
    gate = threading.Event()

    def stalls(n: int) -> bytes:
        gate.wait(10)
        return b""

    stalled = prefetching(stalls, timeout=0.2, name="s3://b/k")
    with pytest.raises(StorageError, match="no data from the store for 0 s"):
        stalled.readline()
    gate.set()
    stalled.close()


def test_stdin_lines_arrive_as_they_are_written_and_count_is_refused() -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as pipe_in, os.fdopen(write_fd, "wb", buffering=0) as pipe_out:
        source = open_input("-", stdin=pipe_in)
        assert source.size is None and source.total_lines is None
        pipe_out.write(b'{"a": 1}\n')
        assert source.stream.readline() == b'{"a": 1}\n'  # not held back for a whole chunk
        pipe_out.write(b'{"a": 2}\n')
        pipe_out.close()
        assert list(source.stream) == [b'{"a": 2}\n']
        source.close()
    with pytest.raises(StorageError, match="standard input"):
        open_input("-", count=True)


def test_stdout_lines_and_resume_refused() -> None:
    out = io.BytesIO()
    lines = StdoutLines(out)  # type: ignore[arg-type]
    lines.write({"a": 1, "b": "é"})
    assert out.getvalue() == b""
    lines.flush()
    lines.write({"a": 2})
    lines.close()
    assert out.getvalue() == '{"a":1,"b":"é"}\n{"a":2}\n'.encode()
    assert lines.lines_written == 2
    with pytest.raises(StorageError, match=r"standard output \(-o -\) cannot be resumed"):
        stage_output("-", resume=True)
    assert stage_output("-").stdout


def test_local_input_counts_and_estimates(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"".join(b"%d\n" % i for i in range(1000)))
    with open_input(str(path), count=True) as source:
        assert source.total_lines == 1000
    with open_input(str(path)) as source:
        for _ in range(500):
            source.stream.readline()
        estimate = source.estimate_total(500)
        assert estimate is not None and estimate >= 500
    assert check_access(str(tmp_path / "missing.txt")) is not None
    assert check_access(str(tmp_path / "out.txt"), for_write=True) is None
    assert "does not exist" in (check_access(str(tmp_path / "no" / "out.txt"), for_write=True) or "")


def test_memory_url_round_trip_resume_and_merge(tmp_path: Path) -> None:
    url = f"memory://bucket-{uuid.uuid4().hex}/out.txt"
    staged = stage_output(url, str(tmp_path))
    assert staged.local_path is not None and staged.resumed_from is None
    Path(staged.local_path).write_bytes(b"a\nb\n")
    assert staged.upload() == 4 and not os.path.exists(staged.local_path)
    with open_input(url, count=True) as source:
        assert source.total_lines == 2 and source.size == 4 and source.stream.read() == b"a\nb\n"
    again = stage_output(url, str(tmp_path), resume=True)  # no staging file: the object is downloaded
    assert again.resumed_from == "object" and Path(again.local_path or "").read_bytes() == b"a\nb\n"
    assert stage_output(url, str(tmp_path), resume=True).resumed_from == "staging"
    merged = url.replace("out.txt", "merged.txt")
    with merge_paths([url, str(tmp_path / "local-shard")], merged, staging_dir=str(tmp_path)) as work:
        assert Path(work.shards[0]).read_bytes() == b"a\nb\n" and work.shards[1] == str(tmp_path / "local-shard")
        Path(work.output).write_bytes(b"merged\n")
    with open_input(merged) as source:
        assert source.stream.read() == b"merged\n"


@pytest_twisted.ensureDeferred
async def test_open_output_and_finish_run_in_the_thread_pool(tmp_path: Path) -> None:
    from twisted.internet import reactor

    url = f"memory://bucket-{uuid.uuid4().hex}/out.txt"
    staged = await open_output(url, reactor, str(tmp_path))
    Path(staged.local_path or "").write_bytes(b"x\n")
    assert await staged.finish(reactor) == 2 and staged.uploaded
    local = await open_output(str(tmp_path / "plain.txt"), reactor)
    assert local.local_path == str(tmp_path / "plain.txt") and await local.finish(reactor) == 0
