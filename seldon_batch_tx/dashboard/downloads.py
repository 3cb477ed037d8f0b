"""A finished batch's output and summary, for download from the dashboard.

``/download/output/{id}`` and ``/download/summary/{id}`` serve only what the registry recorded
for that batch (:meth:`.BatchEntry.downloads`: its output file, the daemon's summary file or the
run's summary) and only once it is finished; nothing in the request names a path. A file is
opened without following a symbolic link, checked to be a regular file, and streamed by a
producer (an output may be gigabytes); its name is sent as a safe ``Content-Disposition``. The
token rule and the Host rule of :class:`.site.DashboardRoot` apply as on every other route.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import quote

from twisted.protocols.basic import FileSender
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from ..outputs.lines import open_regular
from .channel import IDLE_TIMEOUT
from .security import display_text
from .views import Views

KINDS = {b"output": b"application/x-ndjson; charset=utf-8", b"summary": b"application/json; charset=utf-8"}
#: Longest file name offered to the browser.
MAX_NAME = 120


def disposition(name: str) -> bytes:
    """``attachment`` with an ASCII fallback name (no quotes, slashes or controls) and the UTF-8 name."""
    shown = display_text(os.path.basename(name), limit=MAX_NAME)
    fallback = re.sub(r"[^A-Za-z0-9._-]", "_", shown).lstrip(".") or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(shown, safe='')}".encode("ascii")


def stream(request: Request, handle: Any) -> None:
    """Send ``handle`` as the body through a producer (a chunk at a time, as the client reads), then
    finish; a client that goes away stops it. The file is closed either way.

    Twisted stops a connection's idle timeout while a request is answered, so a client that stops
    reading would hold its connection and the open file for ever: one that has read nothing for
    the idle timeout (:data:`.channel.IDLE_TIMEOUT`) is cut."""
    sender = FileSender()
    gone: list[bool] = []
    channel = request.channel
    period = getattr(getattr(channel, "site", None), "timeOut", None) or IDLE_TIMEOUT  # the channel's is off now
    read, still = -1, 0
    watch: Any = None

    def stalled() -> None:  # every third of the idle timeout: cut after a whole one without progress
        nonlocal read, still, watch
        if gone or handle.closed:
            return
        still = still + 1 if handle.tell() == read else 0
        if still >= 3:  # nothing read from the file: the client took nothing for the idle timeout
            transport = channel.transport if channel is not None else None
            if transport is not None:
                getattr(transport, "abortConnection", transport.loseConnection)()
            return
        read = handle.tell()
        watch = channel.callLater(period / 3, stalled)

    watch = channel.callLater(period / 3, stalled) if channel is not None else None

    def stop(_: Any) -> None:
        gone.append(True)
        sender.stopProducing()

    def ended(_: Any) -> None:
        if watch is not None and watch.active():
            watch.cancel()
        handle.close()
        if not gone:
            request.finish()

    request.notifyFinish().addErrback(stop)
    sender.beginFileTransfer(handle, request).addBoth(ended)


class Download(Resource):
    """One kind of download for one batch (the batch named by the rest of the URL)."""

    isLeaf = True

    def __init__(self, views: Views, kind: bytes, batch_id: str) -> None:
        super().__init__()
        self.views, self.kind, self.batch_id = views, kind, batch_id

    def render_GET(self, request: Request) -> bytes | int:
        entry = self.views.registry.find(self.batch_id)
        if entry is None:
            return self.views.json(request, {"error": f"no such batch: {self.batch_id}"}, 404)
        if entry.stats.state not in ("done", "failed", "stopped"):
            return self.views.json(request, {"error": f"batch {self.batch_id} is {entry.stats.state}: "
                                                      "its files can be downloaded once it is finished"}, 409)
        kind = self.kind.decode()
        found = entry.downloads().get(kind)
        if isinstance(found, dict):  # the run's summary, kept in memory
            request.setHeader(b"content-disposition", disposition(f"{entry.stats.name}.summary.json"))
            return self.views.json(request, found)
        try:
            handle = open_regular(found) if found else None
        except OSError:
            handle = None
        if handle is None or found is None:
            return self.views.json(request, {"error": f"batch {self.batch_id} has no {kind} file here"}, 404)
        request.setHeader(b"content-type", KINDS[self.kind])
        request.setHeader(b"content-disposition", disposition(found))
        request.setHeader(b"content-length", str(os.fstat(handle.fileno()).st_size).encode("ascii"))
        stream(request, handle)
        return NOT_DONE_YET
