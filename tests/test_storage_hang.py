"""Uploads and downloads that end (issue 25): through the real command against a real S3 server
(moto) behind a fault proxy that reads a PUT's or GET's headers and never answers, or that goes
away. The run ends within ``--storage-timeout`` or, on SIGTERM/SIGINT, within ``--drain-timeout``;
every storage failure is exit 3 with one line (no traceback); the staging file stays and
``--resume`` then publishes the whole output once."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from seldon_batch_tx.storage import staging_path
from tests.s3_faults import StallingProxy
from tests.s3_server import S3Server
from tests.servers import SeldonServer
from tests.test_storage_cli import TOOLS, indexes, lines_of, processor, run

BUCKET = "hang-data"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        server.make_bucket(BUCKET)
        yield server


def via(s3: S3Server, proxy: StallingProxy) -> dict[str, str]:
    env = s3.env()
    env["AWS_ENDPOINT_URL"] = proxy.endpoint
    return env


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


def wait_until(condition: object, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError("the condition was not met in time")


def test_a_put_never_answered_ends_within_the_storage_timeout(s3: S3Server, seldon_server: SeldonServer,
                                                                tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_bytes(lines_of(20))
    target = f"s3://{BUCKET}/put/out.txt"
    staging = tmp_path / "staging"
    with StallingProxy(s3.port, lambda method, _: method == "PUT") as proxy:
        started = time.monotonic()
        done = run(processor(seldon_server, "-i", str(source), "-o", target, "--staging-dir", str(staging),
                             "--storage-timeout", "4"), via(s3, proxy))
        took = time.monotonic() - started
    assert done.returncode == 3, done.stderr[-3000:]
    assert proxy.stalled and took < 60, (proxy.stalled, took)
    assert "Traceback" not in done.stderr
    assert "--storage-timeout" in done.stdout and "for --resume" in done.stdout, done.stdout
    assert not s3.exists(target)
    staged = Path(staging_path(target, str(staging)))
    assert sorted(indexes(staged.read_bytes())) == list(range(20))
    again = run(processor(seldon_server, "-i", str(source), "-o", target, "--staging-dir", str(staging),
                          "--resume"), s3.env())
    assert again.returncode == 0, again.stderr[-3000:]
    assert indexes(s3.get(target)) == list(range(20)) and not staged.exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_a_hung_upload_within_the_drain_timeout(s3: S3Server, seldon_server: SeldonServer,
                                                               tmp_path: Path, signum: int) -> None:
    source = tmp_path / "in.txt"
    source.write_bytes(lines_of(30))
    target = f"s3://{BUCKET}/signal/out-{signum}.txt"
    staging = tmp_path / "staging"
    with StallingProxy(s3.port, lambda method, _: method == "PUT") as proxy:
        child = subprocess.Popen(processor(seldon_server, "-i", str(source), "-o", target, "--staging-dir",
                                           str(staging), "--drain-timeout", "2"),
                                 env=via(s3, proxy), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: bool(proxy.stalled) or child.poll() is not None)
            child.send_signal(signum)
            sent = time.monotonic()
            out, err = child.communicate(timeout=60)
            took = time.monotonic() - sent
        finally:
            child.kill()
    assert child.returncode == 3, err[-3000:]
    assert took < 2 + 10, took  # the drain timeout, and the exit
    assert "Traceback" not in err and "interrupted by a signal" in out and "for --resume" in out, out + err
    assert not s3.exists(target)
    staged = Path(staging_path(target, str(staging)))
    assert sorted(indexes(staged.read_bytes())) == list(range(30))


def _object_of_a_complete_run(s3: S3Server, seldon_server: SeldonServer, tmp_path: Path,
                              name: str) -> tuple[Path, str]:
    source = tmp_path / "in.txt"
    source.write_bytes(lines_of(10))
    target = f"s3://{BUCKET}/{name}/out.txt"
    first = run(processor(seldon_server, "-i", str(source), "-o", target, "--staging-dir", str(tmp_path / "a")),
                s3.env())
    assert first.returncode == 0, first.stderr[-3000:]
    return source, target


def test_a_resume_download_never_answered_ends_and_leaves_no_temp_file(s3: S3Server, seldon_server: SeldonServer,
                                                                     tmp_path: Path) -> None:
    source, target = _object_of_a_complete_run(s3, seldon_server, tmp_path, "download")
    staging = tmp_path / "b"  # another machine: the resume must download the object
    key = f"/{BUCKET}/download/out.txt"
    with StallingProxy(s3.port, lambda method, path: method == "GET" and path == key) as proxy:
        started = time.monotonic()
        done = run(processor(seldon_server, "-i", str(source), "-o", target, "--staging-dir", str(staging),
                             "--resume", "--storage-timeout", "3"), via(s3, proxy))
        took = time.monotonic() - started
    assert proxy.stalled and took < 60, (proxy.stalled, took)
    assert done.returncode == 3, done.stderr[-3000:]
    line = one_error_line(done.stderr)
    assert "cannot download" in line and "--storage-timeout" in line, line
    assert list(staging.iterdir()) == []  # no half download taken for a staging file later
    again = run(processor(seldon_server, "-i", str(source), "-o", target, "--staging-dir", str(staging),
                          "--resume"), s3.env())
    assert again.returncode == 0 and "10 from an earlier run" in again.stdout, again.stdout + again.stderr


def test_an_endpoint_gone_before_the_upload_is_exit_3_in_one_line(s3: S3Server, seldon_server: SeldonServer,
                                                                 tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_bytes(lines_of(40))
    target = f"s3://{BUCKET}/gone/out.txt"
    staging = tmp_path / "staging"
    staged = Path(staging_path(target, str(staging)))
    proxy = StallingProxy(s3.port, lambda method, path: False)
    with proxy:
        child = subprocess.Popen(processor(seldon_server, "-i", str(source), "-o", target, "--staging-dir",
                                           str(staging), "-w", "1", "--batch-interval", "0.1"),
                                 env=via(s3, proxy), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: staged.exists() and staged.read_bytes().count(b"\n") >= 2)
            proxy.close()  # the store goes away while the run works
            out, err = child.communicate(timeout=170)
        finally:
            child.kill()
    assert child.returncode == 3, err[-3000:]
    assert "Traceback" not in err and "cannot upload" in out and "for --resume" in out, out + err
    assert sorted(indexes(staged.read_bytes())) == list(range(40))
    again = run(processor(seldon_server, "-i", str(source), "-o", target, "--staging-dir", str(staging),
                          "--resume"), s3.env())
    assert again.returncode == 0 and indexes(s3.get(target)) == list(range(40)), again.stderr[-3000:]


def test_merge_with_a_store_that_goes_away_is_exit_3_in_one_line(s3: S3Server, tmp_path: Path) -> None:
    shards = [s3.put(f"s3://{BUCKET}/merge/out.{i}-of-2", b"".join(
        json.dumps({"data": {"ndarray": [i]}, "meta": {"tags": {"batch_id": "m", "batch_index": n}}}).encode()
        + b"\n" for n in range(i, 6, 2))) for i in range(2)]
    key = f"/{BUCKET}/merge/out.1-of-2"
    with StallingProxy(s3.port, lambda method, path: method == "GET" and path == key, reset=True) as proxy:
        done = run([TOOLS, "merge", "-o", f"s3://{BUCKET}/merge/all.txt", *shards], via(s3, proxy))
    assert proxy.stalled
    assert done.returncode == 3, done.stderr[-3000:]
    line = one_error_line(done.stderr)
    assert "merge/out.1-of-2" in line, line
    assert not s3.exists(f"s3://{BUCKET}/merge/all.txt")



def test_a_signal_ends_a_hung_resume_download_within_the_drain_timeout(s3: S3Server, seldon_server: SeldonServer,
                                                                       tmp_path: Path) -> None:
    source, target = _object_of_a_complete_run(s3, seldon_server, tmp_path, "download-signal")
    staging = tmp_path / "b"
    key = f"/{BUCKET}/download-signal/out.txt"
    with StallingProxy(s3.port, lambda method, path: method == "GET" and path == key) as proxy:
        child = subprocess.Popen(processor(seldon_server, "-i", str(source), "-o", target, "--staging-dir",
                                           str(staging), "--resume", "--drain-timeout", "1"),
                                 env=via(s3, proxy), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: bool(proxy.stalled) or child.poll() is not None)
            child.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            _, err = child.communicate(timeout=60)
            took = time.monotonic() - sent
        finally:
            child.kill()
    assert child.returncode == 3 and took < 1 + 10, (child.returncode, took, err[-3000:])
    line = one_error_line(err)
    assert "cannot download" in line and "interrupted by a signal" in line, line
    assert list(staging.iterdir()) == []


def test_a_store_that_never_answers_at_all_is_refused_before_the_run(s3: S3Server, seldon_server: SeldonServer,
                                                                     tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_bytes(lines_of(3))
    with StallingProxy(s3.port, lambda method, path: True) as proxy:
        started = time.monotonic()
        done = run(processor(seldon_server, "-i", str(source), "-o", f"s3://{BUCKET}/silent/out.txt",
                             "--staging-dir", str(tmp_path / "s"), "--storage-timeout", "3"), via(s3, proxy))
        took = time.monotonic() - started
    assert proxy.stalled and took < 60, took
    assert done.returncode == 2, done.stderr[-3000:]
    line = one_error_line(done.stderr)
    assert "--output-data-path" in line and "no answer from the store within 3 s" in line, line


def test_twistd_one_file_mode_ends_a_hung_upload_on_sigterm(s3: S3Server, seldon_server: SeldonServer,
                                                              tmp_path: Path) -> None:
    from tests.test_tap_usage import twistd

    source = tmp_path / "in.txt"
    source.write_bytes(lines_of(10))
    target = f"s3://{BUCKET}/twistd/out.txt"
    staging = tmp_path / "staging"
    with StallingProxy(s3.port, lambda method, _: method == "PUT") as proxy:
        child = subprocess.Popen(twistd("-d", "echo", "-g", "seldon", "-h", seldon_server.rest_host, "-i", str(source),
                                        "-o", target, "--staging-dir", str(staging), "--drain-timeout", "1",
                                        "--dashboard", "none"),
                                 env=via(s3, proxy), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)
        try:
            wait_until(lambda: bool(proxy.stalled) or child.poll() is not None)
            child.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            out, _ = child.communicate(timeout=60)
            took = time.monotonic() - sent
        finally:
            child.kill()
    # twistd leaves a stop by SIGTERM as killed by it (as every daemon test expects), once shut down
    assert child.returncode == -signal.SIGTERM and took < 1 + 10, (child.returncode, took, out[-3000:])
    assert "interrupted by a signal; it stays there for --resume" in out and "Traceback" not in out, out[-3000:]
    assert not s3.exists(target)
    assert sorted(indexes(Path(staging_path(target, str(staging))).read_bytes())) == list(range(10))
