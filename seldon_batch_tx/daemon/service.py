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
Left-over files are taken up again and resume (see :meth:`WatchDirService.prepare_restart`).

Hostile files. Anyone who can write ``incoming/`` is trusted with data, not with the daemon's
reach, so:

* Inputs are never opened through a link and never opened blocking: ``lstat`` first (so a
  device or FIFO is not even opened in the common case), then ``open(O_NOFOLLOW | O_NONBLOCK)``
  and ``fstat`` of what was opened (so a swap between the two is caught): it must be a regular
  file on the watch directory's filesystem with one hard link. A second hard link is refused
  because the daemon cannot tell where the other name is: it may be a file outside the watch
  directory that the depositor could not read, and the daemon would read it and put its lines
  into ``done/`` (``fs.protected_hardlinks`` is off on some systems, and never binds root).
  The batch then reads the opened file through ``/proc/self/fd/N``, not through its name.
* Symlinks, FIFOs, sockets, devices and directories in ``incoming/`` or ``processing/`` go to
  ``failed/`` with ``NAME.reason.txt``; sidecars and state files are read the same guarded way.
* Names are handled as bytes wherever they matter (``os.fsencode``/``fsdecode`` with
  surrogateescape); names too long for the names derived from them (``.NAME.state.json``,
  ``NAME.summary.json``...) are claimed under a shortened name (a prefix, ``~`` and a hash;
  the original is kept in the state file and the summary).
* Nothing the daemon writes follows a planted link: small files go through ``mkstemp`` in the
  target directory and a rename, moves never replace an existing name (``renameat2``
  ``RENAME_NOREPLACE``), and outputs are created by the writer with ``O_NOFOLLOW`` and the
  input's permission bits (never more readable than the input).
* Sidecars may set only options that cannot send data or credentials elsewhere
  (:data:`SIDECAR_SAFE`); the others wait for the operator's ``--sidecar-allow KEY,...``.

Never spin: any failure to prepare, run or file away a file sends it to ``failed/`` with a
reason; a file that cannot even be moved there is remembered (by device, inode, size and mtime)
and not taken again until it changes or the daemon restarts. Directory scans run only on the
``--poll-interval`` timer; a rename seen by inotify or a finished batch only starts work already
queued or the renamed file itself. A scan step that keeps failing logs its error once.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import stat
import tempfile
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import txaio
from twisted.application import service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall
from twisted.python import usage

from ..config import BatchConfig
from ..dashboard.registry import BatchEntry, BatchRegistry
from ..options import OPTIONS, boolean, default_output_path
from ..pipeline.batch import Batch
from ..pipeline.engine import Summary
from ..pipeline.stats import BatchStats
from ..transports.base import Transport

txaio.use_twisted()
log = txaio.make_logger()

SUBDIRS = ("incoming", "processing", "done", "failed")
READY = ".ready"
SIDECAR = ".json"
NOT_INPUT_SUFFIXES = (".part", ".partial", ".tmp", READY, SIDECAR)
_OPTIONS_BY_NAME = {o.name: o for o in OPTIONS}
#: Options whose BatchConfig field has another name (repeatable ones collect into a tuple).
_FIELDS = {"header": "headers"}
#: Options that are never per-file, whatever ``--sidecar-allow`` says: the daemon decides where
#: files are read and written, how it logs and serves, and how a file is resumed.
SIDECAR_NEVER = frozenset({"input-data-path", "output-data-path", "dashboard", "log-level", "resume",
                           "retry-failed", "call-credentials-token-file"})
#: Options a sidecar may set without the operator's leave: how lines are encoded and paced, and
#: how hard this one file is pushed. None of them changes where requests go, what credentials or
#: headers they carry, or how much memory one answer may take. ``workers`` is capped at the
#: daemon's own ``--workers``. ``model-version`` is not here: it is part of the model's address
#: (a path segment on the daemon's host, sent with its credentials).
SIDECAR_SAFE = frozenset({"data-type", "payload-type", "method", "batch-size", "batch-id", "batch-interval",
                          "workers", "retries", "timeout", "max-failures", "ordered", "input-name", "benchmark",
                          "fsync-interval"})
#: Keys an operator may add with ``--sidecar-allow``: host, transport, protocol, TLS, headers,
#: tokens, model and deployment, namespace, gateway, shards, limits and the drain time.
SIDECAR_ALLOWABLE = frozenset(o.name for o in OPTIONS) - SIDECAR_NEVER - SIDECAR_SAFE
#: How much of a file :func:`check_input` looks at; the most of a sidecar or state file read.
SNIFF_BYTES = 1 << 16
SIDECAR_MAX_BYTES = 1 << 20
BOM = b"\xef\xbb\xbf"
#: Bytes kept free after a name for the longest derived name: ``.summary.json`` plus ``-NN``
#: (``.NAME.state.json`` and ``STEM.out.EXT`` are shorter).
DERIVED_ROOM = 24
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_FREE_NAME_TRIES = 100

TransportFactory = Callable[[BatchConfig, Any], Transport]


class Rejected(Exception):
    """A file the daemon will not process; the message goes to ``failed/NAME.reason.txt``."""


def is_candidate(name: str) -> bool:
    """Could this name in incoming/ or processing/ be an input file?"""
    return bool(name) and not name.startswith(".") and not name.endswith(NOT_INPUT_SUFFIXES)


def shown(name: str) -> str:
    """A name as text whatever its bytes (invalid UTF-8 as ``\\xNN``), for logs and reasons."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def short_name(name: str, limit: int = 255) -> str:
    """``name``, or when it leaves no room for its derived names within ``limit`` bytes, a prefix of
    it, ``~``, a hash of the whole name and its extension: distinct names stay distinct."""
    raw = os.fsencode(name)
    if len(raw) + DERIVED_ROOM <= limit:
        return name
    stem, ext = os.path.splitext(raw)
    if len(ext) > 16:
        ext = b""
    digest = hashlib.sha1(raw, usedforsecurity=False).hexdigest()[:12].encode()
    stem = stem[: max(limit - DERIVED_ROOM - len(ext) - len(digest) - 1, 1)]
    for cut in range(4):  # do not end inside a UTF-8 sequence when the name was UTF-8
        try:
            (stem[: len(stem) - cut] if cut else stem).decode("utf-8")
            stem = stem[: len(stem) - cut] if cut else stem
            break
        except UnicodeDecodeError:
            continue
    return os.fsdecode(stem + b"~" + digest + ext)


def _kind(mode: int) -> str:
    for test, what in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return what
    return "not a regular file"


def _not_regular(mode: int) -> Rejected:
    return Rejected(f"it is {_kind(mode)}, not a regular file: the daemon reads only regular files and never "
                    f"follows links (copy the data into incoming/ instead)")


def open_regular(path: str, device: int | None = None, *, single_link: bool = True) -> tuple[int, os.stat_result]:
    """Open ``path`` for reading without following a link or blocking; its fd and ``fstat``.

    Rejected unless it is a regular file (on ``device`` when given, with one hard link when
    ``single_link``); FileNotFoundError and other OSErrors pass through.
    """
    before = os.lstat(path)
    if not stat.S_ISREG(before.st_mode):
        raise _not_regular(before.st_mode)  # a FIFO or device is not even opened
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENXIO, errno.EMLINK):  # swapped for a link or socket meanwhile
            raise _not_regular(stat.S_IFLNK if e.errno != errno.ENXIO else stat.S_IFSOCK) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(st.st_mode)
        if device is not None and st.st_dev != device:
            raise Rejected("it is on another filesystem than the watch directory (a mount point?); the daemon "
                           "reads only files stored in the watch directory itself")
        if single_link and st.st_nlink > 1:
            raise Rejected(f"it has {st.st_nlink} hard links, so it may be a file from outside the watch directory; "
                           f"copy or move it into incoming/ instead of linking it")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _read_small(path: str, limit: int = SIDECAR_MAX_BYTES) -> bytes:
    """The whole of a small regular file (a sidecar, a state file), read without following links."""
    fd, st = open_regular(path, single_link=False)
    try:
        if st.st_size > limit:
            raise Rejected(f"{shown(os.path.basename(path))} is larger than {limit} bytes")
        return os.pread(fd, limit + 1, 0)[:limit]
    finally:
        os.close(fd)


def _option_name(key: Any) -> str:
    return str(key).replace("_", "-")


def check_sidecar_allow(keys: Iterable[str]) -> frozenset[str]:
    """The keys of ``--sidecar-allow``, normalised; ValueError naming a key that cannot be allowed."""
    allowed = set()
    for key in keys:
        name = _option_name(key.strip()).lower()
        if not name:
            continue
        if name in SIDECAR_NEVER:
            raise ValueError(f"{name!r} is never a per-file setting")
        if name not in SIDECAR_ALLOWABLE and name not in SIDECAR_SAFE:
            raise ValueError(f"{name!r} is not an option (allowable: {', '.join(sorted(SIDECAR_ALLOWABLE))})")
        allowed.add(name)
    return frozenset(allowed)


def _no_control_characters(key: Any, value: Any) -> None:
    """Strings go into headers, URLs and tags: CR, LF or NUL in one would be a header injection."""
    if isinstance(value, str) and any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise Rejected(f"sidecar setting {key!r}: {value!r} holds control characters")


def apply_sidecar(config: BatchConfig, path: str, allow: frozenset[str] = frozenset(),
                  max_workers: int | None = None) -> BatchConfig:
    """``config`` with the settings of a sidecar ``NAME.json``, coerced by the option table.

    Keys are option names (``workers`` / ``data-type`` / ``data_type``); values are checked
    exactly as on the command line, so ``{"workers": 0}`` is refused like ``--workers 0``. Only
    :data:`SIDECAR_SAFE` keys and those in ``allow`` (``--sidecar-allow``) are accepted;
    ``workers`` is capped at ``max_workers``.
    """
    label = shown(os.path.basename(path))
    try:
        data = json.loads(_read_small(path))
    except Rejected as e:
        raise Rejected(f"sidecar {label}: {e}") from None
    except (OSError, ValueError, RecursionError) as e:
        raise Rejected(f"sidecar {label} is not readable JSON: {type(e).__name__}: {e}") from None
    if not isinstance(data, dict):
        raise Rejected(f"sidecar {label} must hold a JSON object of settings")
    changes: dict[str, Any] = {}
    for key, value in data.items():
        name = _option_name(key)
        option = _OPTIONS_BY_NAME.get(name)
        field = _FIELDS.get(name, option.field) if option is not None else ""
        if option is None or name in SIDECAR_NEVER or not hasattr(config, field):
            raise Rejected(f"sidecar setting {key!r} is not a per-file option")
        if name not in SIDECAR_SAFE and name not in allow:
            raise Rejected(f"sidecar setting {key!r} is the daemon's (it decides where data and credentials go); "
                           f"its operator can allow it with --sidecar-allow {name}")
        repeated = name in _FIELDS and isinstance(value, list) and all(isinstance(v, str) for v in value)
        for one in value if repeated else [value]:
            _no_control_characters(key, one)
        try:
            if value is None:
                if option.default is not None:
                    raise ValueError("may not be null")
                changes[field] = None
            elif option.coerce is None:
                changes[field] = value if isinstance(value, bool) else boolean(str(value))
            elif repeated:  # {"header": ["A: 1", "B: 2"]}, as a repeated flag
                changes[field] = option.parse("\n".join(value), label=f"sidecar setting {key!r}")
            elif isinstance(value, (dict, list)):
                raise ValueError(f"must be a string, number or boolean, not {type(value).__name__}")
            else:
                raw = str(value).lower() if isinstance(value, bool) else str(value)
                changes[field] = option.parse(raw, label=f"sidecar setting {key!r}")
        except usage.UsageError as e:  # names the key and its value (never a secret's)
            raise Rejected(str(e)) from None
        except (ValueError, TypeError, OverflowError) as e:
            raise Rejected(f"sidecar setting {key!r}: {e}") from None
    if max_workers is not None and changes.get("workers", 0) > max_workers:
        log.info("sidecar {sidecar}: workers {asked} capped at the daemon's {cap}", sidecar=label,
                 asked=changes["workers"], cap=max_workers)
        changes["workers"] = max_workers
    try:
        return config.replace(**changes)
    except (ValueError, TypeError) as e:
        raise Rejected(f"sidecar {label}: the settings do not fit together: {e}") from None


def check_head(head: bytes, truncated: bool) -> None:
    """Refuse a file whose first bytes (``head``) are clearly not JSON lines."""
    if head.startswith(BOM):
        head = head[len(BOM):]  # the command line accepts a UTF-8 BOM, so does the daemon
    if not head.strip():
        raise Rejected("the file is empty")
    if b"\0" in head:
        raise Rejected("the file is binary (it holds NUL bytes), not JSON lines")
    lines = head.split(b"\n")
    if truncated and len(lines) > 1:
        lines = lines[:-1]  # the last one may be cut in the middle
    sample = [line for line in lines if line.strip()][:10]
    try:
        texts = [line.decode("utf-8") for line in sample]
    except UnicodeDecodeError as e:
        raise Rejected(f"the file is not UTF-8 text: {e}") from None
    if truncated and len(lines) == 1:
        return  # one very long first line: let the engine judge it
    errors = []
    for text in texts:
        try:
            json.loads(text.removeprefix("\ufeff"))
            return
        except RecursionError:
            return  # JSON nested too deep to parse here: JSON all the same; the engine writes its error line
        except ValueError as e:
            errors.append(str(e))
    raise Rejected(f"none of the first {len(texts)} lines is JSON (first error: {errors[0]})")


def check_fd(fd: int) -> None:
    """:func:`check_head` on an open file's first :data:`SNIFF_BYTES` (its offset is not moved)."""
    head = os.pread(fd, SNIFF_BYTES, 0)
    check_head(head, len(head) == SNIFF_BYTES)


def check_input(path: str) -> None:
    """Refuse files that are clearly not JSON lines before anything is sent.

    A binary file, a file that is not UTF-8, an empty file, or one whose first lines are
    none of them JSON is rejected (as is anything but a regular file); one bad line among good
    ones is left to the engine, which writes it as an error line.
    """
    fd, _ = open_regular(path, single_link=False)
    try:
        check_fd(fd)
    finally:
        os.close(fd)


# -- moving and writing without following links ------------------------------------------------

_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
try:
    _renameat2: Any = ctypes.CDLL(None, use_errno=True).renameat2
except (OSError, AttributeError):  # not glibc >= 2.28: check-then-rename
    _renameat2 = None


def _rename_noreplace(src: str, dst: str) -> None:
    """Rename, failing with FileExistsError rather than replacing whatever ``dst`` is."""
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(code, os.strerror(code), src, None, dst)
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    os.rename(src, dst)


def _absent(e: OSError) -> bool:
    """The name does not exist, or cannot (too long for the filesystem)."""
    return isinstance(e, FileNotFoundError) or e.errno == errno.ENAMETOOLONG


def _move(src: str, dst: str) -> bool:
    """Rename if ``src`` exists (never replacing ``dst``); False when it does not."""
    try:
        _rename_noreplace(src, dst)
        return True
    except OSError as e:
        if _absent(e):
            return False
        raise


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError as e:
        if not _absent(e):
            raise


def _write_atomically(path: str, text: str, mode: int = 0o600) -> None:
    """Write ``path`` through a fresh ``mkstemp`` file beside it and a rename: a link planted at
    either name is replaced, never followed."""
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
            os.fchmod(f.fileno(), mode)
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _derived(name: str) -> tuple[str, ...]:
    """Every name the daemon may create from ``name`` in one directory."""
    return (name, name + SIDECAR, f".{name}.output", f".{name}.state.json", name + ".summary.json",
            name + ".reason.txt", os.path.basename(default_output_path(name)))


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


class WatchDirService(service.Service):
    """Polls ``DIR/incoming`` and runs each complete file as a batch."""

    def __init__(self, directory: str, base: BatchConfig, reactor: Any, registry: BatchRegistry, *,
                 poll_interval: float = 1.0, concurrent: int = 1, stop_grace: float | None = None,
                 transport_factory: TransportFactory | None = None, use_inotify: bool = True,
                 sidecar_allow: frozenset[str] = frozenset()) -> None:
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
        self._sidecar_allow = check_sidecar_allow(sidecar_allow)
        self._loop: LoopingCall | None = None
        self._notifier: Any = None
        self._soon: Any = None
        self._stopping = False
        self._device: int | None = None
        self._name_max = 255
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

    # -- lifecycle ----------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        for path in (self.incoming, self.processing, self.done, self.failed):
            os.makedirs(path, exist_ok=True)
        self._device = os.stat(self.processing).st_dev
        with contextlib.suppress(OSError, ValueError):
            self._name_max = min(os.pathconf(d, "PC_NAME_MAX") for d in (self.processing, self.done, self.failed))
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
            with contextlib.suppress(OSError):
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
        self.note_renamed_in(os.fsdecode(name))

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
                if name not in self._waiting and (self.incoming, name) not in self._skip:
                    try:
                        os.lstat(os.path.join(self.incoming, name))
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
        if known == _identity(st):
            return True
        del self._skip[(directory, name)]  # it changed: try again
        return False

    def _scan_incoming(self) -> None:
        names = sorted(os.listdir(self.incoming))
        present = set(names)
        now = self._reactor.seconds()
        seen: dict[str, tuple[tuple[int, int], float]] = {}
        for name in names:
            if not is_candidate(name):
                continue
            try:
                st = os.lstat(os.path.join(self.incoming, name))
            except FileNotFoundError:
                continue
            if self._skipped(self.incoming, name, st):
                continue
            if not stat.S_ISREG(st.st_mode):
                self._reject(self.incoming, name, str(_not_regular(st.st_mode)), st=st)
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
        for key in [k for k in self._skip if k[0] == self.incoming and k[1] not in present]:
            del self._skip[key]

    def _enqueue(self, name: str) -> None:
        stats = BatchStats(str(uuid.uuid4()), name)
        self._waiting[name] = self._registry.add(stats, source=os.path.join(self.incoming, name))
        log.info("{name} is complete; queued as batch {batch_id}", name=shown(name), batch_id=stats.batch_id)

    def _adopt_orphans(self) -> None:
        """Files in processing/ that no live daemon holds a lock on were left by a crash or a stop."""
        taken = set(self._running) | {job.name for job in self._orphans}
        names = sorted(os.listdir(self.processing))
        for key in [k for k in self._skip if k[0] == self.processing and k[1] not in names]:
            del self._skip[key]
        for name in names:
            if not is_candidate(name) or name in taken:
                continue
            path = os.path.join(self.processing, name)
            try:
                st = os.lstat(path)
                if self._skipped(self.processing, name, st):
                    continue
                fd, st = open_regular(path, self._device, single_link=False)
            except Rejected as e:
                self._reject(self.processing, name, str(e))
                continue
            except OSError as e:
                if not _absent(e):
                    self._reject(self.processing, name, f"cannot open the file: {e.strerror}")
                continue
            try:
                if not _lock(fd):
                    os.close(fd)
                    continue  # another daemon is on it
                if st.st_nlink > 1:  # checked under the lock: a daemon moving its own file may link it
                    raise Rejected(f"it has {st.st_nlink} hard links, so it may be a file from outside the watch "
                                   f"directory")
                job = self._adopt(name, fd, st)
            except Exception as e:  # noqa: BLE001 - whatever it is, the file goes to failed/, once
                os.close(fd)
                self._reject(self.processing, name, str(e) if isinstance(e, Rejected)
                             else f"cannot take it up again: {type(e).__name__}: {e}")
                continue
            self._orphans.append(job)
            taken.add(job.name)

    def _adopt(self, name: str, fd: int, st: os.stat_result) -> Job:
        short = short_name(name, self._name_max)
        if short != name:  # a name too long for its work files: rename it under the lock we hold
            short = self._free_name(short, self.processing, self.done, self.failed)
            _rename_noreplace(os.path.join(self.processing, name), os.path.join(self.processing, short))
            _move(os.path.join(self.processing, name + SIDECAR), os.path.join(self.processing, short + SIDECAR))
        state = self._read_state(short)
        stats = BatchStats(str(state.get("batch_id") or uuid.uuid4()), short)
        entry = self._registry.add(stats, source=os.path.join(self.processing, short))
        log.info("{name} was left in processing/; taking it up again as batch {batch_id}",
                 name=shown(short), batch_id=stats.batch_id)
        original = state.get("original_name")
        return Job(short, fd, entry, restarted=True, st=st, original=original if isinstance(original, str) else name)

    def _start_queued(self) -> None:
        while not self._stopping and len(self._running) < self._concurrent:
            if self._orphans:
                job: Job | None = self._orphans.pop(0)
            elif self._waiting:
                name = next(iter(self._waiting))
                entry = self._waiting.pop(name)
                try:
                    job = self._claim(name, entry)
                except Exception as e:  # noqa: BLE001 - one file's error never stops the daemon
                    log.failure("claiming {name} failed", name=shown(name))
                    self._reject(self.incoming, name, f"cannot claim the file: {type(e).__name__}: {e}", entry)
                    job = None
            else:
                return
            if job is not None:
                self._launch(job)

    # -- claiming -------------------------------------------------------------------------

    def _claim(self, name: str, entry: BatchEntry) -> Job | None:
        """Open safely, lock, then rename into processing/; None when another daemon was quicker
        or the file was refused."""
        self._renamed_in.discard(name)
        src = os.path.join(self.incoming, name)
        try:
            fd, st = open_regular(src, self._device)
        except Rejected as e:
            self._reject(self.incoming, name, str(e), entry)
            return None
        except OSError as e:
            if _absent(e):
                self._registry.remove(entry.batch_id)
            else:
                self._reject(self.incoming, name, f"cannot open the file: {e.strerror}", entry)
            return None
        try:
            if not _lock(fd):
                self._registry.remove(entry.batch_id)
                os.close(fd)
                return None
            for _ in range(_FREE_NAME_TRIES):
                claimed = self._free_name(short_name(name, self._name_max), self.processing, self.done, self.failed)
                dst = os.path.join(self.processing, claimed)
                try:
                    _rename_noreplace(src, dst)
                    break
                except FileExistsError:  # taken between the check and the rename: the next free name
                    continue
                except FileNotFoundError:
                    self._registry.remove(entry.batch_id)
                    os.close(fd)
                    return None
            else:
                raise FileExistsError(errno.EEXIST, "no free name in processing/", src)
            now = os.lstat(dst)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):  # swapped under the same name meanwhile
                os.close(fd)
                self._reject(self.processing, claimed, "it was replaced by another file while being claimed",
                             entry, mode=st.st_mode)
                return None
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        job = Job(claimed, fd, entry, st=st, original=name)
        try:
            _move(src + SIDECAR, dst + SIDECAR)
            _unlink(src + READY)
            _unlink(self._output_path(claimed))  # a fresh claim has no output yet: whatever is there was planted
            self._write_state(claimed, entry.batch_id, name)
        except OSError as e:  # the batch still runs; only a restart would start it over
            log.warn("claimed {name}, but could not tidy its work files: {error}", name=shown(claimed), error=e)
        entry.stats.name = claimed
        entry.source = dst
        log.info("claimed {name} as processing/{claimed}", name=shown(name), claimed=shown(claimed))
        return job

    def _free_name(self, name: str, *directories: str) -> str:
        """``name`` or ``STEM-N.EXT``, such that none of its derived names exists in ``directories``."""
        stem, ext = os.path.splitext(name)
        candidate = name
        for n in range(2, _FREE_NAME_TRIES):
            paths = (os.path.join(d, derived) for d in directories for derived in _derived(candidate))
            if not any(os.path.lexists(path) for path in paths):
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
            state = json.loads(_read_small(self._state_path(name)))
            return state if isinstance(state, dict) else {}
        except (OSError, ValueError, RecursionError, Rejected):
            return {}

    # -- running one file -----------------------------------------------------------------

    def _launch(self, job: Job) -> None:
        self._running[job.name] = job
        d = Deferred.fromCoroutine(self._process(job))
        d.addErrback(self._crashed, job)
        d.addBoth(self._ended, job)
        job.finished = d

    def _crashed(self, failure: Any, job: Job) -> None:
        log.failure("processing {name} failed unexpectedly", failure=failure, name=shown(job.name))
        if not job.settled and not job.kept:
            self._finish_failed(job, f"internal error: {failure.type.__name__}: {failure.getErrorMessage()}")

    def _ended(self, _: Any, job: Job) -> None:
        self._running.pop(job.name, None)
        with contextlib.suppress(OSError):
            os.close(job.fd)
        if not job.settled and not job.kept and job.st is not None:
            # It could not be filed away: leave it, and do not take it again while it is unchanged.
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(self.processing, job.name))
                self._skip[(self.processing, job.name)] = _identity(st)
                log.warn("{name} stays in processing/ and is not taken again until it changes or the daemon "
                         "restarts", name=shown(job.name))
        self._kick()

    def config_for(self, job: Job) -> BatchConfig:
        """The daemon's settings, this file's paths, then its sidecar's settings.

        The input is read through the fd the daemon opened and checked (``/proc/self/fd/N``), so
        a name swapped in processing/ afterwards is never read.
        """
        by_fd = f"/proc/self/fd/{job.fd}"
        source = by_fd if os.path.exists(by_fd) else os.path.join(self.processing, job.name)
        config = self._base.replace(input_data_path=source, output_data_path=self._output_path(job.name),
                                    batch_id=job.entry.batch_id)
        sidecar = os.path.join(self.processing, job.name + SIDECAR)
        if os.path.lexists(sidecar):
            config = apply_sidecar(config, sidecar, self._sidecar_allow, max_workers=self._base.workers)
        if job.restarted:
            config = self.prepare_restart(job, config)
        return config

    def prepare_restart(self, job: Job, config: BatchConfig) -> BatchConfig:
        """A file taken up again after a stop or crash resumes: the lines already in its output in
        processing/ are kept (a torn last line is cut off) and only the others are sent, under the
        same batch id. An output that is not a plain regular file was not written by us: dropped."""
        output = config.output_data_path
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(output)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
                log.warn("{name}: the output in processing/ is {kind}; starting it over", name=shown(job.name),
                         kind=_kind(st.st_mode) if not stat.S_ISREG(st.st_mode) else "hard-linked")
                os.unlink(output)
        return config.replace(resume=True, batch_id_given=True)

    def _prepare(self, job: Job) -> tuple[BatchConfig, Batch]:
        """Everything before the first request: settings, input check, transport, batch."""
        entry, stats = job.entry, job.entry.stats
        config = self.config_for(job)
        if config.batch_id != stats.batch_id:
            self._registry.remove(stats.batch_id)
            stats.batch_id = config.batch_id
            self._registry.add(stats, config=config, source=entry.source)
            entry = job.entry = self._registry.get(config.batch_id) or entry
        check_fd(job.fd)
        entry.config, entry.output = config, config.output_data_path
        mode = stat.S_IMODE(job.st.st_mode) if job.st is not None else 0o600
        transport = self._transport_factory(config, self._reactor) if self._transport_factory else None
        return config, Batch(config, self._reactor, stats=job.entry.stats, transport=transport, output_mode=mode)

    async def _process(self, job: Job) -> None:
        try:
            config, batch = self._prepare(job)
        except Rejected as e:
            self._finish_failed(job, str(e))
            return
        except OSError as e:
            self._finish_failed(job, f"cannot read the file: {e.strerror or e}")
            return
        except Exception as e:  # noqa: BLE001 - whatever it is, the file goes to failed/, once
            self._finish_failed(job, f"cannot prepare the file: {type(e).__name__}: {e}")
            return
        entry, stats = job.entry, job.entry.stats
        job.batch = batch
        if self._stopping:
            job.kept = True
            return
        try:
            summary = await batch.run()
        except Exception as e:  # noqa: BLE001 - one file's error never stops the daemon
            log.failure("batch {batch_id} ({name}) failed", batch_id=config.batch_id, name=shown(job.name))
            self._finish_failed(job, f"{type(e).__name__}: {e}")
            return
        entry.finish(self._reactor.seconds())
        if self._stopping and summary.not_processed > 0:
            job.kept = True
            stats.reason = "stopped with the daemon; it resumes when the daemon starts again"
            log.info("{name} stays in processing/ for the next start", name=shown(job.name))
        elif summary.stopped_early:
            self._finish_failed(job, summary.stopped_early, summary)
        elif summary.not_processed > 0:
            self._finish_failed(job, f"{summary.not_processed} line(s) got no output line (see the daemon's log)",
                                summary)
        else:
            stats.state = "done"  # every line written, even if a stop arrived at the very end
            self._finish_done(job, summary)

    def _summary_record(self, job: Job, summary: Summary, input_path: str, output_path: str) -> dict[str, Any]:
        stats, config = job.entry.stats, job.entry.config
        return {
            "batch_id": stats.batch_id, "name": job.name, "input": input_path, "output": output_path,
            "original_name": job.original or job.name,
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

    def _mode(self, job: Job) -> int:
        """Summaries and reasons are no more readable than the input."""
        return stat.S_IMODE(job.st.st_mode) & 0o666 if job.st is not None else 0o600

    def _settle(self, job: Job, directory: str) -> tuple[str, str, str]:
        """Move input, output and sidecar of ``job`` into ``directory``; the new paths."""
        for _ in range(_FREE_NAME_TRIES):
            final = self._free_name(job.name, directory)
            try:
                _rename_noreplace(os.path.join(self.processing, job.name), os.path.join(directory, final))
                break
            except FileExistsError:  # taken between the check and the rename: the next free name
                continue
        else:
            raise FileExistsError(errno.EEXIST, "no free name", os.path.join(directory, job.name))
        job.settled = True
        base = os.path.join(directory, final)
        output = os.path.join(directory, os.path.basename(default_output_path(final)))
        try:
            if not _move(self._output_path(job.name), output):
                output = ""
        except FileExistsError:
            output = os.path.join(directory, f".{final}.{uuid.uuid4().hex[:8]}.out")
            _move(self._output_path(job.name), output)
        with contextlib.suppress(FileExistsError):
            _move(os.path.join(self.processing, job.name + SIDECAR), base + SIDECAR)
        _unlink(self._state_path(job.name))
        job.entry.source, job.entry.output = base, output or None
        return final, base, output

    def _finish_done(self, job: Job, summary: Summary) -> None:
        record = self._summary_record(job, summary, "", "")
        try:
            final, base, output = self._settle(job, self.done)
        except OSError as e:
            self._finish_failed(job, f"cannot move it to done/: {e}", summary)
            return
        record.update(input=base, output=output)
        try:
            _write_atomically(base + ".summary.json", json.dumps(record, indent=2) + "\n", self._mode(job))
        except OSError as e:
            log.warn("{name}: could not write its summary: {error}", name=shown(final), error=e)
        log.info("{name} done: {summary}", name=shown(final), summary=summary.text())

    def _finish_failed(self, job: Job, reason: str, summary: Summary | None = None) -> None:
        stats = job.entry.stats
        stats.state, stats.reason = "failed", reason
        record = None if summary is None else self._summary_record(job, summary, "", "")
        try:
            if not job.settled:
                final, base, output = self._settle(job, self.failed)
            else:  # moved to done/ already; the failure is about what came after
                final = os.path.basename(job.entry.source or job.name)
                base, output = job.entry.source or "", job.entry.output or ""
            if record is not None:
                record.update(input=base, output=output)
                _write_atomically(base + ".summary.json", json.dumps(record, indent=2) + "\n", self._mode(job))
            _write_atomically(base + ".reason.txt", reason + "\n", self._mode(job))
        except Exception as e:  # noqa: BLE001 - _ended remembers the file so it is not taken again
            log.warn("could not move {name} to failed/ ({error}); reason: {reason}", name=shown(job.name),
                     error=e, reason=reason)
            return
        log.warn("{name} failed: {reason}", name=shown(final), reason=reason)

    def _reject(self, directory: str, name: str, reason: str, entry: BatchEntry | None = None, *,
                st: os.stat_result | None = None, mode: int | None = None) -> None:
        """Move a file from incoming/ or processing/ straight to failed/ with its reason; one that
        cannot be moved is remembered and left alone while it is unchanged."""
        src = os.path.join(directory, name)
        if directory == self.incoming:
            self._waiting.pop(name, None)
        try:
            if st is None:
                st = os.lstat(src)
            final = ""
            for _ in range(_FREE_NAME_TRIES):
                final = self._free_name(short_name(name, self._name_max), self.failed)
                try:
                    _rename_noreplace(src, os.path.join(self.failed, final))
                    break
                except FileExistsError:
                    continue
            base = os.path.join(self.failed, final)
            with contextlib.suppress(FileExistsError):
                _move(src + SIDECAR, base + SIDECAR)
            if directory == self.incoming:
                _unlink(src + READY)
            mode = st.st_mode if mode is None else mode
            bits = stat.S_IMODE(mode) & 0o666 if stat.S_ISREG(mode) else 0
            _write_atomically(base + ".reason.txt", reason + "\n", bits or 0o600)
        except FileNotFoundError:
            if entry is not None:
                self._registry.remove(entry.batch_id)
            return
        except OSError as e:
            if st is not None:
                self._skip[(directory, name)] = _identity(st)
            log.warn("cannot move {name} to failed/ ({error}); left where it is and not taken again until it "
                     "changes; reason: {reason}", name=shown(name), error=e, reason=reason)
            if entry is not None:
                entry.stats.state, entry.stats.reason = "failed", reason
            return
        if entry is None:
            entry = self._registry.add(BatchStats(str(uuid.uuid4()), name))
        entry.stats.state, entry.stats.reason, entry.source = "failed", reason, base
        where = "" if directory == self.incoming else " from processing/"
        log.warn("{name} moved to failed/{where}: {reason}", name=shown(name), where=where, reason=reason)
