"""Review attack: a staging directory inside another local user's directory (issue 25's staging checks).

The checks looked at the staging directory alone. Reached through a symbolic link into another
user's directory, or made as a per-user subdirectory of a shared directory another user owns, it
passed (ours, 0700) although that user can rename it away and put their own in its place at any
time after the check. Now every directory above it must be the run's user's or root's (``/tmp``
and a Kubernetes ``emptyDir`` are root's): otherwise one line, exit 2, nothing sent.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.s3_server import S3Server
from tests.servers import SeldonServer
from tests.test_staging_private import BUCKET, NOBODY, source_of
from tests.test_storage_cli import indexes, processor, run
from tests.test_storage_hang import one_error_line

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        server.make_bucket(BUCKET)
        yield server


def others(path: Path, mode: int) -> Path:
    path.mkdir()
    os.chown(path, NOBODY, NOBODY)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("how", ["link", "shared"])
def test_staging_inside_another_users_directory_is_refused(s3: S3Server, seldon_server: SeldonServer,
                                                           tmp_path: Path, how: str) -> None:
    theirs = others(tmp_path / "theirs", 0o755 if how == "link" else 0o777)
    if how == "link":  # a link that leads into their directory: our 0700 "stage" would be made there
        (tmp_path / "link").symlink_to(theirs)
        staging = tmp_path / "link" / "stage"
    else:  # their shared directory: our per-user subdirectory would be made there
        staging = theirs
    target = f"s3://{BUCKET}/theirs/{how}.txt"
    done = run(processor(seldon_server, "-i", source_of(tmp_path), "-o", target, "--staging-dir", str(staging)),
               s3.env())
    assert done.returncode == 2, done.stdout + done.stderr
    line = one_error_line(done.stderr)
    assert f"is inside {theirs}, which belongs to uid {NOBODY}" in line, line
    assert not s3.exists(target)


def test_a_root_owned_shared_directory_still_gets_a_private_subdirectory(s3: S3Server, seldon_server: SeldonServer,
                                                                         tmp_path: Path) -> None:
    """Like /tmp (sticky) and an emptyDir (0777): root's, so the per-user subdirectory is used."""
    shared = tmp_path / "emptydir"
    shared.mkdir()
    shared.chmod(0o777)
    target = f"s3://{BUCKET}/emptydir/out.txt"
    done = run(processor(seldon_server, "-i", source_of(tmp_path), "-o", target, "--staging-dir", str(shared)),
               s3.env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert os.listdir(shared) == [f"seldon-batch-staging-{os.geteuid()}"] and indexes(s3.get(target)) == list(range(7))
