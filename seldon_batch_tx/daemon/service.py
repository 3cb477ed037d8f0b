"""The watch-directory service: files dropped in ``incoming/`` become batches, one after another.

This module only schedules (polls, inotify, the queue, launching batches and stopping them); each
rule lives in the module that owns its question (see the package's docstring), and a new daemon
rule goes there. This service changes only for a new *moment*: another trigger or scan step.

A file is taken only when complete: it was renamed in (seen through inotify where available),
a ``NAME.ready`` marker exists, or its size and mtime did not change between two polls (a whole
poll interval apart). Symlinks, FIFOs, sockets, devices and directories in ``incoming/`` or
``processing/`` go to ``failed/`` with ``NAME.reason.txt``.

Never spin: a file that cannot be prepared, run or filed away goes to ``failed/`` with a reason;
one that cannot even be moved there is not taken again until it changes (device, inode, size,
mtime) or the daemon restarts. Scans run only on the ``--poll-interval`` timer (inotify and a
finished batch start queued work only); a scan step that keeps failing logs its error once.
"""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
from collections.abc import Callable
from typing import Any

import txaio
from twisted.application import service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall

from ..config import BatchConfig
from ..dashboard.registry import BatchEntry, BatchRegistry
from ..pipeline.batch import Batch
from ..pipeline.stats import BatchStats
from ..redaction import Secrets
from ..transports.base import Transport
from .claims import Job, Replaced, claim, file_config, running_secrets, take_up
from .files import Rejected, absent, identity, not_regular, shown
from .filing import file_away, file_failed, file_finished
from .inputs import check_fd, is_candidate
from .layout import READY, WatchDir
from .renames import watch_renames
from .sidecars import check_sidecar_allow
from .turns import Turns

txaio.use_twisted()
log = txaio.make_logger()

TransportFactory = Callable[[BatchConfig, Any], Transport]


class WatchDirService(service.Service):
    """Polls ``DIR/incoming`` and runs each complete file as a batch."""

    def __init__(self, directory: str, base: BatchConfig, reactor: Any, registry: BatchRegistry, *,
                 poll_interval: float = 1.0, concurrent: int = 1, stop_grace: float | None = None,
                 transport_factory: TransportFactory | None = None, use_inotify: bool = True,
                 sidecar_allow: frozenset[str] = frozenset(), time_slice: float = 600.0,
                 hide: Callable[[Secrets], None] | None = None) -> None:
        self.dirs = WatchDir.at(directory)
        self.directory = self.dirs.directory
        self._base = base
        self._reactor = reactor
        self._registry = registry
        self._poll_interval = poll_interval
        self._concurrent = max(concurrent, 1)
        self._stop_grace = stop_grace
        self._transport_factory = transport_factory
        self._use_inotify = use_inotify
        self._sidecar_allow = check_sidecar_allow(sidecar_allow)
        self._hide = hide  # told the credentials of the files running (a sidecar may bring some): the log hides them
        self._loop: LoopingCall | None = None
        self._notifier: Any = None
        self._soon: Any = None
        self._stopping = False
        #: name -> ((size, mtime), when that signature was first seen)
        self._last_seen: dict[str, tuple[tuple[int, int], float]] = {}
        self._renamed_in: set[str] = set()
        self._waiting: dict[str, BatchEntry] = {}
        self._orphans: list[Job] = []
        self._running: dict[str, Job] = {}
        #: (directory, name) -> identity of a file that failed and could not be moved to failed/:
        #: not taken again while it is unchanged.
        self._skip: dict[tuple[str, str], tuple[int, int, int, int]] = {}
        #: scan step -> the error it last logged, so a lasting fault is logged once.
        self._scan_errors: dict[str, str] = {}
        self.polls = 0
        self._turns = Turns(time_slice, reactor, stop_grace)

    # -- lifecycle ----------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self.dirs.create()
        if self._use_inotify:
            self._notifier = watch_renames(self._reactor, self.dirs.incoming, self.note_renamed_in)
        self._loop = LoopingCall(self.poll)
        self._loop.clock = self._reactor
        self._loop.start(self._poll_interval, now=True)
        log.info("watching {directory} every {interval} s, {concurrent} batch(es) at a time",
                 directory=self.directory, interval=self._poll_interval, concurrent=self._concurrent)

    def stopService(self) -> Deferred[Any]:
        """Take no new files; running batches stop within the grace time and stay in processing/."""
        super().stopService()
        self._stopping = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._soon is not None and self._soon.active():
            self._soon.cancel()
        if self._notifier is not None:
            with contextlib.suppress(Exception):
                self._notifier.loseConnection()
            self._notifier = None
        for job in self._orphans:
            with contextlib.suppress(OSError):
                os.close(job.fd)
        self._orphans.clear()
        running = list(self._running.values())
        for job in running:
            if job.batch is not None:  # each batch's --drain-timeout unless a grace time was given
                job.batch.stop("the daemon is stopping", self._stop_grace)
        log.info("stopping: waiting for {count} running batch(es)", count=len(running))
        return DeferredList([job.finished for job in running if job.finished is not None])

    def note_renamed_in(self, name: str) -> None:
        """``name`` was renamed into incoming/, so it is complete: take it soon (not a scan)."""
        if is_candidate(name):
            self._renamed_in.add(name)
            self._kick()

    def _kick(self) -> None:
        """Start queued work soon: no directory scan (those run on the poll timer only)."""
        if not self._stopping and (self._soon is None or not self._soon.active()):
            self._soon = self._reactor.callLater(0, self._between_polls)

    def _between_polls(self) -> None:
        try:
            for name in sorted(self._renamed_in):
                if name not in self._waiting and (self.dirs.incoming, name) not in self._skip:
                    try:
                        os.lstat(os.path.join(self.dirs.incoming, name))
                    except OSError:
                        self._renamed_in.discard(name)
                        continue
                    self._enqueue(name)
            self._start_queued()
        except Exception as e:  # noqa: BLE001 - the next poll tries again
            self._scan_failed("_between_polls", e)

    # -- the periodic scan --------------------------------------------------------------

    def poll(self) -> None:
        """One scan; logs and carries on whatever goes wrong, so polling never stops."""
        if self._stopping:
            return
        self.polls += 1
        for step in (self._adopt_orphans, self._scan_incoming, self._start_queued):
            try:
                step()
            except Exception as e:  # noqa: BLE001 - the next poll tries again
                self._scan_failed(step.__name__, e)
            else:
                if self._scan_errors.pop(step.__name__, None) is not None:
                    log.info("watch directory scan step {step} works again", step=step.__name__)

    def _scan_failed(self, step: str, error: Exception) -> None:
        """Log a scan error the first time it is seen; the same error again stays quiet."""
        text = f"{type(error).__name__}: {error}"
        if self._scan_errors.get(step) == text:
            return
        self._scan_errors[step] = text
        log.failure("watch directory scan step {step} failed (logged once while it lasts): {error}",
                    step=step, error=text)

    def _skipped(self, directory: str, name: str, st: os.stat_result) -> bool:
        """Was this very file (unchanged) already found impossible to file away?"""
        known = self._skip.get((directory, name))
        if known is None:
            return False
        if known == identity(st):
            return True
        del self._skip[(directory, name)]  # it changed: try again
        return False

    def _scan_incoming(self) -> None:
        incoming = self.dirs.incoming
        names = sorted(os.listdir(incoming))
        present = set(names)
        now = self._reactor.seconds()
        seen: dict[str, tuple[tuple[int, int], float]] = {}
        for name in names:
            if not is_candidate(name):
                continue
            try:
                st = os.lstat(os.path.join(incoming, name))
            except FileNotFoundError:
                continue
            if self._skipped(incoming, name, st):
                continue
            if not stat.S_ISREG(st.st_mode):
                self._reject(incoming, name, str(not_regular(st.st_mode)), st=st)
                continue
            signature = (st.st_size, st.st_mtime_ns)
            previous, since = self._last_seen.get(name, (None, now))
            seen[name] = (signature, since if previous == signature else now)
            if name in self._waiting:
                continue
            # Unchanged means: the same size and mtime for a whole poll interval, so two scans close
            # together (an early scan after a batch ends) do not count as two polls.
            steady = previous == signature and now - since >= self._poll_interval * 0.999
            if name + READY in present or name in self._renamed_in or steady:
                self._enqueue(name)
        self._last_seen = seen
        self._renamed_in &= present
        for name in [n for n in self._waiting if n not in present]:
            self._registry.remove(self._waiting.pop(name).batch_id)  # taken by another daemon
        for key in [k for k in self._skip if k[0] == incoming and k[1] not in present]:
            del self._skip[key]

    def _enqueue(self, name: str) -> None:
        stats = BatchStats(str(uuid.uuid4()), name)
        self._waiting[name] = self._registry.add(stats, source=os.path.join(self.dirs.incoming, name))
        log.info("{name} is complete; queued as batch {batch_id}", name=shown(name), batch_id=stats.batch_id)

    def _adopt_orphans(self) -> None:
        """Files in processing/ that no live daemon holds a lock on were left by a crash or a stop."""
        processing = self.dirs.processing
        taken = set(self._running) | {job.name for job in self._orphans}
        names = sorted(os.listdir(processing))
        for key in [k for k in self._skip if k[0] == processing and k[1] not in names]:
            del self._skip[key]
        for name in names:
            if not is_candidate(name) or name in taken:
                continue
            try:
                if self._skipped(processing, name, os.lstat(os.path.join(processing, name))):
                    continue
                job = take_up(self.dirs, name, self._registry)
            except Rejected as e:
                self._reject(processing, name, str(e))
                continue
            except OSError as e:
                if not absent(e):
                    self._reject(processing, name, f"cannot open the file: {e.strerror}")
                continue
            if job is not None:
                self._orphans.append(job)
                taken.add(job.name)

    def _start_queued(self) -> None:
        self._turns.take(self._running.values(), bool(self._waiting or self._orphans), self._concurrent)
        while not self._stopping and len(self._running) < self._concurrent:
            job: Job | None = self._turns.next_orphan(self._orphans, bool(self._waiting))
            if job is None and self._waiting:
                name = next(iter(self._waiting))
                entry = self._waiting.pop(name)
                try:
                    job = self._claim(name, entry)
                except Exception as e:  # noqa: BLE001 - one file's error never stops the daemon
                    log.failure("claiming {name} failed", name=shown(name))
                    self._reject(self.dirs.incoming, name, f"cannot claim the file: {type(e).__name__}: {e}", entry)
                    job = None
            elif job is None:
                return
            if job is not None:
                self._launch(job)

    def _claim(self, name: str, entry: BatchEntry) -> Job | None:
        """:func:`.claims.claim` and its bookkeeping; None when the file was refused or is not ours."""
        self._renamed_in.discard(name)
        try:
            claimed = claim(self.dirs, name, entry.batch_id, self._reactor.seconds())
        except Replaced as e:
            self._reject(self.dirs.processing, e.name, str(e), entry, mode=e.mode)
            return None
        except Rejected as e:
            self._reject(self.dirs.incoming, name, str(e), entry)
            return None
        if claimed is None:  # gone, or another daemon was quicker
            self._registry.remove(entry.batch_id)
            return None
        new_name, fd, st = claimed
        entry.stats.name = new_name
        entry.source = os.path.join(self.dirs.processing, new_name)
        log.info("claimed {name} as processing/{claimed}", name=shown(name), claimed=shown(new_name))
        return Job(new_name, fd, entry, st=st, original=name)

    def _reject(self, directory: str, name: str, reason: str, entry: BatchEntry | None = None, *,
                st: os.stat_result | None = None, mode: int | None = None) -> None:
        """Move a file from incoming/ or processing/ straight to failed/ with its reason; one that
        cannot be moved is remembered and left alone while it is unchanged."""
        if directory == self.dirs.incoming:
            self._waiting.pop(name, None)
        try:
            if st is None:
                st = os.lstat(os.path.join(directory, name))
            base = file_away(self.dirs, directory, name, reason, st.st_mode if mode is None else mode)
        except FileNotFoundError:
            if entry is not None:
                self._registry.remove(entry.batch_id)
            return
        except OSError as e:
            if st is not None:
                self._skip[(directory, name)] = identity(st)
            log.warn("cannot move {name} to failed/ ({error}); left where it is and not taken again until it "
                     "changes; reason: {reason}", name=shown(name), error=e, reason=reason)
            if entry is not None:
                entry.stats.fail(reason)
            return
        if entry is None:
            entry = self._registry.add(BatchStats(str(uuid.uuid4()), name))
        entry.stats.fail(reason)
        entry.source = base
        where = "" if directory == self.dirs.incoming else " from processing/"
        log.warn("{name} moved to failed/{where}: {reason}", name=shown(name), where=where, reason=reason)

    # -- running one file -----------------------------------------------------------------

    def _launch(self, job: Job) -> None:
        self._running[job.name] = job
        self._turns.begin(job)
        d = Deferred.fromCoroutine(self._process(job))
        d.addErrback(self._crashed, job)
        d.addBoth(self._ended, job)
        job.finished = d

    def _crashed(self, failure: Any, job: Job) -> None:
        log.failure("processing {name} failed unexpectedly", failure=failure, name=shown(job.name))
        if not job.settled and not job.kept:
            file_failed(self.dirs, job, f"internal error: {failure.type.__name__}: {failure.getErrorMessage()}")

    def _ended(self, _: Any, job: Job) -> None:
        self._running.pop(job.name, None)
        self._hide_running()
        self._turns.end(job)
        with contextlib.suppress(OSError):
            os.close(job.fd)
        if not job.settled and not job.kept and job.st is not None:
            # It could not be filed away: leave it, and do not take it again while it is unchanged.
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(self.dirs.processing, job.name))
                self._skip[(self.dirs.processing, job.name)] = identity(st)
                log.warn("{name} stays in processing/ and is not taken again until it changes or the daemon "
                         "restarts", name=shown(job.name))
        self._kick()

    def _hide_running(self) -> None:
        if self._hide is not None:
            self._hide(running_secrets(job.batch.config for job in self._running.values() if job.batch))

    def _prepare(self, job: Job) -> Batch:
        """Everything before the first request: settings, input check, transport, batch."""
        entry, stats = job.entry, job.entry.stats
        config = file_config(self.dirs, self._base, job, self._sidecar_allow)
        if config.batch_id != stats.batch_id:
            self._registry.remove(stats.batch_id)
            stats.batch_id = config.batch_id
            entry = job.entry = self._registry.add(stats, config=config, source=entry.source)
        check_fd(job.fd, job.original or job.name)
        entry.config, entry.output = config, config.output_data_path
        mode = stat.S_IMODE(job.st.st_mode) if job.st is not None else 0o600
        transport = self._transport_factory(config, self._reactor) if self._transport_factory else None
        return Batch(config, self._reactor, stats=job.entry.stats, transport=transport, output_mode=mode,
                     label=shown(os.path.join(self.dirs.processing, job.name)))

    async def _process(self, job: Job) -> None:
        try:
            batch = job.batch = self._prepare(job)
            self._hide_running()
        except Rejected as e:
            file_failed(self.dirs, job, str(e))
            return
        except OSError as e:
            file_failed(self.dirs, job, f"cannot read the file: {e.strerror or e}")
            return
        except Exception as e:  # noqa: BLE001 - whatever it is, the file goes to failed/, once
            file_failed(self.dirs, job, f"cannot prepare the file: {type(e).__name__}: {e}")
            return
        if self._stopping:
            job.kept = True
            return
        try:
            summary = await batch.run()
        except Exception as e:  # noqa: BLE001 - one file's error never stops the daemon
            log.failure("batch {batch_id} ({name}) failed", batch_id=batch.config.batch_id, name=shown(job.name))
            file_failed(self.dirs, job, f"{type(e).__name__}: {e}")
            return
        job.entry.finish(self._reactor.seconds(), summary)
        file_finished(self.dirs, job, summary, stopping=self._stopping or self._turns.yielding(job))
