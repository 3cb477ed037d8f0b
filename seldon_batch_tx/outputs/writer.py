"""Output lines to the output file: one writer per output, whole lines only, flushed on a schedule.

An output is opened by :class:`OutputFile`: never through a symbolic link, only if it is a regular
file (or a character device such as ``/dev/null``), and locked with ``flock(LOCK_EX | LOCK_NB)``
for the run's whole life, before anything reads, repairs or truncates it. A second run on the
same output gets :class:`OutputLocked` and changes nothing. The lock belongs to the open file
description, so other opens and closes of the file (by resume's reads) never drop it; on Linux
NFS ``flock`` is emulated with whole-file POSIX locks, which the server arbitrates across hosts.

Lines are collected in memory and written with ``write`` calls of complete lines, so a crash
leaves at most one torn last line and everything before it valid. ``flush()`` runs every
``flush_interval`` seconds (driven by the caller's clock) and on close; ``fsync_interval``
additionally asks the OS to put the bytes on disk.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Callable
from typing import Any, BinaryIO

import txaio

from ..core.strict_json import compact_bytes
from ..redaction import Secrets

txaio.use_twisted()
log = txaio.make_logger()  # type: ignore[attr-defined]

#: Attempts to lock the file the path names while another run replaces it (``--retry-failed``).
_LOCK_ATTEMPTS = 5


class OutputRefused(Exception):
    """The output cannot be written by this run; nothing in it was changed. The message says why."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"output {path}: {why}")
        self.path = path


class OutputLocked(OutputRefused):
    """Another run holds the output's lock: two writers would duplicate and interleave lines."""

    def __init__(self, path: str, holder: str) -> None:
        super().__init__(path, f"locked by {holder}, which is writing it; wait for it to finish or choose "
                               "another output path")
        self.holder = holder


def lock_holder(st: os.stat_result) -> str:
    """Who holds a lock on the file ``st`` describes, from ``/proc/locks``; a phrase for a message.

    A holder on another NFS client, in another PID namespace, or on a system without
    ``/proc/locks`` cannot be named: then it is "another process".
    """
    wanted = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    try:
        with open("/proc/locks", "rb") as f:
            table = f.read(1 << 20)
    except OSError:
        return "another process"
    for row in table.splitlines():
        fields = row.split()
        if b"->" in fields:  # a waiter, not a holder
            continue
        try:
            pid, where = int(fields[4]), fields[5].split(b":")
            found = (int(where[0], 16), int(where[1], 16), int(where[2]))
        except (IndexError, ValueError):
            continue
        if found == wanted and pid > 0:
            return _describe(pid)
    return "another process (on this or another host)"


def _describe(pid: int) -> str:
    """The holder's pid and program, never its arguments: they may hold another run's credentials."""
    if pid == os.getpid():
        return f"this process (pid {pid}, another batch)"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read(4096).decode("utf-8", "replace").split("\0")
    except OSError:
        return f"process {pid}"
    program = os.path.basename(argv[0])[:80]
    if program.startswith("python") and len(argv) > 1:  # the script or module it runs, not its options
        program += " " + (f"-m {argv[2][:80]}" if argv[1] == "-m" and len(argv) > 2
                          else argv[1] if argv[1].startswith("-") else os.path.basename(argv[1])[:80])
    return f"process {pid} ({program})" if program else f"process {pid}"


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class OutputFile:
    """An output file opened without following links and exclusively locked until :meth:`close`.

    ``mode`` is the permission of a file this creates (less the umask). ``fd`` is write-only and
    appends; :meth:`open_reader` reads the same file through a new descriptor.
    """

    def __init__(self, path: str, *, mode: int = 0o666) -> None:
        self.path = path
        self.locked = False
        for _ in range(_LOCK_ATTEMPTS):
            fd = self._open(path, mode)
            try:
                if self._lock(fd):
                    self.fd = fd
                    return
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # the path now names another file (a --retry-failed rename): lock that one
        raise OutputRefused(path, f"replaced by another process {_LOCK_ATTEMPTS} times while being opened")

    def _open(self, path: str, mode: int) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(path, flags, mode)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise OutputRefused(path, "is a symbolic link; refusing to write through it "
                                          "(give the link's target as the output instead)") from None
            if e.errno == errno.ENXIO:  # a FIFO without a reader
                raise OutputRefused(path, "is not a regular file (a FIFO)") from None
            if e.errno == errno.EISDIR:
                raise OutputRefused(path, "is not a regular file (a directory)") from None
            raise
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                if st.st_nlink > 1:
                    raise OutputRefused(path, f"has {st.st_nlink} hard links; writing it would change the "
                                              "other names' file too")
            elif not stat.S_ISCHR(st.st_mode):
                raise OutputRefused(path, "is not a regular file")
            # Opened non-blocking so that a FIFO could not hang the open; writes may block.
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _lock(self, fd: int) -> bool:
        """Lock ``fd``; False when the path no longer names that file (then try again)."""
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return True  # /dev/null and friends: many runs may write there at once, nothing to protect
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputLocked(self.path, lock_holder(st)) from None
            if e.errno == errno.ENOLCK:
                raise OutputRefused(self.path, "cannot be locked (ENOLCK: the filesystem or its NFS lock "
                                               "service does not support locks)") from None
            raise
        try:
            now = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if not _same_file(st, now):
            return False
        self.locked = True
        return True

    @property
    def regular(self) -> bool:
        return stat.S_ISREG(os.fstat(self.fd).st_mode)

    def size(self) -> int:
        return os.fstat(self.fd).st_size if self.regular else 0

    def open_reader(self) -> BinaryIO:
        """The locked file, for reading: opened by path and checked to be the very file locked."""
        fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            if not _same_file(os.fstat(fd), os.fstat(self.fd)):
                raise OutputRefused(self.path, "was replaced by another process while locked")
            return open(fd, "rb", closefd=True)  # noqa: SIM115 - the caller closes it
        except BaseException:
            os.close(fd)
            raise

    def truncate(self, size: int) -> None:
        if self.regular:
            os.ftruncate(self.fd, size)

    def replace_with(self, fd: int, temp_path: str) -> None:
        """Rename the already locked ``fd`` at ``temp_path`` over this output; it becomes ``fd``.

        The new file is locked *before* the rename, so there is no moment when the path names
        an unlocked file; the old one is unlocked only after the rename, and a run that locks it
        then sees the path now names another file and retries on that one (see ``__init__``).
        """
        os.replace(temp_path, self.path)
        old, self.fd = self.fd, fd
        os.close(old)

    def fsync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError:
            if self.regular:
                raise  # a device such as /dev/null may refuse fsync; a file must not

    def close(self) -> None:
        """Close the file, which releases the lock."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


_dumps = compact_bytes(ensure_ascii=False)


class LineBuffer:
    """Output lines queued in memory and handed out whole, so a flush never writes half a line.

    The flush policy every output shares (:class:`LineWriter`, and a pipe such as ``-o -``): a
    subclass writes what :meth:`take` returns in its ``flush``, at least when ``max_buffered``
    bytes are queued.
    """

    def __init__(self, max_buffered: int = 1 << 16, encode: Callable[[Any], bytes] = _dumps) -> None:
        self._encode = encode
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._max_buffered = max_buffered
        self.closed = False
        self.lines_written = 0
        #: The run's credentials, replaced in every line (:mod:`..redaction`); empty: no search at all.
        self.secrets = Secrets()

    def write(self, record: dict[str, Any]) -> None:
        """Queue one output line; written out at the next flush (or when the buffer is full).

        A line quoting a credential is written redacted; :class:`.SecretInAnswer` (a ValueError)
        when it cannot be, so the engine writes that line's error instead."""
        data = self._encode(record) + b"\n"
        if self.secrets:
            data = self.secrets.line(data)
        self._buffer.append(data)
        self._buffered += len(data)
        self.lines_written += 1
        if self._buffered >= self._max_buffered:
            self.flush()

    def flush(self, now: float | None = None) -> None:
        raise NotImplementedError

    def take(self) -> bytes:
        """The queued lines, which leave the buffer (b"" when there are none)."""
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        return data

    def put_back(self, data: bytes) -> None:
        """Lines a failed write could not write: first in line at the next flush."""
        self._buffer.insert(0, data)
        self._buffered += len(data)


class LineWriter(LineBuffer):
    """Appends JSON lines to an output it holds locked (:class:`OutputFile`) until :meth:`close`.

    ``append=False`` empties the file once it is locked; a refused open (:class:`OutputRefused`,
    :class:`OutputLocked`) leaves the file exactly as it was. ``not_same_as`` names a file (the
    input) this output must not be, checked before anything is emptied.
    """

    def __init__(self, path: str, *, append: bool = False, fsync_interval: float | None = None,
                 max_buffered: int = 1 << 16, mode: int = 0o666, not_same_as: str | None = None) -> None:
        self.path = path
        self.output = OutputFile(path, mode=mode)
        try:
            if not_same_as is not None:
                with contextlib.suppress(OSError):
                    if _same_file(os.stat(not_same_as), os.fstat(self.output.fd)):
                        raise OutputRefused(path, f"is the input file {not_same_as}")
            if not append:
                self.output.truncate(0)
        except BaseException:
            self.output.close()
            raise
        super().__init__(max_buffered)
        self._fsync_interval = fsync_interval
        self._last_fsync = 0.0

    def flush(self, now: float | None = None) -> None:
        """Write whole buffered lines; fsync when the interval has passed."""
        data = memoryview(self.take())
        try:
            while data:
                data = data[os.write(self.output.fd, data):]
        finally:
            if data:  # a failed write (disk full...): keep the rest for the next flush
                self.put_back(bytes(data))
        if self._fsync_interval is not None and now is not None \
                and now - self._last_fsync >= self._fsync_interval:
            self.output.fsync()
            self._last_fsync = now

    def close(self) -> None:
        """Flush, fsync if asked, and release the output's lock (also after a failed flush)."""
        if self.closed:
            return
        try:
            self.flush()
            if self._fsync_interval is not None:
                self.output.fsync()
        finally:
            self.closed = True
            self.output.close()
