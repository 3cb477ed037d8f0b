"""``merge`` and ``verify`` on URLs.

``verify`` reads its input and output once, in order: :func:`.reading.open_input` streams
them. ``merge`` seeks in every shard output line by line, so remote shards are first copied to
a local directory (outputs, not the input: their size is the staging files' size), merged
there by the existing code, and the result uploaded as one object (:func:`merge_paths`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import attrs

from . import transfer
from .paths import StorageError, StorageUnavailable, display, filesystem, first_line, is_remote, local_path
from .private import private_dir
from .reading import count_lines
from .staging import StagedOutput


@attrs.define
class LocalMerge:
    """The local files a merge works on: ``shards`` (copies of remote ones) and ``output``."""

    shards: list[str]
    output: str


def _fetch(url: str, options: dict[str, Any] | None, directory: str, number: int,
           timeout: float = transfer.TRANSFER_TIMEOUT) -> str:
    fs, rpath = filesystem(url, options)
    target = os.path.join(directory, f"shard-{number:05d}")
    try:
        transfer.call(fs, "get_file", rpath, target, timeout=timeout, what=f"download of {display(url)}")
    except FileNotFoundError:
        raise StorageError(f"{display(url)} does not exist") from None
    except Exception as e:  # noqa: BLE001 - botocore's, fsspec's: every one is one line, exit 3
        reason = str(e) if isinstance(e, StorageError) else first_line(e)
        raise StorageUnavailable(f"cannot read {display(url)}: {reason}") from None
    return target


@contextlib.contextmanager
def merge_paths(shards: Sequence[str], output: str, options: dict[str, Any] | None = None,
                staging_dir: str | None = None) -> Iterator[LocalMerge]:
    """Local paths for a merge of ``shards`` into ``output`` (files or URLs, blocking).

    Remote shards are downloaded into a temporary directory; a remote output is merged into a
    file there and uploaded when the block ends without an exception (one PUT or a multipart
    upload: the object appears only complete). Everything temporary is removed at the end.
    """
    base = private_dir(staging_dir)
    work = tempfile.mkdtemp(prefix="merge-", dir=base)
    try:
        local = [_fetch(s, options, work, n) if is_remote(s) else local_path(s) for n, s in enumerate(shards)]
        target = os.path.join(work, "merged") if is_remote(output) else local_path(output)
        yield LocalMerge(local, target)
        if is_remote(output):
            StagedOutput(output, target, dict(options or {})).upload()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def expected_lines(input_url: str, options: dict[str, Any] | None = None) -> int:
    """``merge --input`` / ``verify``: the input's line count, a file's or an object's."""
    return count_lines(input_url, options)
