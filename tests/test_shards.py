"""Sharded runs: K processes against the real Seldon microservice, merged, equal one run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.loopback import loopback_env
from tests.servers import SeldonServer

BIN = Path(sys.executable).parent
PROCESSOR = str(BIN / "seldon-batch-processor")
TOOLS = str(BIN / "seldon-batch")
LINES = 300
BAD = {7, 150, 299}  # not JSON: written as input_error lines, whichever shard holds them


def write_input(path: Path) -> Path:
    path.write_text("".join("not json\n" if i in BAD else json.dumps([[i, i + 0.5, -i]]) + "\n"
                            for i in range(LINES)))
    return path


def processor_args(server: SeldonServer, infile: Path, *extra: str) -> list[str]:
    return [PROCESSOR, "-d", "echo", "-g", "seldon", "-h", server.rest_host, "-i", str(infile), "-w", "4",
            "-u", "shard-test", *extra]


def by_index(path: Path) -> list[bytes]:
    lines = path.read_bytes().splitlines(keepends=True)
    return sorted(lines, key=lambda raw: json.loads(raw)["meta"]["tags"]["batch_index"])


def test_three_shards_merged_equal_a_single_run(seldon_server: SeldonServer, tmp_path: Path) -> None:
    """3 concurrent shard processes (one taking its index from JOB_COMPLETION_INDEX, as in an
    Indexed Job) each handle only their share, and their merged output is byte-identical to a
    single-process run put in batch_index order."""
    infile = write_input(tmp_path / "in.txt")
    env = loopback_env()
    shards = []
    for index in range(3):
        if index == 1:
            args, shard_env = processor_args(seldon_server, infile, "--shard-count", "3"), \
                {**env, "JOB_COMPLETION_INDEX": "1"}
        else:
            args, shard_env = processor_args(seldon_server, infile, "--shard-index", str(index),
                                             "--shard-count", "3"), env
        shards.append(subprocess.Popen(args, env=shard_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True))
    results = []
    try:
        for process in shards:
            out, err = process.communicate(timeout=120)
            results.append((process.returncode, out, err))
    finally:
        for process in shards:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    outputs = [tmp_path / f"in.out.shard-{i}-of-3.txt" for i in range(3)]
    for index, ((code, out, err), path) in enumerate(zip(results, outputs, strict=True)):
        share = len(range(index, LINES, 3))
        bad = len([i for i in BAD if i % 3 == index])
        assert code == (1 if bad else 0), err
        assert out.startswith(f"{share} lines: {share - bad} succeeded, {bad} failed"), out
        indexes = [json.loads(raw)["meta"]["tags"]["batch_index"] for raw in path.read_bytes().splitlines()]
        assert sorted(indexes) == list(range(index, LINES, 3))

    single = subprocess.run(processor_args(seldon_server, infile, "-o", str(tmp_path / "single.txt")),
                            env=env, capture_output=True, text=True, timeout=120)
    assert single.returncode == 1, single.stderr
    assert single.stdout.startswith(f"{LINES} lines: {LINES - len(BAD)} succeeded, {len(BAD)} failed")

    merged = tmp_path / "merged.txt"
    merge = subprocess.run([TOOLS, "merge", "-o", str(merged), "--input", str(infile), *map(str, outputs)],
                           env=env, capture_output=True, text=True, timeout=60)
    assert merge.returncode == 0, merge.stderr
    assert f"merged {LINES} lines ({LINES - len(BAD)} succeeded, {len(BAD)} failed)" in merge.stderr
    assert merged.read_bytes() == b"".join(by_index(tmp_path / "single.txt"))


def test_merge_of_incomplete_shards_fails(seldon_server: SeldonServer, tmp_path: Path) -> None:
    """Merging without one shard's output fails, naming what is missing, and writes nothing."""
    infile = write_input(tmp_path / "in.txt")
    for index in (0, 2):
        run = subprocess.run(processor_args(seldon_server, infile, "--shard-index", str(index), "--shard-count",
                                            "3"), env=loopback_env(), capture_output=True, text=True, timeout=120)
        assert run.returncode in (0, 1), run.stderr
    merge = subprocess.run([TOOLS, "merge", "-o", str(tmp_path / "merged.txt"), "--expected", str(LINES),
                            str(tmp_path / "in.out.shard-0-of-3.txt"), str(tmp_path / "in.out.shard-2-of-3.txt")],
                           capture_output=True, text=True, timeout=60)
    assert merge.returncode == 1
    assert "100 missing lines, batch_index 1, 4, 7," in merge.stderr
    assert not (tmp_path / "merged.txt").exists()


def test_shard_index_must_be_below_shard_count(tmp_path: Path) -> None:
    """A shard index outside 0..K-1 (e.g. from JOB_COMPLETION_INDEX) is a usage error, exit 2."""
    infile = write_input(tmp_path / "in.txt")
    env = {**loopback_env(), "JOB_COMPLETION_INDEX": "3"}
    run = subprocess.run([PROCESSOR, "-d", "echo", "-i", str(infile), "--shard-count", "3"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "error: --shard-index 3 must be less than --shard-count 3" in run.stderr
    assert not list(tmp_path.glob("in.out*"))


def test_shards_need_a_shared_batch_id(tmp_path: Path) -> None:
    """Shards that each generated a batch id would tag one batch with K ids: a usage error."""
    infile = write_input(tmp_path / "in.txt")
    run = subprocess.run([PROCESSOR, "-d", "echo", "-i", str(infile), "--shard-index", "0", "--shard-count", "2"],
                         env=loopback_env(), capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "error: --shard-count 2: needs --batch-id" in run.stderr
