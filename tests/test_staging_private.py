"""Staging that other local users cannot touch, and one key per object (issue 25), through the real
command against a real S3 server (moto): a staging directory made first by another user, or a link,
is refused in one line (exit 2, nothing sent); a shared one gets a private per-user subdirectory;
a link planted at the download's name is never written through; a refused ``--resume`` leaves no
stale copy that keeps refusing; ``s3a://`` and ``s3://`` share the output lock; an output URL with
``?`` is refused; a killed ``--retry-failed``'s temp file is removed by the next run."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from seldon_batch_tx.outputs.resume import TEMP_SUFFIX, temp_prefix
from seldon_batch_tx.storage import staging_path
from tests.loopback import loopback_env
from tests.s3_server import S3Server
from tests.servers import SeldonServer
from tests.test_storage_cli import indexes, lines_of, processor, run
from tests.test_storage_hang import one_error_line

BUCKET = "private-data"
NOBODY = 65534


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        server.make_bucket(BUCKET)
        yield server


def shared_dir(path: Path) -> Path:
    path.mkdir()
    path.chmod(0o1777)  # like /tmp
    return path


def source_of(tmp_path: Path, count: int = 7) -> str:
    source = tmp_path / "in.txt"
    source.write_bytes(lines_of(count))
    return str(source)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
@pytest.mark.parametrize("how", ["--staging-dir", "TMPDIR"])
def test_a_staging_dir_another_user_made_first_is_refused(s3: S3Server, seldon_server: SeldonServer,
                                                          tmp_path: Path, how: str) -> None:
    shared = shared_dir(tmp_path / "tmp")
    planted = shared / f"seldon-batch-staging-{os.geteuid()}"
    planted.mkdir()
    os.chown(planted, NOBODY, NOBODY)
    planted.chmod(0o777)
    target = f"s3://{BUCKET}/planted/{how}.txt"
    env = s3.env()
    args = ["-i", source_of(tmp_path), "-o", target]
    if how == "TMPDIR":
        env["TMPDIR"] = str(shared)
    else:
        args += ["--staging-dir", str(shared)]
    done = run(processor(seldon_server, *args), env)
    assert done.returncode == 2, done.stdout + done.stderr
    line = one_error_line(done.stderr)
    assert f"belongs to uid {NOBODY}" in line and str(planted) in line, line
    assert list(planted.iterdir()) == [] and not s3.exists(target)


def test_a_shared_staging_dir_gets_a_private_subdirectory(s3: S3Server, seldon_server: SeldonServer,
                                                          tmp_path: Path) -> None:
    shared = shared_dir(tmp_path / "shared")
    target = f"s3://{BUCKET}/shared/out.txt"
    done = run(processor(seldon_server, "-i", source_of(tmp_path), "-o", target, "--staging-dir", str(shared)),
               s3.env())
    assert done.returncode == 0, done.stderr[-3000:]
    private = shared / f"seldon-batch-staging-{os.geteuid()}"
    st = private.lstat()
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid()
    assert os.listdir(shared) == [private.name] and indexes(s3.get(target)) == list(range(7))


def test_a_staging_dir_that_is_a_link_is_refused(s3: S3Server, seldon_server: SeldonServer,
                                                 tmp_path: Path) -> None:
    shared = shared_dir(tmp_path / "shared")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (shared / f"seldon-batch-staging-{os.geteuid()}").symlink_to(elsewhere)
    target = f"s3://{BUCKET}/link/out.txt"
    done = run(processor(seldon_server, "-i", source_of(tmp_path), "-o", target, "--staging-dir", str(shared)),
               s3.env())
    assert done.returncode == 2 and "is a symbolic link" in one_error_line(done.stderr), done.stderr
    assert list(elsewhere.iterdir()) == [] and not s3.exists(target)


def test_a_link_planted_at_the_download_name_is_never_written_through(s3: S3Server, seldon_server: SeldonServer,
                                                                       tmp_path: Path) -> None:
    source = source_of(tmp_path)
    target = f"s3://{BUCKET}/planted-link/out.txt"
    first = run(processor(seldon_server, "-i", source, "-o", target, "--staging-dir", str(tmp_path / "a")),
                s3.env())
    assert first.returncode == 0, first.stderr[-3000:]
    staging = tmp_path / "b"
    staging.mkdir(mode=0o700)
    victim = tmp_path / "victim.conf"
    victim.write_bytes(b"precious\n")
    Path(staging_path(target, str(staging)) + ".download").symlink_to(victim)
    again = run(processor(seldon_server, "-i", source, "-o", target, "--staging-dir", str(staging), "--resume"),
                s3.env())
    assert again.returncode == 0 and "7 from an earlier run" in again.stdout, again.stdout + again.stderr
    assert victim.read_bytes() == b"precious\n"
    assert indexes(s3.get(target)) == list(range(7))


def test_a_refused_resume_leaves_no_stale_copy(s3: S3Server, seldon_server: SeldonServer, tmp_path: Path) -> None:
    source = source_of(tmp_path)
    target = f"s3://{BUCKET}/foreign/out.txt"
    foreign = b"".join(json.dumps({"data": {"ndarray": [i]}, "meta": {"tags": {"batch_id": "theirs",
                                                                              "batch_index": i}}}).encode() + b"\n"
                       for i in range(3))
    s3.put(target, foreign)
    staging = tmp_path / "staging"
    refused = run(processor(seldon_server, "-i", source, "-o", target, "--staging-dir", str(staging),
                            "--resume", "-u", "mine"), s3.env())
    assert refused.returncode == 2 and "batch id theirs" in one_error_line(refused.stderr), refused.stderr
    assert os.listdir(staging) == []  # the copy of the object went with the refusal
    s3.client().delete_object(Bucket=BUCKET, Key="foreign/out.txt")  # the user removes the foreign object
    fresh = run(processor(seldon_server, "-i", source, "-o", target, "--staging-dir", str(staging),
                          "--resume", "-u", "mine"), s3.env())
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert indexes(s3.get(target)) == list(range(7))


def test_s3a_and_s3_spellings_share_one_lock_and_a_query_is_refused(s3: S3Server, seldon_server: SeldonServer,
                                                                     tmp_path: Path) -> None:
    source = source_of(tmp_path, 400)
    staging = tmp_path / "staging"
    key = f"{BUCKET}/spelling/out.txt"
    first = subprocess.Popen(processor(seldon_server, "-i", source, "-o", f"s3://{key}", "--staging-dir",
                                       str(staging), "-w", "1", "--batch-interval", "0.05"),
                             env=s3.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        staged = Path(staging_path(f"s3://{key}", str(staging)))
        from tests.test_storage_hang import wait_until

        wait_until(lambda: staged.exists() and staged.stat().st_size > 0)
        second = run(processor(seldon_server, "-i", source, "-o", f"s3a://{key}", "--staging-dir", str(staging)),
                     s3.env())
        assert second.returncode == 2 and "locked by" in one_error_line(second.stderr), second.stderr
    finally:
        first.kill()
        first.communicate(timeout=60)
    query = run(processor(seldon_server, "-i", source, "-o", f"s3://{key}?x=1", "--staging-dir", str(staging)),
                s3.env())
    assert query.returncode == 2 and "may not hold '?'" in one_error_line(query.stderr), query.stderr
    assert not s3.exists(f"s3://{key}")


def test_a_killed_retry_failed_temp_file_is_removed_by_the_next_run(seldon_server: SeldonServer,
                                                                   tmp_path: Path) -> None:
    source = source_of(tmp_path, 5)
    output = tmp_path / "out.txt"
    done = run(processor(seldon_server, "-i", source, "-o", str(output)), loopback_env())
    assert done.returncode == 0, done.stderr[-3000:]
    left = tmp_path / f"{temp_prefix(str(output))}k1ll3d{TEMP_SUFFIX}"  # what a SIGKILL mid-rewrite leaves
    left.write_bytes(b"half a rewrite\n")
    again = run(processor(seldon_server, "-i", source, "-o", str(output), "--retry-failed"), loopback_env())
    assert again.returncode == 0, again.stderr[-3000:]
    assert not left.exists() and sorted(os.listdir(tmp_path)) == ["in.txt", "out.txt"]
