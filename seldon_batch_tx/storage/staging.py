"""Outputs to object stores through a local staging file.

The run writes its output where LineWriter, the output lock and ``--resume`` already work: a
local file in a private staging directory. :meth:`StagedOutput.finish` uploads it when a run
ended complete (s3fs ``put_file``: one PUT, or a multipart upload past 2 x 50 MiB, so the object
appears only complete); a stopped run keeps it for ``--resume``. ``--resume`` continues from the
staging file when it is there (a run killed on this machine), else downloads the object uploaded
by an earlier run to staging first. Every upload and download has an overall time limit and can
be cancelled from the reactor (:mod:`.transfer`); its failure is a :class:`.paths.StorageUnavailable`.

The staging directory is the run's own (:mod:`.private`): another local user can neither read
the staged lines, add to them nor plant a link a download would follow.
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
from twisted.internet.defer import CancelledError

from . import transfer
from .paths import (
    S3_PROTOCOLS,
    StorageError,
    StorageUnavailable,
    canonical,
    display,
    filesystem,
    first_line,
    is_remote,
    is_stdio,
    local_path,
    output_problem,
    protocol,
)
from .private import private_dir

txaio.use_twisted()
log = txaio.make_logger()

PART_BYTES = 16 << 20
#: Why a transfer stopped when the run was stopped (SIGTERM/SIGINT past --drain-timeout).
INTERRUPTED = "interrupted by a signal"


def staging_path(url: str, staging_dir: str) -> str:
    """The staging file of ``url``: the same name for every run on that URL (so a resume finds
    it), a hash of the whole URL first so two URLs never share one, and every spelling of one
    object (``s3a://``, ``s3://``) the same one (so the output lock holds across spellings)."""
    url = canonical(url)
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

    def discard_copy(self) -> None:
        """Remove the staging file when it is only a copy of the object (a refused resume): the next
        resume downloads the object again instead of refusing a stale copy."""
        if self.resumed_from == "object" and self.local_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.local_path)
            self.resumed_from = None

    def _put_args(self) -> tuple[Any, str, dict[str, Any]]:
        fs, rpath = filesystem(self.url, self.options)
        extra = {"chunksize": self.part_bytes} if protocol(self.url) in S3_PROTOCOLS else {}
        return fs, rpath, extra

    def _failed(self, error: BaseException) -> StorageUnavailable:
        reason = INTERRUPTED if isinstance(error, CancelledError) else \
            str(error) if isinstance(error, StorageError) else first_line(error)
        return StorageUnavailable(f"cannot upload {self.local_path} to {display(self.url)}: {reason}; "
                                  "it stays there for --resume")

    def _uploaded(self, size: int, stored: Any, keep_staging: bool) -> int:
        if stored != size:
            raise StorageUnavailable(f"{display(self.url)} holds {stored} bytes after the upload, the staging "
                                     f"file {size}; the staging file stays for --resume")
        self.uploaded = True
        log.info("uploaded {size} bytes to {url}", size=size, url=display(self.url))
        if not keep_staging and self.local_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.local_path)
        return size

    def upload(self, keep_staging: bool = False, timeout: float = transfer.TRANSFER_TIMEOUT) -> int:
        """Upload the staging file to the URL (blocking, at most ``timeout`` s per call); the
        object's size. The staging file is removed once the object is there whole, unless
        ``keep_staging``. Any failure is a :class:`.paths.StorageUnavailable` (one line)."""
        if not self.remote or self.local_path is None:
            return 0
        what = f"upload to {display(self.url)}"
        try:
            fs, rpath, extra = self._put_args()
            size = os.path.getsize(self.local_path)
            transfer.call(fs, "put_file", self.local_path, rpath, timeout=timeout, what=what, **extra)
            stored = transfer.call(fs, "info", rpath, timeout=timeout, what=what).get("size")
        except Exception as e:  # noqa: BLE001 - botocore's, aiohttp's, fsspec's: every one is one line, exit 3
            raise self._failed(e) from None
        return self._uploaded(size, stored, keep_staging)

    async def finish(self, reactor: Any, keep_staging: bool = False,
                     timeout: float = transfer.TRANSFER_TIMEOUT) -> int:
        """:meth:`upload` off the reactor thread, bounded by ``timeout``; cancelling the Deferred
        awaiting it (a stop) ends the upload and keeps the staging file. Call it after the writer is
        closed, for a run that ended complete only (a stopped run never publishes a partial output)."""
        if not self.remote or self.local_path is None:
            return 0
        what = f"upload to {display(self.url)}"
        try:
            fs, rpath, extra = self._put_args()
            size = os.path.getsize(self.local_path)
            await transfer.deferred(reactor, fs, "put_file", self.local_path, rpath, timeout=timeout, what=what,
                                    **extra)
            info = await transfer.deferred(reactor, fs, "info", rpath, timeout=timeout, what=what)
        except BaseException as e:  # noqa: BLE001 - a cancel (signal) too: one line, exit 3, staging kept
            raise self._failed(e) from None
        return self._uploaded(size, info.get("size"), keep_staging)


def _download_temp(target: str) -> str:
    """A new empty file beside ``target`` (``O_EXCL``: never an existing name, nor a planted link)."""
    fd, temp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=f"{os.path.basename(target)}.download-")
    os.close(fd)
    return temp


def _downloaded(url: str, temp: str, target: str, error: BaseException | None) -> bool:
    """Finish a download into ``temp``: renamed over ``target`` (a rename replaces a link, never writes
    through it); False when there was no object; :class:`.paths.StorageUnavailable` for a failure."""
    if error is None:
        os.replace(temp, target)
        return True
    with contextlib.suppress(OSError):
        os.unlink(temp)
    if isinstance(error, FileNotFoundError):
        return False
    reason = INTERRUPTED if isinstance(error, CancelledError) else \
        str(error) if isinstance(error, StorageError) else first_line(error)
    raise StorageUnavailable(f"cannot download {display(url)} to resume it: {reason}") from None


def _download(fs: Any, url: str, rpath: str, target: str, timeout: float = transfer.TRANSFER_TIMEOUT) -> bool:
    """Copy the object to ``target`` through a new temp file (a half download is never taken for a
    staging file); False when there is no object. Blocking."""
    temp = _download_temp(target)
    try:
        transfer.call(fs, "get_file", rpath, temp, timeout=timeout, what=f"download of {display(url)}")
    except Exception as e:  # noqa: BLE001 - every backend error is one line
        return _downloaded(url, temp, target, e)
    return _downloaded(url, temp, target, None)


def _prepare(url: str, staging_dir: str | None, options: dict[str, Any] | None,
             resume: bool) -> tuple[StagedOutput, bool]:
    """The output and whether a resume must download the object first (local work only)."""
    if is_stdio(url):
        if resume:
            raise StorageError("--resume needs an output file or URL; standard output (-o -) cannot be resumed")
        return StagedOutput(url, None), False
    if not is_remote(url):
        return StagedOutput(url, local_path(url)), False
    problem = output_problem(url)
    if problem is not None:
        raise StorageError(problem)
    directory = private_dir(staging_dir)
    output = StagedOutput(url, staging_path(url, directory), dict(options or {}))
    if not resume:
        return output, False  # LineWriter empties a staging file left over from an earlier run
    if os.path.lexists(output.local_path or ""):
        output.resumed_from = "staging"
        return output, False
    return output, True


def _staged(output: StagedOutput, found: bool) -> StagedOutput:
    if found:
        output.resumed_from = "object"
    log.info("output {url} staged in {path} (resuming from {source})", url=display(output.url),
             path=output.local_path, source=output.resumed_from or "nothing")
    return output


def stage_output(url: str, staging_dir: str | None = None, options: dict[str, Any] | None = None, *,
                 resume: bool = False, timeout: float = transfer.TRANSFER_TIMEOUT) -> StagedOutput:
    """Prepare the output ``url`` (blocking; see :func:`open_output`).

    A local path is its own "staging file" (nothing to upload); ``-`` is standard output and
    refuses ``resume``; a URL gets a staging file, filled from the object on a resume when
    there is no staging file yet.
    """
    output, fetch = _prepare(url, staging_dir, options, resume)
    if not output.remote or not resume:
        return output
    found = False
    if fetch and output.local_path is not None:
        fs, rpath = filesystem(url, options)
        found = _download(fs, url, rpath, output.local_path, timeout)
    return _staged(output, found)


async def open_output(url: str, reactor: Any, staging_dir: str | None = None,
                      options: dict[str, Any] | None = None, *, resume: bool = False,
                      timeout: float = transfer.TRANSFER_TIMEOUT) -> StagedOutput:
    """:func:`stage_output` with the download (a resume's) off the reactor thread, bounded by
    ``timeout`` and ended by cancelling the Deferred awaiting it."""
    output, fetch = _prepare(url, staging_dir, options, resume)
    if not output.remote or not resume:
        return output
    found = False
    if fetch and output.local_path is not None:
        fs, rpath = filesystem(url, options)
        temp = _download_temp(output.local_path)
        try:
            await transfer.deferred(reactor, fs, "get_file", rpath, temp, timeout=timeout,
                                    what=f"download of {display(url)}")
        except BaseException as e:  # noqa: BLE001 - a cancel (signal) too: one line
            found = _downloaded(url, temp, output.local_path, e)
        else:
            found = _downloaded(url, temp, output.local_path, None)
    return _staged(output, found)
