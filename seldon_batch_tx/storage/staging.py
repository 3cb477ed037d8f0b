"""Outputs to object stores through a local staging file.

The run writes its output where LineWriter, the output lock and ``--resume`` already work: a
local file in ``staging_dir``. :meth:`StagedOutput.finish` uploads it when the run ends
(s3fs ``put_file``: one PUT, or a multipart upload past 2 x 50 MiB, so the object appears only
complete). ``--resume`` continues from the staging file when it is there (a run killed on this
machine), else downloads the object uploaded by an earlier run to staging first. The network
calls run in the reactor's thread pool, never on the reactor thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from typing import Any

import attrs
import txaio
from twisted.internet.threads import deferToThreadPool

from .paths import S3_PROTOCOLS, StorageError, display, filesystem, is_remote, is_stdio, local_path, protocol

txaio.use_twisted()
log = txaio.make_logger()

#: Where staging files go unless told: ``SELDON_BATCH_STAGING_DIR`` or the temp directory.
STAGING_ENV = "SELDON_BATCH_STAGING_DIR"
PART_BYTES = 16 << 20


def default_staging_dir() -> str:
    return os.environ.get(STAGING_ENV) or os.path.join(tempfile.gettempdir(), "seldon-batch-staging")


def staging_path(url: str, staging_dir: str) -> str:
    """The staging file of ``url``: the same name for every run on that URL (so a resume finds
    it), a hash of the whole URL first so two URLs never share one."""
    digest = hashlib.sha256(url.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    base = re.sub(r"[^A-Za-z0-9._-]", "_", url.rstrip("/").rsplit("/", 1)[-1])[:100] or "output"
    return os.path.join(staging_dir, f"{digest}-{base}")


@attrs.define
class StagedOutput:
    """Where a run writes: ``local_path`` (None for standard output, see :mod:`.pipes`).

    ``resumed_from`` says what a resume continues: ``"staging"``, ``"object"`` or None.
    """

    url: str
    local_path: str | None
    options: dict[str, Any] = attrs.field(factory=dict, repr=False)
    resumed_from: str | None = None
    uploaded: bool = False
    #: S3 multipart part size: the most of the file an upload holds in memory per part
    #: (s3fs reads a file under two parts whole and sends it in one PUT).
    part_bytes: int = PART_BYTES

    @property
    def remote(self) -> bool:
        return is_remote(self.url)

    @property
    def stdout(self) -> bool:
        return self.local_path is None

    def upload(self, keep_staging: bool = False) -> int:
        """Upload the staging file to the URL (blocking); the object's size. The staging file is
        removed once the object is there whole, unless ``keep_staging``."""
        if not self.remote or self.local_path is None:
            return 0
        fs, rpath = filesystem(self.url, self.options)
        size = os.path.getsize(self.local_path)
        try:
            extra = {"chunksize": self.part_bytes} if protocol(self.url) in S3_PROTOCOLS else {}
            fs.put_file(self.local_path, rpath, **extra)
            stored = fs.info(rpath).get("size")
        except (OSError, ValueError) as e:
            raise StorageError(f"cannot upload {self.local_path} to {display(self.url)}: "
                               f"{type(e).__name__}: {str(e)[:200]}; it stays there for --resume") from None
        if stored != size:
            raise StorageError(f"{display(self.url)} holds {stored} bytes after the upload, the staging file "
                               f"{size}; the staging file stays for --resume")
        self.uploaded = True
        log.info("uploaded {size} bytes to {url}", size=size, url=display(self.url))
        if not keep_staging:
            with contextlib.suppress(OSError):
                os.unlink(self.local_path)
        return size

    async def finish(self, reactor: Any, keep_staging: bool = False) -> int:
        """:meth:`upload` in the reactor's thread pool; call it after the writer is closed,
        whatever the run's outcome (a stopped run's lines are then there for a resume elsewhere)."""
        if not self.remote:
            return 0
        size: int = await deferToThreadPool(reactor, reactor.getThreadPool(), self.upload, keep_staging)
        return size


def _download(fs: Any, url: str, rpath: str, target: str) -> bool:
    """Copy the object to ``target`` (through a temp name, so a half download is never taken
    for a staging file); False when there is no object."""
    temp = f"{target}.download"
    try:
        fs.get_file(rpath, temp)
    except FileNotFoundError:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        return False
    except (OSError, ValueError) as e:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise StorageError(f"cannot download {display(url)} to resume it: {type(e).__name__}: {str(e)[:200]}") \
            from None
    os.replace(temp, target)
    return True


def stage_output(url: str, staging_dir: str | None = None, options: dict[str, Any] | None = None, *,
                 resume: bool = False) -> StagedOutput:
    """Prepare the output ``url`` (blocking; see :func:`open_output`).

    A local path is its own "staging file" (nothing to upload); ``-`` is standard output and
    refuses ``resume``; a URL gets a staging file, filled from the object on a resume when
    there is no staging file yet.
    """
    if is_stdio(url):
        if resume:
            raise StorageError("--resume needs an output file or URL; standard output (-o -) cannot be resumed")
        return StagedOutput(url, None)
    if not is_remote(url):
        return StagedOutput(url, local_path(url))
    directory = staging_dir or default_staging_dir()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    target = staging_path(url, directory)
    output = StagedOutput(url, target, dict(options or {}))
    if not resume:
        return output  # LineWriter empties a staging file left over from an earlier run
    if os.path.isfile(target):
        output.resumed_from = "staging"
    else:
        fs, rpath = filesystem(url, options)
        if _download(fs, url, rpath, target):
            output.resumed_from = "object"
    log.info("output {url} staged in {path} (resuming from {source})", url=display(url), path=target,
             source=output.resumed_from or "nothing")
    return output


async def open_output(url: str, reactor: Any, staging_dir: str | None = None,
                      options: dict[str, Any] | None = None, *, resume: bool = False) -> StagedOutput:
    """:func:`stage_output` in the reactor's thread pool (a resume may download the object)."""
    if not is_remote(url):
        return stage_output(url, staging_dir, options, resume=resume)
    output: StagedOutput = await deferToThreadPool(reactor, reactor.getThreadPool(), stage_output, url,
                                                   staging_dir, options, resume=resume)
    return output
