"""An Indexed Job pod retried, simulated on this machine (issue 23): the shard command exactly as
docker/k8s/job-indexed.yaml runs it (its args, JOB_COMPLETION_INDEX in the environment, the object store) is
SIGKILLed midway and run again with the same arguments: it continues from where it was (the lines written
are kept, not sent again); then job-merge.yaml's command, as the manifest runs it, merges the shard objects
into one that equals a single run's output. moto stands in for the object store, the real Seldon
microservice for the model; only the model's address and the staging directory (an emptyDir in the pod)
are moved to this machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.processes import stop_group
from tests.s3_server import S3Server
from tests.servers import SeldonServer

K8S = Path(__file__).resolve().parent.parent / "docker" / "k8s"
BIN = Path(sys.executable).parent
LINES = 240


def manifest_container(name: str) -> dict[str, Any]:
    (job,) = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d and d["kind"] == "Job"]
    container: dict[str, Any] = job["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        server.make_bucket("batch-data")
        yield server


def shard_args(server: SeldonServer, staging: Path) -> list[str]:
    """The manifest's args, with this machine's model and the pod's emptyDir."""
    args = []
    for arg in manifest_container("job-indexed.yaml")["args"]:
        if arg.startswith("--host="):
            arg = f"--host={server.rest_host}"
        elif arg.startswith("--staging-dir="):
            arg = f"--staging-dir={staging}"
        args.append(arg)
    return args


def url_of(args: list[str], flag: str) -> str:
    return next(a.split("=", 1)[1] for a in args if a.startswith(flag + "="))


def test_a_killed_shard_continues_and_the_merge_equals_a_single_run(s3: S3Server, seldon_server: SeldonServer,
                                                                    tmp_path: Path) -> None:
    rows = b"".join(b"[[%d, %d.5, 2, 3]]\n" % (i, i) for i in range(LINES))
    probe = shard_args(seldon_server, tmp_path)
    s3.put(url_of(probe, "--input-data-path"), rows)
    shards = int(url_of(probe, "--shard-count"))
    processor = str(BIN / "seldon-batch-processor")

    for index in range(shards):
        staging = tmp_path / f"staging-{index}"  # one emptyDir per pod, kept across its container's restarts
        env = s3.env()
        env["JOB_COMPLETION_INDEX"] = str(index)
        args = shard_args(seldon_server, staging)
        if index == 1:  # this pod's container is killed midway: slow it down enough to see it
            args = [*args, "--workers=1", "--batch-interval=0.05"]
            first = subprocess.Popen([processor, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and _staged_lines(staging) < 15:
                    assert first.poll() is None, first.communicate()
                    time.sleep(0.1)
                os.killpg(first.pid, signal.SIGKILL)
                first.wait(10)
            finally:
                stop_group(first, signal.SIGKILL)
            kept = _staged_lines(staging)
            assert 15 <= kept < LINES // shards
        again = subprocess.run([processor, *args], env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-3000:]
        if index == 1:
            assert f"({kept} from an earlier run): {LINES // shards} succeeded" in again.stdout, again.stdout
        else:
            assert f"{LINES // shards} lines: {LINES // shards} succeeded" in again.stdout, again.stdout

    merge = manifest_container("job-merge.yaml")
    env = s3.env()
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["TMPDIR"] = str(tmp_path)
    merged = subprocess.run([*merge["command"], *merge["args"]], env=env, capture_output=True, text=True,
                            timeout=300)
    assert merged.returncode == 0, merged.stderr[-3000:]
    bucket, output_key = merge["args"][1], merge["args"][5]
    merged_lines = s3.get(f"s3://{bucket}/{output_key}").decode().splitlines()

    single_out = f"s3://{bucket}/single/output-data.txt"
    single_args = [a for a in shard_args(seldon_server, tmp_path / "single") if not a.startswith("--shard-count")]
    single = subprocess.run([processor, *single_args, "--ordered", f"--output-data-path={single_out}"],
                            env=s3.env(), capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    single_lines = s3.get(single_out).decode().splitlines()
    assert [json.loads(line) for line in merged_lines] == [json.loads(line) for line in single_lines]
    assert [json.loads(line)["meta"]["tags"]["batch_index"] for line in merged_lines] == list(range(LINES))


def _staged_lines(staging: Path) -> int:
    """Whole lines in the shard's staging file so far."""
    if not staging.is_dir():
        return 0
    return sum(path.read_bytes().count(b"\n") for path in staging.rglob("*") if path.is_file())
