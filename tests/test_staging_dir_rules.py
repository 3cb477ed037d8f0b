"""storage.private on real directories: which staging directory a run uses and what it refuses."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from seldon_batch_tx.storage import StagingRefused, private_dir


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_missing_directory_is_created_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        made = private_dir(str(tmp_path / "new" / "staging"))
    finally:
        os.umask(old)
    assert made == str(tmp_path / "new" / "staging") and mode(made) == 0o700


def test_a_private_directory_is_used_as_it_is(tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.mkdir(mode=0o700)
    assert private_dir(str(own)) == str(own)


@pytest.mark.parametrize("bits", [0o755, 0o750, 0o777, 0o1777])
def test_an_open_directory_holds_a_private_per_user_one(tmp_path: Path, bits: int) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(bits)
    used = private_dir(str(shared))
    assert used == str(shared / f"seldon-batch-staging-{os.geteuid()}") and mode(used) == 0o700
    assert private_dir(str(shared)) == used  # the same one next time: a resume finds its staging file


def test_an_open_per_user_directory_or_a_file_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    user = shared / f"seldon-batch-staging-{os.geteuid()}"
    user.mkdir()
    user.chmod(0o770)
    with pytest.raises(StagingRefused, match="is open to other users \\(mode 0770"):
        private_dir(str(shared))
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(StagingRefused, match="is not a directory"):
        private_dir(str(file))


def test_the_default_is_a_per_user_directory_in_the_temp_directory(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SELDON_BATCH_STAGING_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # read $TMPDIR again
    tmp_path.chmod(0o1777)
    assert private_dir() == str(tmp_path / f"seldon-batch-staging-{os.geteuid()}")
