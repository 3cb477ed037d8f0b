"""storage against a real S3-compatible server on loopback (moto's server mode, with its
authentication on): round trip, a million-line object in flat memory, resume from staging and
from the uploaded object, multipart uploads, merge, and one-line messages for bad credentials
and missing buckets or objects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seldon_batch_tx.storage import check_access, filesystem, merge_paths, open_input, stage_output
from tests.s3_server import S3Server

BUCKET = "batch-data"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        server.make_bucket(BUCKET)
        yield server




def test_round_trip_through_staging_with_a_multipart_upload(s3: S3Server, tmp_path: Path) -> None:
    lines = b"".join(b'{"index": %d, "pad": "%s"}\n' % (i, b"p" * 200) for i in range(60_000))  # ~13 MB
    source_url = s3.put(f"s3://{BUCKET}/round/in.txt", lines)
    with open_input(source_url, s3.options(), count=True, chunk_bytes=1 << 20) as source:
        assert source.size == len(lines) and source.total_lines == 60_000
        assert b"".join(source.stream) == lines
    out_url = f"s3://{BUCKET}/round/out.txt"
    staged = stage_output(out_url, str(tmp_path), s3.options())
    staged.part_bytes = 5 << 20  # S3's smallest part: three parts for 13 MB
    Path(staged.local_path or "").write_bytes(lines)
    assert staged.upload() == len(lines) and not os.path.exists(staged.local_path or "")
    assert s3.get(out_url) == lines
    etag = s3.client().head_object(Bucket=BUCKET, Key="round/out.txt")["ETag"]
    assert etag.strip('"').endswith("-3")  # a multipart object: it appeared only when complete


def test_resume_from_staging_then_from_the_uploaded_object(s3: S3Server, tmp_path: Path) -> None:
    url = f"s3://{BUCKET}/resume/out.txt"
    first = stage_output(url, str(tmp_path), s3.options())
    Path(first.local_path or "").write_bytes(b"line 0\nline 1\n")  # a run killed here uploads nothing
    second = stage_output(url, str(tmp_path), s3.options(), resume=True)
    assert second.resumed_from == "staging" and second.local_path == first.local_path
    with open(second.local_path or "", "ab") as f:
        f.write(b"line 2\n")
    second.upload()  # the run stopped (exit 3) or finished: its lines are in the object
    assert s3.get(url) == b"line 0\nline 1\nline 2\n"
    elsewhere = tmp_path / "another-pod"  # no staging file there: the object is the starting point
    third = stage_output(url, str(elsewhere), s3.options(), resume=True)
    assert third.resumed_from == "object"
    assert Path(third.local_path or "").read_bytes() == b"line 0\nline 1\nline 2\n"
    fresh = stage_output(f"s3://{BUCKET}/resume/none.txt", str(elsewhere), s3.options(), resume=True)
    assert fresh.resumed_from is None and not os.path.exists(fresh.local_path or "")


def test_three_shards_merge_into_one_object(s3: S3Server, tmp_path: Path) -> None:
    shards = [s3.put(f"s3://{BUCKET}/merge/out.{n}-of-3", b"".join(b"%d\n" % i for i in range(n, 30, 3)))
              for n in range(3)]
    merged = f"s3://{BUCKET}/merge/out.txt"
    with merge_paths(shards, merged, s3.options(), str(tmp_path)) as work:
        lines = sorted((line for p in work.shards for line in Path(p).read_bytes().splitlines()), key=int)
        Path(work.output).write_bytes(b"".join(line + b"\n" for line in lines))
    assert s3.get(merged) == b"".join(b"%d\n" % i for i in range(30))
    assert os.listdir(tmp_path) == []  # the local copies are gone


def test_access_messages_are_one_line_without_secrets(s3: S3Server) -> None:
    url = s3.put(f"s3://{BUCKET}/access/in.txt", b"x\n")
    assert check_access(url, s3.options()) is None
    assert check_access(f"s3://{BUCKET}/access/out.txt", s3.options(), for_write=True) is None
    bad_secret = dict(s3.options(), secret="not-the-secret-1234")
    bad_key = dict(s3.options(), key="AKIANOTAKEY0000000")
    cases: list[tuple[str, dict[str, Any], bool, str]] = [
        (url, bad_secret, False, "access denied, check the credentials"),
        (url, bad_key, True, "access denied, check the credentials"),
        ("s3://no-such-bucket-here/in.txt", s3.options(), False, "the bucket no-such-bucket-here does not exist"),
        ("s3://no-such-bucket-here/out.txt", s3.options(), True, "the bucket no-such-bucket-here does not exist"),
        (f"s3://{BUCKET}/access/missing.txt", s3.options(), False, "does not exist"),
        (f"s3://{BUCKET}", s3.options(), False, "give s3://BUCKET/KEY"),
    ]
    for target, options, for_write, expected in cases:
        message = check_access(target, options, for_write)
        assert message is not None and expected in message, (target, message)
        assert "\n" not in message and s3.secret_key not in message and "not-the-secret" not in message
    assert "signature" in (check_access(url, bad_secret) or "")
    assert "Access Key Id" in (check_access(url, bad_key) or "")


def test_credentials_from_the_environment_and_a_missing_object_on_open(s3: S3Server) -> None:
    url = s3.put(f"s3://{BUCKET}/env/in.txt", b"a\nb\n")
    code = ("import sys; from seldon_batch_tx.storage import open_input, check_access, StorageError\n"
            f"assert check_access({url!r}) is None\n"
            f"print(open_input({url!r}).stream.read().decode(), end='')\n"
            f"try: open_input({url!r} + '.missing')\n"
            "except StorageError as e: print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], env=s3.env(), cwd=ROOT, capture_output=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout.decode() == f"a\nb\n{url}.missing does not exist\n"


# VmHWM, the peak RSS of this process image (ru_maxrss would carry the parent's peak over exec)
STREAM_SCRIPT = """
import json, sys
from seldon_batch_tx.storage import filesystem, open_input
def peak_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
fs, rpath = filesystem(sys.argv[1])
fs.info(rpath)  # libraries loaded and a connection made before the baseline
before = peak_kib()
source = open_input(sys.argv[1])
count = sum(1 for _ in iter(lambda: source.stream.readline((64 << 20) + 1), b""))
after = peak_kib()
print(json.dumps({"lines": count, "size": source.size, "before_kib": before, "after_kib": after}))
"""


def test_a_million_line_object_streams_in_flat_memory(s3: S3Server, tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    with open(path, "wb", buffering=1 << 20) as f:
        for i in range(1_000_000):
            f.write(b'{"index": %d, "payload": [%d, %d, %d], "pad": "%s"}\n' % (i, i, i + 1, i + 2, b"q" * 60))
    url = f"s3://{BUCKET}/big/in.txt"
    fs, rpath = filesystem(url, s3.options())
    fs.put_file(str(path), rpath, chunksize=16 << 20)
    size = path.stat().st_size
    path.unlink()
    done = subprocess.run([sys.executable, "-c", STREAM_SCRIPT, url], env=s3.env(), cwd=ROOT,
                          capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    result = json.loads(done.stdout)
    assert result["lines"] == 1_000_000 and result["size"] == size > 100 << 20
    grown_mib = (result["after_kib"] - result["before_kib"]) / 1024
    print(f"streamed {size >> 20} MiB, peak RSS {result['before_kib'] >> 10} -> {result['after_kib'] >> 10} MiB")
    # the prefetch queue (4 x 8 MiB), the chunk being fetched and the read buffer: far below the object
    assert grown_mib < 64, f"peak RSS grew {grown_mib:.0f} MiB while streaming {size >> 20} MiB"
