"""Safe file handling for a directory anyone may write: open, read, move and write without following links.

Anyone who can write ``incoming/`` is trusted with data, not with the daemon's reach, so:

* Files are never opened through a link and never opened blocking: ``lstat`` first (so a device
  or FIFO is not even opened in the common case), then ``open(O_NOFOLLOW | O_NONBLOCK)`` and
  ``fstat`` of what was opened (so a swap between the two is caught): it must be a regular file,
  on the watch directory's filesystem and with one hard link when asked (:func:`open_regular`).
  A second hard link is refused because the daemon cannot tell where the other name is: it may
  be a file outside the watch directory that the depositor could not read
  (``fs.protected_hardlinks`` is off on some systems, and never binds root).
* Nothing the daemon writes follows a planted link: small files go through ``mkstemp`` in the
  target directory and a rename (:func:`write_atomically`), and moves never replace an existing
  name (:func:`rename_noreplace`, ``renameat2`` ``RENAME_NOREPLACE``).
* Names are handled as bytes wherever they matter; :func:`shown` makes any name printable.

The paths of the watch directory and the names derived from a file's are :mod:`.layout`'s.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import stat
import tempfile
from typing import Any

#: The most of a sidecar or state file read.
SMALL_FILE_MAX = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
try:
    _renameat2: Any = ctypes.CDLL(None, use_errno=True).renameat2
except (OSError, AttributeError):  # not glibc >= 2.28: check-then-rename
    _renameat2 = None


class Rejected(Exception):
    """A file the daemon will not process; the message goes to ``failed/NAME.reason.txt``."""


def shown(name: str) -> str:
    """A name as text whatever its bytes (invalid UTF-8 as ``\\xNN``), for logs and reasons."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def kind(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    for test, what in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return what
    return "not a regular file"


def not_regular(mode: int) -> Rejected:
    """The refusal of anything but a regular file, saying what to do instead."""
    return Rejected(f"it is {kind(mode)}, not a regular file: the daemon reads only regular files and never "
                    f"follows links (copy the data into incoming/ instead)")


def open_regular(path: str, device: int | None = None, *, single_link: bool = True) -> tuple[int, os.stat_result]:
    """Open ``path`` for reading without following a link or blocking; its fd and ``fstat``.

    Rejected unless it is a regular file (on ``device`` when given, with one hard link when
    ``single_link``); FileNotFoundError and other OSErrors pass through.
    """
    before = os.lstat(path)
    if not stat.S_ISREG(before.st_mode):
        raise not_regular(before.st_mode)  # a FIFO or device is not even opened
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENXIO, errno.EMLINK):  # swapped for a link or socket meanwhile
            raise not_regular(stat.S_IFLNK if e.errno != errno.ENXIO else stat.S_IFSOCK) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise not_regular(st.st_mode)
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


def read_small(path: str, limit: int = SMALL_FILE_MAX) -> bytes:
    """The whole of a small regular file (a sidecar, a state file), read without following links."""
    fd, st = open_regular(path, single_link=False)
    try:
        if st.st_size > limit:
            raise Rejected(f"{shown(os.path.basename(path))} is larger than {limit} bytes")
        return os.pread(fd, limit + 1, 0)[:limit]
    finally:
        os.close(fd)


def rename_noreplace(src: str, dst: str) -> None:
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


def absent(e: OSError) -> bool:
    """The name does not exist, or cannot (too long for the filesystem)."""
    return isinstance(e, FileNotFoundError) or e.errno == errno.ENAMETOOLONG


def move(src: str, dst: str) -> bool:
    """Rename if ``src`` exists (never replacing ``dst``); False when it does not."""
    try:
        rename_noreplace(src, dst)
        return True
    except OSError as e:
        if absent(e):
            return False
        raise


def unlink(path: str) -> None:
    """Remove ``path`` if it exists."""
    try:
        os.unlink(path)
    except OSError as e:
        if not absent(e):
            raise


def write_atomically(path: str, text: str, mode: int = 0o600) -> None:
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


def lock(fd: int) -> bool:
    """Take an exclusive ``flock`` without waiting; False when another process holds one."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise


def identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """Device, inode, size and mtime: the same file, unchanged."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns
