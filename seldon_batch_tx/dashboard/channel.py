"""The dashboard's connections: how many, how long a client may take, which requests are refused early.

The dashboard shares the process (and its descriptor limit) with the batch, so a client must never
be able to hold what the batch needs: at most :data:`MAX_CONNECTIONS` connections are open at once
(later ones are closed as soon as they are accepted, so their descriptors are freed at once); a
request's headers must be complete within :data:`HEADER_TIMEOUT` seconds of the connection (or of
the previous answer), so a slow-header client (slowloris) is cut; an idle keep-alive connection is
closed after :data:`IDLE_TIMEOUT` seconds. Requests are refused as soon as their headers are in, before
anything else is read: with a body (no route takes one: 413, nothing of it is read) or with more than
one ``Host`` header (400, RFC 9112 section 3.2). The token check (:mod:`.site`) then runs at once: the
request has nothing more to wait for.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.web.http import HTTPChannel
from twisted.web.server import Site

#: Connections the dashboard keeps open at once (a browser uses up to 6; Prometheus 1).
MAX_CONNECTIONS = 64
#: Seconds a client has to send a request's headers.
HEADER_TIMEOUT = 10.0
#: Seconds a keep-alive connection may sit idle.
IDLE_TIMEOUT = 30
#: Bytes a request's headers may take in all (Twisted's default is 16 KiB).
MAX_HEADER_BYTES = 16 * 1024
#: Header lines a request may have.
MAX_HEADERS = 100


def _refusal(status: bytes) -> bytes:
    return b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class DashboardChannel(HTTPChannel):
    """An HTTP/1.1 connection with a header deadline and early refusals (see the module text)."""

    totalHeadersSize = MAX_HEADER_BYTES
    maxHeaders = MAX_HEADERS
    site: DashboardSite

    def __init__(self) -> None:
        super().__init__()
        self._header_deadline: IDelayedCall | None = None
        self._refused = False

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        self.site.open_connections += 1
        super().connectionMade()
        self._start_header_deadline()

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802 - Twisted's name
        self.site.open_connections -= 1
        self._stop_header_deadline()
        super().connectionLost(reason)

    def _start_header_deadline(self) -> None:
        self._stop_header_deadline()
        self._header_deadline = self.callLater(self.site.header_timeout, self._headers_too_slow)

    def _stop_header_deadline(self) -> None:
        if self._header_deadline is not None and self._header_deadline.active():
            self._header_deadline.cancel()
        self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.transport is not None:  # abort: a slow client gets no say in when its socket goes
            getattr(self.transport, "abortConnection", self.transport.loseConnection)()

    def _refuse(self, status: bytes) -> None:
        self._refused = True
        if self.transport is not None:
            self.transport.write(_refusal(status))
            self.transport.loseConnection()

    def allHeadersReceived(self) -> None:  # noqa: N802 - Twisted's name
        self._stop_header_deadline()
        headers = self.requests[-1].requestHeaders
        if len(headers.getRawHeaders(b"host") or ()) > 1:
            self._refuse(b"400 Bad Request")
            return
        length = headers.getRawHeaders(b"content-length") or [b"0"]
        if headers.hasHeader(b"transfer-encoding") or any(v.strip() not in (b"", b"0") for v in length):
            self._refuse(b"413 Content Too Large")
            return
        super().allHeadersReceived()

    def allContentReceived(self) -> None:  # noqa: N802 - Twisted's name
        if not self._refused:
            super().allContentReceived()

    def requestDone(self, request: Any) -> None:  # noqa: N802 - Twisted's name
        if self.persistent:  # before: a pipelined request parsed by requestDone stops it again
            self._start_header_deadline()  # the next request's headers have the same time
        super().requestDone(request)


class DashboardSite(Site):
    """A site of :class:`DashboardChannel` connections, at most ``max_connections`` at once, and no
    access log line per request (the page polls every second)."""

    protocol = DashboardChannel  # type: ignore[assignment]

    def __init__(self, resource: Any, *, max_connections: int = MAX_CONNECTIONS,
                 header_timeout: float = HEADER_TIMEOUT, idle_timeout: float = IDLE_TIMEOUT) -> None:
        super().__init__(resource, timeout=idle_timeout)
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.open_connections = 0

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802 - Twisted's name
        """None past the cap: the reactor closes that connection at once, freeing its descriptor."""
        if self.open_connections >= self.max_connections:
            return None
        return super().buildProtocol(addr)

    def log(self, request: Any) -> None:
        pass
