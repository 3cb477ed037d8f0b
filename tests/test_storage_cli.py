"""Object storage and pipes through the real command: ``seldon-batch-processor``, ``seldon-batch
merge`` and ``verify`` against the real Seldon microservice and a real S3 server (moto, with its
authentication on), all on loopback. Credentials reach the commands as a user gives them: the
environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``...)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from seldon_batch_tx.storage import staging_path
from tests.loopback import loopback_env
from tests.s3_server import S3Server
from tests.servers import SeldonServer

BIN = Path(sys.executable).parent
PROCESSOR = str(BIN / "seldon-batch-processor")
TOOLS = str(BIN / "seldon-batch")
BUCKET = "cli-data"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        server.make_bucket(BUCKET)
        yield server


def lines_of(count: int) -> bytes:
    return b"".join(b"[[%d, %d.5, %d]]\n" % (i, i, -i) for i in range(count))





def indexes(data: bytes) -> list[int]:
    return sorted(json.loads(raw)["meta"]["tags"]["batch_index"] for raw in data.splitlines())


def processor(server: SeldonServer | str, *args: str) -> list[str]:
    host = server if isinstance(server, str) else server.rest_host
    return [PROCESSOR, "-d", "echo", "-g", "seldon", "-h", host, "-w", "4", *args]


def run(args: list[str], env: dict[str, str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=180, check=False,
                          **kwargs)  # type: ignore[call-overload]


def test_round_trip_s3_to_s3_then_verify(s3: S3Server, seldon_server: SeldonServer, tmp_path: Path) -> None:
    source = s3.put(f"s3://{BUCKET}/round/in.txt", lines_of(500))
    target = f"s3://{BUCKET}/round/out.txt"
    done = run(processor(seldon_server, "-i", source, "-o", target, "--staging-dir", str(tmp_path)), s3.env())
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("500 lines: 500 succeeded, 0 failed"), done.stdout
    assert indexes(s3.get(target)) == list(range(500))
    assert os.listdir(tmp_path) == []  # the staging file went once the object was there whole
    check = run([TOOLS, "verify", source, target], s3.env())
    assert check.returncode == 0 and check.stdout.startswith("complete: 500 output lines"), check


def _wait_for_lines(path: str, lines: int, child: subprocess.Popen[bytes], limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and child.poll() is None:
        if os.path.exists(path) and Path(path).read_bytes().count(b"\n") >= lines:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {lines} lines (exit {child.poll()})")


def test_sigkill_sigterm_then_resume_every_line_once(s3: S3Server, seldon_server: SeldonServer,
                                                     tmp_path: Path) -> None:
    """SIGKILL: the lines are in the staging file, the object does not exist; ``--resume`` on the
    same machine continues from the staging file. SIGTERM: the run drains (exit 3) and publishes
    nothing (issue 25: only a complete run uploads); ``--resume`` finishes it from the staging file."""
    total = 1200
    source = s3.put(f"s3://{BUCKET}/kill/in.txt", lines_of(total))
    target = f"s3://{BUCKET}/kill/out.txt"
    staging = tmp_path / "node-a"
    slow = ("-w", "2", "--batch-interval", "0.02", "-u", "kill-test")
    first = subprocess.Popen(processor(seldon_server, "-i", source, "-o", target, "--staging-dir", str(staging),
                                       *slow), env=s3.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    staged = staging_path(target, str(staging))
    try:
        _wait_for_lines(staged, 100, first)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        first.kill()
        first.communicate(timeout=30)
    assert not s3.exists(target)
    second = subprocess.Popen(processor(seldon_server, "-i", source, "-o", target, "--staging-dir", str(staging),
                                        "--resume", *slow), env=s3.env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        _wait_for_lines(staged, 400, second)
        second.send_signal(signal.SIGTERM)
        out, err = second.communicate(timeout=60)
    finally:
        second.kill()
    assert second.returncode == 3, err.decode()[-2000:]
    assert not s3.exists(target)  # a stopped run never publishes its partial output
    partial = Path(staged).read_bytes()
    assert 400 <= partial.count(b"\n") < total and len(set(indexes(partial))) == partial.count(b"\n")
    third = run(processor(seldon_server, "-i", source, "-o", target, "--staging-dir", str(staging),
                          "--resume"), s3.env())
    assert third.returncode == 0, third.stderr[-2000:]
    assert f"{total} lines (" in third.stdout and "from an earlier run" in third.stdout, third.stdout
    assert indexes(s3.get(target)) == list(range(total))  # every line exactly once
    check = run([TOOLS, "verify", source, target], s3.env())
    assert check.returncode == 0, check.stdout + check.stderr


def test_three_shards_and_merge_on_s3(s3: S3Server, seldon_server: SeldonServer, tmp_path: Path) -> None:
    total = 300
    source = s3.put(f"s3://{BUCKET}/shards/in.txt", lines_of(total))
    outputs = [f"s3://{BUCKET}/shards/out.{i}-of-3.txt" for i in range(3)]
    children = [subprocess.Popen(processor(seldon_server, "-i", source, "-o", outputs[i], "-u", "shards",
                                           "--shard-index", str(i), "--shard-count", "3",
                                           "--staging-dir", str(tmp_path / f"pod-{i}")),
                                 env=s3.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for i in range(3)]
    try:
        results = [(c.communicate(timeout=180), c.returncode) for c in children]
    finally:
        for child in children:
            child.kill()
    for i, ((_, err), code) in enumerate(results):
        assert code == 0, err[-2000:]
        assert indexes(s3.get(outputs[i])) == list(range(i, total, 3))
    merged = f"s3://{BUCKET}/shards/merged.txt"
    merge = run([TOOLS, "merge", "-o", merged, "--input", source, *outputs], s3.env())
    assert merge.returncode == 0, merge.stderr
    assert f"merged {total} lines ({total} succeeded, 0 failed) from 3 shard outputs into {merged}" in merge.stderr
    data = s3.get(merged)
    assert [json.loads(raw)["meta"]["tags"]["batch_index"] for raw in data.splitlines()] == list(range(total))
    assert run([TOOLS, "verify", source, merged], s3.env()).returncode == 0
    missing = run([TOOLS, "merge", "-o", f"s3://{BUCKET}/shards/no.txt", "--input", source, *outputs[:2]],
                  s3.env())
    assert missing.returncode == 1 and "100 missing lines" in missing.stderr
    assert not s3.exists(f"s3://{BUCKET}/shards/no.txt")  # a failed merge uploads nothing


@pytest.fixture
def silent_model() -> Iterator[tuple[str, socket.socket]]:
    """A listening socket standing in for the model: any connection attempt stays in its queue."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.setblocking(False)
        yield f"127.0.0.1:{listener.getsockname()[1]}", listener


def _nothing_sent(listener: socket.socket) -> bool:
    try:
        connection, _ = listener.accept()
    except BlockingIOError:
        return True
    connection.close()
    return False


def test_bad_credentials_and_missing_bucket_are_one_line_exit_2_nothing_sent(
        s3: S3Server, silent_model: tuple[str, socket.socket], tmp_path: Path) -> None:
    host, listener = silent_model
    source = s3.put(f"s3://{BUCKET}/access/in.txt", lines_of(3))
    good = s3.env()
    cases = [
        (["-i", source, "-o", f"s3://{BUCKET}/access/out.txt"], {**good, "AWS_SECRET_ACCESS_KEY": "wrong-secret-99"},
         "--input-data-path s3://cli-data/access/in.txt: access denied, check the credentials"),
        (["-i", source, "-o", "s3://no-such-bucket-x/out.txt"], good,
         "--output-data-path s3://no-such-bucket-x/out.txt: the bucket no-such-bucket-x does not exist"),
        (["-i", "s3://no-such-bucket-x/in.txt"], good, "the bucket no-such-bucket-x does not exist"),
        (["-i", f"s3://{BUCKET}/access/missing.txt"], good, "s3://cli-data/access/missing.txt does not exist"),
        (["-i", source, "-o", "-", "--resume"], good, "standard output (-o -) cannot be resumed"),
        (["-i", "-", "-o", str(tmp_path / "o.txt"), "--resume"], good, "standard input (-i -) cannot be read"),
        (["-i", source, "--storage-options", '{"secret": "hunter2"'], good, "--storage-options is not valid JSON"),
    ]
    for args, env, expected in cases:
        done = run(processor(host, *args, "--staging-dir", str(tmp_path)), env)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and expected in lines[0], (args, done.stderr)
        assert lines[0].startswith("seldon-batch-processor: error: ")
        assert "wrong-secret" not in done.stderr and "hunter2" not in done.stderr and s3.secret_key not in done.stderr
        assert done.stdout == ""
    assert _nothing_sent(listener)
    assert not s3.exists(f"s3://{BUCKET}/access/out.txt")


def test_stdin_to_stdout_pipeline(seldon_server: SeldonServer, tmp_path: Path) -> None:
    """``producer | seldon-batch-processor -i - -o - | consumer``: lines stream through; the
    summary is on standard error, standard output holds only output lines."""
    env = loopback_env()
    producer = subprocess.Popen([sys.executable, "-c", "import sys\nfor i in range(400): "
                                 "sys.stdout.write('[[%d, 1.5]]\\n' % i)"], stdout=subprocess.PIPE)
    try:
        scored = subprocess.Popen(processor(seldon_server, "-i", "-"), stdin=producer.stdout,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert producer.stdout is not None
        producer.stdout.close()  # the processor holds the only read end
        consumer = subprocess.run([sys.executable, "-c", "import sys, json\nfor line in sys.stdin: "
                                   "print(json.loads(line)['meta']['tags']['batch_index'])"],
                                  stdin=scored.stdout, capture_output=True, text=True, timeout=120, check=False)
        _, err = scored.communicate(timeout=60)
    finally:
        producer.kill()
        producer.wait(timeout=10)
    assert scored.returncode == 0, err.decode()[-2000:]
    assert consumer.returncode == 0, consumer.stderr
    assert sorted(map(int, consumer.stdout.split())) == list(range(400))
    assert "400 lines: 400 succeeded, 0 failed" in err.decode()
