"""Files renamed into ``incoming/`` are complete at once: inotify tells the daemon their names.

Without inotify (another OS, a file system that has none, a limit reached) they wait for two polls.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import txaio

txaio.use_twisted()
log = txaio.make_logger()


def watch_renames(reactor: Any, directory: str, renamed_in: Callable[[str], None]) -> Any | None:
    """Call ``renamed_in(name)`` for each file moved into ``directory``; the notifier (to stop with
    ``loseConnection``), or None when inotify is not available (an optimisation only)."""
    try:
        from twisted.internet import inotify
        from twisted.python.filepath import FilePath

        notifier = inotify.INotify(reactor)
        notifier.startReading()
        notifier.watch(FilePath(directory), mask=inotify.IN_MOVED_TO,
                       callbacks=[lambda _watch, path, _mask: renamed_in(os.fsdecode(path.basename()))])
    except Exception as e:  # noqa: BLE001 - inotify is an optimisation
        log.info("no inotify ({error}); renamed-in files are taken after two polls", error=e)
        return None
    return notifier
