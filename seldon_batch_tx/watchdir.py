"""The watch directory: files dropped in ``incoming/`` become batches, one after another.

Layout under ``--watch-dir DIR``::

    incoming/    users drop input files here (plus optional NAME.ready and NAME.json)
    processing/  claimed files, their sidecars, and hidden work files (.NAME.output, .NAME.state.json)
    done/        NAME, its output (NAME with .out before the extension), NAME.summary.json
    failed/      NAME, NAME.reason.txt (and whatever output and summary exist)

A file is taken only when complete: it was renamed in (seen through inotify where available),
a ``NAME.ready`` marker exists, or its size and mtime did not change between two polls (a whole
poll interval apart).
Names starting with ``.`` or ending in ``.part``, ``.partial``, ``.tmp``, ``.ready`` or
``.json`` are never inputs. A file is claimed by taking an exclusive ``flock`` on it and then
renaming it into ``processing/``: of two daemons on one directory only one rename succeeds,
and the lock (held until the batch ends, dropped by the kernel if the process dies) tells a
daemon whether a file in ``processing/`` is still being worked on or was left by a crash.
Left-over files are taken up again from the beginning with a fresh output (see
:meth:`WatchDirService.prepare_restart`: it resumes, as ``--resume`` does).

The poll never raises: an error in one file sends that file to ``failed/`` with its reason,
and an error in a scan is logged and the next scan tries again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import uuid
from collections.abc import Callable
from typing import Any

import attrs
import txaio
from twisted.application import service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall

from .batch import Batch
from .config import BatchConfig
from .engine import Summary
from .options import OPTIONS, boolean, default_output_path
from .registry import BatchEntry, BatchRegistry
from .stats import BatchStats
from .transport import Transport

txaio.use_twisted()
log = txaio.make_logger()

SUBDIRS = ("incoming", "processing", "done", "failed")
READY = ".ready"
SIDECAR = ".json"
NOT_INPUT_SUFFIXES = (".part", ".partial", ".tmp", READY, SIDECAR)
#: Settings a sidecar may not change: the daemon decides where files go.
DAEMON_OWNED = frozenset({"input-data-path", "output-data-path"})
_OPTIONS_BY_NAME = {o.name: o for o in OPTIONS}
#: How much of a file :func:`check_input` looks at.
SNIFF_BYTES = 1 << 16

TransportFactory = Callable[[BatchConfig, Any], Transport]


class Rejected(Exception):
    """A file the daemon will not process; the message goes to ``failed/NAME.reason.txt``."""


def is_candidate(name: str) -> bool:
    """Could this name in incoming/ or processing/ be an input file?"""
    return bool(name) and not name.startswith(".") and not name.endswith(NOT_INPUT_SUFFIXES)


def apply_sidecar(config: BatchConfig, path: str) -> BatchConfig:
    """``config`` with the settings of a sidecar ``NAME.json``, coerced by the option table.

    Keys are option names (``workers`` / ``data-type`` / ``data_type``); values are checked
    exactly as on the command line, so ``{"workers": 0}`` is refused like ``--workers 0``.
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise Rejected(f"sidecar {os.path.basename(path)} is not readable JSON: {e}") from None
    if not isinstance(data, dict):
        raise Rejected(f"sidecar {os.path.basename(path)} must hold a JSON object of settings")
    changes: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("_", "-")
        option = _OPTIONS_BY_NAME.get(name)
        if option is None or name in DAEMON_OWNED or not hasattr(config, option.field):
            raise Rejected(f"sidecar setting {key!r} is not a per-file option")
        try:
            if value is None:
                if option.default is not None:
                    raise ValueError("may not be null")
                changes[option.field] = None
            elif option.coerce is None:
                changes[option.field] = value if isinstance(value, bool) else boolean(str(value))
            else:
                raw = str(value).lower() if isinstance(value, bool) else str(value)
                changes[option.field] = option.coerce(raw)
        except ValueError as e:
            raise Rejected(f"sidecar setting {key!r}: {e}") from None
    return config.replace(**changes)


def check_input(path: str) -> None:
    """Refuse files that are clearly not JSON lines before anything is sent.

    A binary file, a file that is not UTF-8, an empty file, or one whose first lines are
    none of them JSON is rejected; one bad line among good ones is left to the engine,
    which writes it as an error line.
    """
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    if not head.strip():
        raise Rejected("the file is empty")
    if b"\0" in head:
        raise Rejected("the file is binary (it holds NUL bytes), not JSON lines")
    lines = head.split(b"\n")
    if len(head) == SNIFF_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last one may be cut in the middle
    sample = [line for line in lines if line.strip()][:10]
    try:
        texts = [line.decode("utf-8") for line in sample]
    except UnicodeDecodeError as e:
        raise Rejected(f"the file is not UTF-8 text: {e}") from None
    if len(head) == SNIFF_BYTES and len(lines) == 1:
        return  # one very long first line: let the engine judge it
    errors = []
    for text in texts:
        try:
            json.loads(text)
            return
        except ValueError as e:
            errors.append(str(e))
    raise Rejected(f"none of the first {len(texts)} lines is JSON (first error: {errors[0]})")


def _move(src: str, dst: str) -> bool:
    """Rename if ``src`` exists; False when it does not."""
    try:
        os.replace(src, dst)
        return True
    except FileNotFoundError:
        return False


def _write_atomically(path: str, text: str) -> None:
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise


@attrs.define(eq=False)
class Job:
    """A claimed file: locked, in processing/, with its dashboard entry."""

    name: str
    fd: int
    entry: BatchEntry
    restarted: bool = False
    batch: Batch | None = None
    finished: Deferred[None] | None = None


class WatchDirService(service.Service):
    """Polls ``DIR/incoming`` and runs each complete file as a batch."""

    def __init__(self, directory: str, base: BatchConfig, reactor: Any, registry: BatchRegistry, *,
                 poll_interval: float = 1.0, concurrent: int = 1, stop_grace: float | None = None,
                 transport_factory: TransportFactory | None = None, use_inotify: bool = True) -> None:
        self.directory = os.path.abspath(directory)
        self.incoming, self.processing, self.done, self.failed = (
            os.path.join(self.directory, sub) for sub in SUBDIRS)
        self._base = base
        self._reactor = reactor
        self._registry = registry
        self._poll_interval = poll_interval
        self._concurrent = max(concurrent, 1)
        self._stop_grace = stop_grace
        self._transport_factory = transport_factory
        self._use_inotify = use_inotify
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
        self.polls = 0

    # -- lifecycle ----------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        for path in (self.incoming, self.processing, self.done, self.failed):
            os.makedirs(path, exist_ok=True)
        self._start_inotify()
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
            os.close(job.fd)
        self._orphans.clear()
        running = list(self._running.values())
        for job in running:
            if job.batch is not None:  # each batch's --drain-timeout unless a grace time was given
                if self._stop_grace is None:
                    job.batch.stop("the daemon is stopping")
                else:
                    job.batch.stop("the daemon is stopping", self._stop_grace)
        log.info("stopping: waiting for {count} running batch(es)", count=len(running))
        return DeferredList([job.finished for job in running if job.finished is not None])

    def _start_inotify(self) -> None:
        """Renamed-in files are complete at once; without inotify they wait for two polls."""
        if not self._use_inotify:
            return
        try:
            from twisted.internet import inotify
            from twisted.python.filepath import FilePath

            notifier = inotify.INotify(self._reactor)
            notifier.startReading()
            notifier.watch(FilePath(self.incoming), mask=inotify.IN_MOVED_TO, callbacks=[self._on_moved_in])
            self._notifier = notifier
        except Exception as e:  # noqa: BLE001 - inotify is an optimisation
            log.info("no inotify ({error}); renamed-in files are taken after two polls", error=e)

    def _on_moved_in(self, _watch: Any, path: Any, _mask: int) -> None:
        name = path.basename()
        self.note_renamed_in(name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else name)

    def note_renamed_in(self, name: str) -> None:
        """``name`` was renamed into incoming/, so it is complete: take it at the next (early) poll."""
        if is_candidate(name):
            self._renamed_in.add(name)
            self._poll_soon()

    def _poll_soon(self) -> None:
        if not self._stopping and (self._soon is None or not self._soon.active()):
            self._soon = self._reactor.callLater(0, self.poll)

    # -- the periodic scan --------------------------------------------------------------

    def poll(self) -> None:
        """One scan; logs and carries on whatever goes wrong, so polling never stops."""
        if self._stopping:
            return
        self.polls += 1
        for step in (self._adopt_orphans, self._scan_incoming, self._start_queued):
            try:
                step()
            except Exception:  # noqa: BLE001 - the next poll tries again
                log.failure("watch directory scan step {step} failed", step=step.__name__)

    def _scan_incoming(self) -> None:
        names = sorted(os.listdir(self.incoming))
        present = set(names)
        now = self._reactor.seconds()
        seen: dict[str, tuple[tuple[int, int], float]] = {}
        for name in names:
            if not is_candidate(name):
                continue
            try:
                st = os.stat(os.path.join(self.incoming, name))
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode):
                self._reject_incoming(name, "not a regular file")
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

    def _enqueue(self, name: str) -> None:
        stats = BatchStats(str(uuid.uuid4()), name)
        self._waiting[name] = self._registry.add(stats, source=os.path.join(self.incoming, name))
        log.info("{name} is complete; queued as batch {batch_id}", name=name, batch_id=stats.batch_id)

    def _adopt_orphans(self) -> None:
        """Files in processing/ that no live daemon holds a lock on were left by a crash or a stop."""
        taken = set(self._running) | {job.name for job in self._orphans}
        for name in sorted(os.listdir(self.processing)):
            if not is_candidate(name) or name in taken:
                continue
            path = os.path.join(self.processing, name)
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            if not _lock(fd):
                os.close(fd)
                continue  # another daemon is on it
            state = self._read_state(name)
            stats = BatchStats(str(state.get("batch_id") or uuid.uuid4()), name)
            entry = self._registry.add(stats, source=path)
            self._orphans.append(Job(name, fd, entry, restarted=True))
            log.info("{name} was left in processing/; taking it up again as batch {batch_id}",
                     name=name, batch_id=stats.batch_id)

    def _start_queued(self) -> None:
        while not self._stopping and len(self._running) < self._concurrent:
            if self._orphans:
                job: Job | None = self._orphans.pop(0)
            elif self._waiting:
                name = next(iter(self._waiting))
                job = self._claim(name, self._waiting.pop(name))
            else:
                return
            if job is not None:
                self._launch(job)

    # -- claiming -------------------------------------------------------------------------

    def _claim(self, name: str, entry: BatchEntry) -> Job | None:
        """Lock, then rename into processing/; None when another daemon was quicker."""
        src = os.path.join(self.incoming, name)
        try:
            fd = os.open(src, os.O_RDONLY)
        except FileNotFoundError:
            self._registry.remove(entry.batch_id)
            return None
        except OSError as e:
            self._reject_incoming(name, f"cannot open the file: {e}", entry)
            return None
        claimed = self._free_name(name, self.processing, self.done, self.failed)
        dst = os.path.join(self.processing, claimed)
        try:
            if not _lock(fd):
                raise FileNotFoundError(src)
            os.rename(src, dst)
            if os.fstat(fd).st_ino != os.stat(dst).st_ino:  # replaced under the same name meanwhile
                os.close(fd)
                fd = os.open(dst, os.O_RDONLY)
                _lock(fd)
        except FileNotFoundError:
            os.close(fd)
            self._registry.remove(entry.batch_id)
            return None
        _move(src + SIDECAR, dst + SIDECAR)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(src + READY)
        self._write_state(claimed, entry.batch_id, name)
        entry.stats.name = claimed
        entry.source = dst
        log.info("claimed {name} as processing/{claimed}", name=name, claimed=claimed)
        return Job(claimed, fd, entry)

    def _free_name(self, name: str, *directories: str) -> str:
        stem, ext = os.path.splitext(name)
        candidate = name
        for n in range(2, 10_000):
            if not any(os.path.lexists(os.path.join(d, candidate)) for d in directories):
                return candidate
            candidate = f"{stem}-{n}{ext}"
        return f"{stem}-{uuid.uuid4().hex[:8]}{ext}"

    def _state_path(self, name: str) -> str:
        return os.path.join(self.processing, f".{name}.state.json")

    def _output_path(self, name: str) -> str:
        return os.path.join(self.processing, f".{name}.output")

    def _write_state(self, name: str, batch_id: str, original: str) -> None:
        _write_atomically(self._state_path(name), json.dumps(
            {"batch_id": batch_id, "original_name": original, "claimed_at": self._reactor.seconds()}))

    def _read_state(self, name: str) -> dict[str, Any]:
        try:
            with open(self._state_path(name), encoding="utf-8") as f:
                state = json.load(f)
            return state if isinstance(state, dict) else {}
        except (OSError, ValueError):
            return {}

    # -- running one file -----------------------------------------------------------------

    def _launch(self, job: Job) -> None:
        self._running[job.name] = job
        d = Deferred.fromCoroutine(self._process(job))
        d.addErrback(lambda f: log.failure("processing {name} failed unexpectedly", failure=f, name=job.name))
        d.addBoth(self._ended, job)
        job.finished = d

    def _ended(self, _: Any, job: Job) -> None:
        self._running.pop(job.name, None)
        with contextlib.suppress(OSError):
            os.close(job.fd)
        self._poll_soon()

    def config_for(self, job: Job) -> BatchConfig:
        """The daemon's settings, this file's paths, then its sidecar's settings."""
        config = self._base.replace(input_data_path=os.path.join(self.processing, job.name),
                                    output_data_path=self._output_path(job.name), batch_id=job.entry.batch_id)
        sidecar = os.path.join(self.processing, job.name + SIDECAR)
        if os.path.exists(sidecar):
            config = apply_sidecar(config, sidecar)
        if job.restarted:
            config = self.prepare_restart(job, config)
        return config

    def prepare_restart(self, job: Job, config: BatchConfig) -> BatchConfig:
        """A file taken up again after a stop or crash resumes: the lines already in its output in
        processing/ are kept (a torn last line is cut off) and only the others are sent, under the
        same batch id."""
        return config.replace(resume=True, batch_id_given=True)

    async def _process(self, job: Job) -> None:
        entry, stats = job.entry, job.entry.stats
        try:
            config = self.config_for(job)
            if config.batch_id != stats.batch_id:
                self._registry.remove(stats.batch_id)
                stats.batch_id = config.batch_id
                self._registry.add(stats, config=config, source=entry.source)
                entry = job.entry = self._registry.get(config.batch_id) or entry
            check_input(config.input_data_path)
        except Rejected as e:
            self._finish_failed(job, str(e))
            return
        except OSError as e:
            self._finish_failed(job, f"cannot read the file: {e}")
            return
        entry.config, entry.output = config, config.output_data_path
        transport = self._transport_factory(config, self._reactor) if self._transport_factory else None
        batch = job.batch = Batch(config, self._reactor, stats=stats, transport=transport)
        if self._stopping:
            return
        try:
            summary = await batch.run()
        except Exception as e:  # noqa: BLE001 - one file's error never stops the daemon
            log.failure("batch {batch_id} ({name}) failed", batch_id=config.batch_id, name=job.name)
            self._finish_failed(job, f"{type(e).__name__}: {e}")
            return
        entry.finish(self._reactor.seconds())
        if summary.stopped_early and self._stopping and summary.not_processed > 0:
            stats.reason = "stopped with the daemon; it starts over when the daemon starts again"
            log.info("{name} stays in processing/ for the next start", name=job.name)
        elif summary.stopped_early and not self._stopping:
            self._finish_failed(job, summary.stopped_early, summary)
        else:
            stats.state = "done"  # every line written, even if a stop arrived at the very end
            self._finish_done(job, summary)

    def _summary_record(self, job: Job, summary: Summary, input_path: str, output_path: str) -> dict[str, Any]:
        stats, config = job.entry.stats, job.entry.config
        return {
            "batch_id": stats.batch_id, "name": job.name, "input": input_path, "output": output_path,
            "lines": summary.lines, "succeeded": summary.succeeded, "failed": summary.failed,
            "retried": summary.retried, "not_processed": summary.not_processed,
            "elapsed": round(summary.elapsed, 3), "lines_per_s": round(summary.rate, 1),
            "errors_by_kind": dict(stats.errors_by_kind), "stopped_early": summary.stopped_early,
            "exit_code": summary.exit_code, "started": stats.started, "finished": stats.finished,
            "restarted": job.restarted, "resumed": summary.resumed,
            "settings": None if config is None else {
                "deployment_name": config.deployment_name, "host": config.host, "transport": config.transport,
                "data_type": config.data_type, "payload_type": config.payload_type, "workers": config.workers,
                "batch_size": config.batch_size, "retries": config.retries},
        }

    def _settle(self, job: Job, directory: str) -> tuple[str, str, str]:
        """Move input, output and sidecar of ``job`` into ``directory``; the new paths."""
        final = self._free_name(job.name, directory)
        base = os.path.join(directory, final)
        output = os.path.join(directory, os.path.basename(default_output_path(final)))
        os.replace(os.path.join(self.processing, job.name), base)
        if not _move(self._output_path(job.name), output):
            output = ""
        _move(os.path.join(self.processing, job.name + SIDECAR), base + SIDECAR)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._state_path(job.name))
        job.entry.source, job.entry.output = base, output or None
        return final, base, output

    def _finish_done(self, job: Job, summary: Summary) -> None:
        final, base, output = self._settle(job, self.done)
        record = self._summary_record(job, summary, base, output)
        _write_atomically(base + ".summary.json", json.dumps(record, indent=2) + "\n")
        log.info("{name} done: {summary}", name=final, summary=summary.text())

    def _finish_failed(self, job: Job, reason: str, summary: Summary | None = None) -> None:
        stats = job.entry.stats
        stats.state, stats.reason = "failed", reason
        try:
            final, base, output = self._settle(job, self.failed)
            if summary is not None:
                record = self._summary_record(job, summary, base, output)
                _write_atomically(base + ".summary.json", json.dumps(record, indent=2) + "\n")
            _write_atomically(base + ".reason.txt", reason + "\n")
        except OSError:
            log.failure("could not move {name} to failed/", name=job.name)
            return
        log.warn("{name} failed: {reason}", name=final, reason=reason)

    def _reject_incoming(self, name: str, reason: str, entry: BatchEntry | None = None) -> None:
        """Move a file straight from incoming/ to failed/ with its reason."""
        final = self._free_name(name, self.failed)
        base = os.path.join(self.failed, final)
        if not _move(os.path.join(self.incoming, name), base):
            return
        _move(os.path.join(self.incoming, name + SIDECAR), base + SIDECAR)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.incoming, name + READY))
        _write_atomically(base + ".reason.txt", reason + "\n")
        if entry is None:
            entry = self._registry.add(BatchStats(str(uuid.uuid4()), name))
        entry.stats.state, entry.stats.reason, entry.source = "failed", reason, base
        self._waiting.pop(name, None)
        log.warn("{name} moved to failed/: {reason}", name=name, reason=reason)
