"""The smaller storage findings of issue 25, through the real command and twistd against a real S3
server (moto): a run stopped by --max-failures publishes nothing; an input from s3:// stopped midway
reports no estimated total and logs no "None lines"; --storage-options can come from a file (nothing
secret in the process list); --watch-dir with a URL is one line, exit 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from seldon_batch_tx.storage import staging_path
from tests.loopback import loopback_env
from tests.s3_server import S3Server
from tests.servers import SeldonServer
from tests.test_storage_cli import indexes, lines_of, processor, run
from tests.test_storage_hang import one_error_line, wait_until
from tests.test_tap_usage import twistd

BUCKET = "lows-data"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        server.make_bucket(BUCKET)
        yield server


def test_a_run_stopped_by_max_failures_publishes_nothing(s3: S3Server, seldon_server: SeldonServer,
                                                          tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_bytes(b"not a JSON line\n" * 50)  # each line's own input_error (an unreachable model is exit 4)
    target = f"s3://{BUCKET}/stopped/out.txt"
    staging = tmp_path / "staging"
    done = run(processor(seldon_server, "-i", str(source), "-o", target, "--staging-dir", str(staging),
                         "-r", "0", "-w", "1", "--max-failures", "2"), s3.env())
    assert done.returncode == 3, done.stdout + done.stderr
    assert not s3.exists(target)  # the README: the object appears only complete
    kept = Path(staging_path(target, str(staging))).read_bytes()
    assert 2 <= kept.count(b"\n") < 50  # the lines written stay for --resume


def test_an_s3_input_stopped_midway_has_no_estimated_total(s3: S3Server, seldon_server: SeldonServer,
                                                           tmp_path: Path) -> None:
    source = s3.put(f"s3://{BUCKET}/estimate/in.txt", lines_of(3000))
    output = tmp_path / "out.txt"
    child = subprocess.Popen(processor(seldon_server, "-i", source, "-o", str(output), "-w", "1",
                                       "--batch-interval", "0.02", "--log-level", "info"),
                             env=s3.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: output.exists() and output.read_bytes().count(b"\n") >= 30)
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 3, err[-3000:]
    written = output.read_bytes().count(b"\n")
    assert "None lines" not in err and "an unknown number of lines" in err, err[-3000:]
    summary = out.splitlines()[0]
    assert summary.startswith(f"{written} lines of an input whose total is unknown"), summary
    assert " 0 not processed" in summary, summary


def test_storage_options_from_a_file_keep_secrets_out_of_the_process_list(s3: S3Server, seldon_server: SeldonServer,
                                                                           tmp_path: Path) -> None:
    secrets = tmp_path / "storage.json"
    secrets.write_text(json.dumps({"key": s3.access_key, "secret": s3.secret_key}))
    secrets.chmod(0o600)
    env = s3.env()
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    source = s3.put(f"s3://{BUCKET}/file-options/in.txt", lines_of(5))
    target = f"s3://{BUCKET}/file-options/out.txt"
    args = processor(seldon_server, "-i", source, "-o", target, "--staging-dir", str(tmp_path / "s"),
                     "--storage-options-file", str(secrets))
    assert s3.secret_key not in " ".join(args)  # what ps shows
    done = run(args, env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert indexes(s3.get(target)) == list(range(5))
    both = run([*args, "--storage-options", "{}"], env)
    assert both.returncode == 2 and "cannot be used with --storage-options" in one_error_line(both.stderr)
    helped = run([processor(seldon_server)[0], "--help"], loopback_env())
    text = " ".join(helped.stdout.split())
    assert "process list" in text[text.index("--storage-options="):text.index("--storage-options-file=")]


def test_watch_dir_with_a_url_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(twistd("-d", "m", "-g", "seldon", "--watch-dir", "s3://bucket/watch", "--dashboard",
                                 "none"), env=loopback_env(), cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    line = one_error_line(done.stderr)
    assert "--watch-dir s3://bucket/watch" in line and "must be a local directory" in line, line
    assert os.listdir(tmp_path) == []  # nothing made under a local "s3:" directory
