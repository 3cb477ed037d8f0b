"""The one place this package uses private Twisted APIs: the treq client's connection pool.

Twisted's public HTTP client has no hook for two bounds every answer must keep:

* the bytes of an answer's status line and headers (Twisted limits one header line, not their
  number, so a server whose headers never end would fill memory until the timeout): the pool's
  protocol factory (``HTTPConnectionPool._factory``, a ``_HTTP11ClientFactory``) is replaced by
  one building :class:`BoundedClientProtocol`, which counts bytes while the parser
  (``_parser.state``) is in ``STATUS``/``HEADER`` and ends the answer through ``_giveUp``;
* aborting the connection under an answer being refused mid-body (too large, timed out): the
  response's ``_transport`` proxy and the connection behind it (``_producer``);
* retiring a connection (:mod:`.lifetime`): the protocol is handed the pool's quiescent callback
  (``_HTTP11ClientFactory._quiescentCallback``); a retired connection is closed instead of being
  given back, and a request on a connection that aged while idle in the pool is its last one
  (``Request.persistent`` False: it says ``Connection: close`` and the connection closes after
  the answer), so retiring never fails a request.

And one for the fast client (:mod:`.fast_connection`): a request is written straight to a plain
TCP transport's ``socket`` when its buffers (``dataBuffer``, ``_tempDataBuffer``) are empty, rather
than through ``write``, which waits for the next reactor turn and costs a write event and two
``epoll_ctl`` calls per request (:func:`plain_socket`, :func:`write_now`).

``tests/test_twisted_internals.py`` checks each of these names, so a Twisted release that changes
one fails that test by name rather than weakening a bound silently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.python.failure import Failure
from twisted.web._newclient import HEADER, STATUS, HTTP11ClientProtocol
from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory

from .base import MAX_HEADER_BYTES
from .http import HeadersTooLarge
from .lifetime import Lifetime


class BoundedClientProtocol(HTTP11ClientProtocol):
    """Twisted's HTTP/1.1 client, with a bound on the bytes of each answer's status line and headers."""

    _head = 0

    def __init__(self, quiescentCallback: Callable[[Any], None], lifetime: Lifetime | None = None) -> None:  # noqa: N803
        self._lifetime = lifetime
        self._lease = None if lifetime is None else lifetime.lease()
        self._give_back = quiescentCallback
        super().__init__(quiescentCallback if lifetime is None else self._quiescent)

    def request(self, request: Any) -> Any:
        self._head = 0
        if self._lease is not None and self._lifetime is not None:
            if self._lifetime.expired(self._lease):
                request.persistent = False  # aged while idle in the pool: its last request
            self._lease.take()
        return super().request(request)

    def _quiescent(self, protocol: Any) -> None:
        """An answer is complete: back to the pool, or closed if the connection has retired."""
        if self._lease is not None and self._lifetime is not None and self._lifetime.expired(self._lease):
            transport: Any = self.transport
            transport.loseConnection()
        else:
            self._give_back(protocol)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        parser = self._parser
        if parser is not None and parser.state in (STATUS, HEADER):
            self._head += len(data)
            if self._head > MAX_HEADER_BYTES:
                self._giveUp(Failure(HeadersTooLarge(f"more than {MAX_HEADER_BYTES} bytes of headers")))
                return
        super().dataReceived(data)


class _QuietFactory(_HTTP11ClientFactory):
    noisy = False  # one "Starting factory" log line per connection is noise at info level
    lifetime: Lifetime | None = None

    def buildProtocol(self, addr: Any) -> HTTP11ClientProtocol:  # noqa: N802 - Twisted's name
        return BoundedClientProtocol(self._quiescentCallback, self.lifetime)


def bounded_pool(reactor: Any, per_host: int, lifetime: Lifetime | None = None) -> HTTPConnectionPool:
    """A persistent pool of at most ``per_host`` idle connections whose answers' headers are bounded
    and whose connections retire by ``lifetime``."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = per_host
    pool.retryAutomatically = False
    if lifetime is None:
        pool._factory = _QuietFactory
    else:
        class _RetiringFactory(_QuietFactory):
            pass

        _RetiringFactory.lifetime = lifetime
        pool._factory = _RetiringFactory
    return pool


def abort_transport(transport: Any) -> None:
    """Abort the connection under a response body's transport proxy (never reused: it is mid-answer)."""
    if transport is None:
        return
    connection = getattr(transport, "_producer", None)
    if connection is not None and hasattr(connection, "abortConnection"):
        connection.abortConnection()
    else:
        transport.stopProducing()


def abort_response(response: Any) -> None:
    """Abort the connection carrying ``response`` (treq's wrapper or Twisted's) before reading its body."""
    original = getattr(response, "original", response)
    abort_transport(getattr(original, "_transport", None))


def plain_socket(transport: Any) -> Any:
    """The socket of a plain TCP transport; None over TLS (whose transport is TLS's protocol, or
    ``TLS`` set on the connection) or anything else, which is only ever written through ``write``."""
    if isinstance(transport, tcp.Connection) and not getattr(transport, "TLS", False):
        return transport.socket
    return None


def write_now(transport: Any, sock: Any, data: bytes) -> None:
    """``transport.write(data)``, but sent at once on ``sock`` (:func:`plain_socket`) when nothing is
    queued before it; what the socket does not take now, or any error, goes through ``write``,
    which sends the rest in order and reports the error as it always does."""
    if (sock is not None and transport.connected and not transport.disconnecting and not transport.dataBuffer
            and not transport._tempDataBuffer):
        try:
            sent = sock.send(data)
        except OSError:  # full, reset...: Twisted's own write finds out and reports it
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)
