"""Taking a file: claiming a complete one from incoming/, taking up one left in processing/.

A file is claimed by opening it safely (:func:`.files.open_regular`), taking an exclusive
``flock`` on it and then renaming it into ``processing/``: of two daemons on one directory only
one rename succeeds, and the lock (held until the batch ends, dropped by the kernel if the
process dies) tells a daemon whether a file in ``processing/`` is still being worked on or was
left by a crash or a stop. Left-over files are taken up again (:func:`take_up`) and resume
(:func:`resume_config`). A claimed file runs with the settings of :func:`file_config`.
A new condition for taking a file goes in :func:`claim` or :func:`take_up`.
"""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING

import attrs
import txaio
from twisted.internet.defer import Deferred

from ..config import BatchConfig
from ..dashboard.registry import BatchEntry, BatchRegistry
from ..pipeline.stats import BatchStats
from ..redaction import Secrets
from .files import Rejected, absent, kind, lock, move, open_regular, shown, unlink
from .layout import READY, SIDECAR, WatchDir, short_name
from .sidecars import apply_sidecar

if TYPE_CHECKING:
    from ..pipeline.batch import Batch

txaio.use_twisted()
log = txaio.make_logger()


@attrs.define(eq=False)
class Job:
    """A claimed file: locked, in processing/, with its dashboard entry."""

    name: str
    fd: int
    entry: BatchEntry
    restarted: bool = False
    batch: Batch | None = None
    finished: Deferred[None] | None = None
    #: fstat of the claimed file (its permission bits become the output's).
    st: os.stat_result | None = None
    #: Moved out of processing/ (settled), or left there on purpose for the next start (kept).
    settled: bool = False
    kept: bool = False
    #: The name it had in incoming/ (before a shortening or a -N suffix).
    original: str = ""


class Replaced(Rejected):
    """The file was swapped under its name while being claimed: processing/``name`` goes to failed/."""

    def __init__(self, name: str, mode: int) -> None:
        super().__init__("it was replaced by another file while being claimed")
        self.name, self.mode = name, mode


def claim(dirs: WatchDir, name: str, batch_id: str, now: float) -> tuple[str, int, os.stat_result] | None:
    """Open safely, lock, then rename incoming/``name`` into processing/; its new name, fd and fstat.

    None when it is gone or another daemon was quicker; Rejected when incoming/``name`` must go to
    failed/ (Replaced: the file that arrived in processing/ instead); other errors pass through.
    """
    src = os.path.join(dirs.incoming, name)
    try:
        fd, st = open_regular(src, dirs.device)
    except OSError as e:
        if absent(e):
            return None
        raise Rejected(f"cannot open the file: {e.strerror}") from None
    try:
        if not lock(fd):
            os.close(fd)
            return None
        try:
            claimed = dirs.rename_free(src, short_name(name, dirs.name_max), dirs.processing, dirs.done, dirs.failed)
        except FileNotFoundError:
            os.close(fd)
            return None
        dst = os.path.join(dirs.processing, claimed)
        now_st = os.lstat(dst)
        if (now_st.st_dev, now_st.st_ino) != (st.st_dev, st.st_ino):  # swapped under the same name meanwhile
            raise Replaced(claimed, st.st_mode)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    try:
        move(src + SIDECAR, dst + SIDECAR)
        unlink(src + READY)
        unlink(dirs.output_path(claimed))  # a fresh claim has no output yet: whatever is there was planted
        dirs.write_state(claimed, batch_id, name, now)
    except OSError as e:  # the batch still runs; only a restart would start it over
        log.warn("claimed {name}, but could not tidy its work files: {error}", name=shown(claimed), error=e)
    return claimed, fd, st


def take_up(dirs: WatchDir, name: str, registry: BatchRegistry) -> Job | None:
    """Open and lock processing/``name``, left by a crash or a stop, under a name short enough for
    its work files; its Job, on the dashboard under the batch id its state file recorded.

    None when another daemon holds its lock; Rejected when it must go to failed/; OSErrors of
    opening it pass through.
    """
    path = os.path.join(dirs.processing, name)
    fd, st = open_regular(path, dirs.device, single_link=False)
    try:
        if not lock(fd):
            os.close(fd)
            return None  # another daemon is on it
        if st.st_nlink > 1:  # checked under the lock: a daemon moving its own file may link it
            raise Rejected(f"it has {st.st_nlink} hard links, so it may be a file from outside the watch "
                           f"directory")
        short = short_name(name, dirs.name_max)
        if short != name:  # a name too long for its work files: rename it under the lock we hold
            short = dirs.rename_free(path, short, dirs.processing, dirs.done, dirs.failed)
            move(path + SIDECAR, os.path.join(dirs.processing, short + SIDECAR))
    except Exception as e:
        os.close(fd)
        if isinstance(e, Rejected):
            raise
        raise Rejected(f"cannot take it up again: {type(e).__name__}: {e}") from None
    state = dirs.read_state(short)
    stats = BatchStats(str(state.get("batch_id") or uuid.uuid4()), short)
    entry = registry.add(stats, source=os.path.join(dirs.processing, short))
    log.info("{name} was left in processing/; taking it up again as batch {batch_id}",
             name=shown(short), batch_id=stats.batch_id)
    original = state.get("original_name")
    return Job(short, fd, entry, restarted=True, st=st, original=original if isinstance(original, str) else name)


def resume_config(job: Job, config: BatchConfig) -> BatchConfig:
    """A file taken up again after a stop or crash resumes: the lines already in its output in
    processing/ are kept (a torn last line is cut off) and only the others are sent, under the
    same batch id. An output that is not a plain regular file was not written by us: dropped."""
    output = config.output_data_path
    with contextlib.suppress(FileNotFoundError):
        st = os.lstat(output)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
            log.warn("{name}: the output in processing/ is {kind}; starting it over", name=shown(job.name),
                     kind=kind(st.st_mode) if not stat.S_ISREG(st.st_mode) else "hard-linked")
            os.unlink(output)
    return config.replace(resume=True, batch_id_given=True)


def file_config(dirs: WatchDir, base: BatchConfig, job: Job, allow: frozenset[str]) -> BatchConfig:
    """The daemon's settings, this file's paths, then its sidecar's settings (and a resume).

    The input is read through the fd the daemon opened and checked (``/proc/self/fd/N``), so
    a name swapped in processing/ afterwards is never read.
    """
    by_fd = f"/proc/self/fd/{job.fd}"
    source = by_fd if os.path.exists(by_fd) else os.path.join(dirs.processing, job.name)
    config = base.replace(input_data_path=source, output_data_path=dirs.output_path(job.name),
                          batch_id=job.entry.batch_id)
    sidecar = os.path.join(dirs.processing, job.name + SIDECAR)
    if os.path.lexists(sidecar):
        config = apply_sidecar(config, sidecar, allow, max_workers=base.workers)
    return resume_config(job, config) if job.restarted else config


def running_secrets(configs: Iterable[BatchConfig]) -> Secrets:
    """The credentials of the files running: the daemon's own and any a sidecar brought (``--sidecar-allow``)."""
    return Secrets(value for config in configs for value in Secrets.of(config).values)
