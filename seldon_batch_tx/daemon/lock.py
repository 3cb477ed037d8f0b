"""One daemon per watch directory: an exclusive ``flock`` on the directory itself.

Two daemons on one directory would not process a file twice (each file is claimed under its own
lock), but they would race for the same files, with two dashboards, two logs and two settings
for one directory: a second one is a mistake to refuse at once, in one line. The lock is on the
directory, not on a pid file, so it does not depend on where each daemon was started or on
``--pidfile``; the kernel frees it the moment its holder dies, and it survives twistd's fork
into the background (a ``flock`` belongs to the open file, which the child inherits).
"""

from __future__ import annotations

import fcntl
import os

#: The open directories whose locks this process holds, for its whole life.
_HELD: list[int] = []


class WatchDirTaken(Exception):
    """Another live process holds the watch directory's lock."""


def lock_watch_dir(path: str) -> None:
    """Create ``path`` if missing and hold an exclusive lock on it until the process ends;
    :class:`WatchDirTaken` when another daemon holds it, ``OSError`` when it cannot be opened."""
    os.makedirs(path, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WatchDirTaken("another daemon is watching this directory (stop it first, or give each its own "
                            "directory)") from None
    except OSError:
        os.close(fd)
        raise
    _HELD.append(fd)
