"""One keep-alive HTTP/1.1 connection of the fast client, parsed by httptools (llhttp).

A :class:`Connection` carries at most one :class:`Call` at a time: it writes the request bytes
(built once per call from :func:`request_head`), frames the answer (Content-Length, chunked,
read-until-close, interim 1xx answers skipped), bounds it (headers by ``MAX_HEADER_BYTES``,
body by ``config.max_response_bytes``: refused as soon as a limit is passed, the connection
aborted), and hands the whole answer to :func:`.http.classify`. Any exception met while handling
an answer fails that call (``internal_error``) and drops its connection. A reused connection
lost before any byte of its answer sends its call again once on a fresh one (the pool,
:mod:`.fast`, decides where).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import Protocol as Interface
from urllib.parse import urlsplit

import txaio
from httptools import HttpParserError, HttpResponseParser
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed

from ..core.failures import RequestFailed, internal_failure, too_large
from ..core.strict_json import JSONDict
from .base import MAX_HEADER_BYTES, headers_too_large
from .http import classify, connection_failure
from .lifetime import Lifetime
from .twisted_internals import plain_socket, write_now

txaio.use_twisted()
log = txaio.make_logger()  # type: ignore[attr-defined]


class Pool(Interface):
    """What a connection asks of the pool that owns it (:class:`.fast.FastHttpTransport`): the
    pool stands above its connections, so it is named here by what it does, not imported."""

    max_response_bytes: int
    lifetime: Lifetime
    #: How a 2xx answer is read (the target's choice; None: strict JSON).
    decode: Callable[[bytes], tuple[Any, bytes]] | None

    def dispatch(self, call: Call, fresh: bool = False) -> None: ...

    def release(self, conn: Connection, keep_alive: bool) -> None: ...

    def detach(self, conn: Connection) -> None: ...

    def lost(self, conn: Connection) -> None: ...


def request_head(method: str, url: str, token: str | None, extra: tuple[tuple[str, str], ...] = (),
                 content_type: str = "application/json") -> tuple[bytes, str, int, bool]:
    """The request line and static headers up to ``Content-Length:``, host, port and TLS.

    ``extra`` (``--header``) are added as given; a ``Host`` among them replaces the URL's.
    """
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    host = parts.hostname or "localhost"
    port = parts.port or (443 if tls else 80)
    host_header = next((v for k, v in extra if k.lower() == "host"), parts.netloc)
    lines = [f"{method} {parts.path or '/'} HTTP/1.1", f"Host: {host_header}", "User-Agent: seldon-batch-tx",
             f"Content-Type: {content_type}"]
    if token:
        lines.append(f"X-Auth-Token: {token}")
    lines += [f"{k}: {v}" for k, v in extra if k.lower() != "host"]
    if any(c in value for value in (token or "", parts.netloc, parts.path, *(x for kv in extra for x in kv))
           for c in "\r\n\0"):
        raise ValueError("the host, path, token and headers must not contain line breaks")
    head = "\r\n".join(lines) + "\r\nContent-Length: "
    return head.encode("latin-1"), host, port, tls


class Call:
    """One request from ``send`` until its Deferred fires: where it waits and what it sends."""

    __slots__ = ("d", "data", "timer", "conn", "connecting", "retried", "done")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.d: Deferred[JSONDict] = Deferred(self._cancel)
        self.timer: Any = None
        self.conn: Connection | None = None
        self.connecting: Deferred[Any] | None = None
        self.retried = False
        self.done = False

    def _cancel(self, d: Deferred[JSONDict]) -> None:
        """The engine gave up on this request (abandon): drop it wherever it is."""
        self.finish()
        if not self.abort_connection() and self.connecting is not None:
            self.connecting.cancel()

    def abort_connection(self) -> bool:
        """Abort the connection carrying this call, if one is; whether there was one."""
        conn, self.conn = self.conn, None
        if conn is None:
            return False
        conn.call = None
        conn.abort()
        return True

    def finish(self) -> bool:
        """Mark the call as answered; False when it already was (timeout, cancel, loss)."""
        if self.done:
            return False
        self.done = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        return True

    def fail(self, error: RequestFailed) -> None:
        if self.finish():
            self.d.errback(error)

    def succeed(self, result: JSONDict) -> None:
        if self.finish():
            self.d.callback(result)


class _Refused(Exception):  # noqa: N818 - a signal out of httptools' callbacks, not an error
    """Raised in a parser callback to stop parsing an answer that broke a limit."""


class Connection(Protocol):
    """One keep-alive HTTP/1.1 connection carrying at most one request at a time."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._limit = pool.max_response_bytes
        self._parser = HttpResponseParser(self)
        self.call: Call | None = None
        self.reused = False
        self.attached = True  # counted in the pool; False once it is being closed
        self.lost = False
        self.closed: Deferred[None] | None = None
        self.out: Any = None  # the transport, typed loosely (zope interfaces confuse mypy)
        self._socket: Any = None  # a plain TCP transport's socket, written directly (write_now)
        self.lease = pool.lifetime.lease()  # retired once it runs out (checked by the pool)
        self._reset()

    def _reset(self) -> None:
        self._body: list[bytes] = []
        self._size = 0  # body bytes kept
        self._head = 0  # bytes received while the headers were not complete
        self._length: bytes | None = None  # Content-Length, checked once the headers are complete
        self._error: RequestFailed | None = None  # why a callback refused the answer
        self._retry_after: bytes | None = None
        self._framed = False
        self._headers_done = False
        self._complete = False
        self._keep_alive = False
        self._got = False

    # -- requests ---------------------------------------------------------------------------

    def start(self, call: Call) -> None:
        self.call = call
        call.conn = self
        self.lease.take()
        write_now(self.out, self._socket, call.data)  # at once: no write event, no epoll_ctl pair

    def abort(self) -> None:
        """Close now, dropping anything unsent; used on timeouts, cancels and stop."""
        self._pool.detach(self)
        if not self.lost:
            self.out.abortConnection()

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:  # a second answer in the same read: keep the first, drop the connection
            self._keep_alive = False
            raise _Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        n = len(name)
        if n == 11 or n == 14 or n == 17:
            lowered = name.lower()
            if lowered == b"retry-after":
                self._retry_after = value
            elif lowered == b"content-length":
                self._framed = True
                self._length = value
            elif lowered == b"transfer-encoding":
                self._framed = True

    def on_headers_complete(self) -> None:
        self._headers_done = True
        if self._length is not None and self._length.strip().isdigit() and int(self._length) > self._limit:
            self._error = too_large(self._limit)  # refused before any byte of the body
            raise _Refused

    def on_body(self, body: bytes) -> None:
        size = self._size + len(body)
        if size > self._limit:
            self._error = too_large(self._limit)
            raise _Refused
        self._size = size
        self._body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self._parser.get_status_code() < 200 and self._parser.get_status_code() != 101:
            # an interim answer (100 Continue, 103 Early Hints): the real one follows; the header
            # bound keeps counting across them
            self._headers_done = self._framed = False
            self._length = self._retry_after = None
            self._body, self._size = [], 0
            return
        # llhttp forgets keep-alive once the message is done, so ask now
        self._keep_alive = self._parser.should_keep_alive()
        self._complete = True

    # -- Protocol ---------------------------------------------------------------------------

    def connectionMade(self) -> None:
        self.out = self.transport
        self._socket = plain_socket(self.transport)

    def dataReceived(self, data: bytes) -> None:
        call = self.call
        if call is None:  # bytes on an idle connection (a 408 before closing, say): never reuse it
            self.abort()
            return
        self._got = True
        try:
            self._parser.feed_data(data)
            if not self._headers_done:
                self._head += len(data)
                if self._head > MAX_HEADER_BYTES:
                    raise headers_too_large()
        except Exception as e:  # noqa: BLE001 - whatever went wrong, this call ends here
            if self._complete and self._error is None:  # bytes past a whole answer: answer, then close
                self._respond(False)
                return
            self._drop(call, self._failure_for(e))
            return
        if self._complete:
            self._respond(self._keep_alive)

    def _failure_for(self, error: Exception) -> RequestFailed:
        """What an exception out of the parser means for the call."""
        if self._error is not None:
            return self._error
        if isinstance(error, RequestFailed):
            return error
        if isinstance(error, HttpParserError):
            return RequestFailed("bad_response", f"malformed HTTP response: {error}", retryable=True,
                                 info="bad_response")
        log.failure("unexpected error reading an HTTP answer", failure=Failure(error))
        return internal_failure(error)

    def _drop(self, call: Call, error: RequestFailed) -> None:
        """Fail ``call`` and abort its connection, whose state is no longer known."""
        self.call = None
        call.conn = None
        try:
            self.abort()
        except Exception:  # noqa: BLE001 - the call must still be answered
            log.failure("cannot abort an HTTP connection")
        call.fail(error)

    def _respond(self, keep_alive: bool) -> None:
        """A whole response arrived: free the connection first, then answer the caller."""
        call = self.call
        assert call is not None
        try:
            body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
            retry_after = self._retry_after
            code = self._parser.get_status_code()
        except Exception as e:  # noqa: BLE001
            self._drop(call, internal_failure(e))
            return
        self.call = None
        call.conn = None
        self._reset()
        self.reused = True
        try:
            self._pool.release(self, keep_alive)
        except Exception:  # noqa: BLE001 - a pool bug must not leave the caller unanswered
            log.failure("cannot release an HTTP connection")
        if call.done:
            return
        try:
            result = classify(code, body, retry_after, self._pool.decode)
        except RequestFailed as e:
            call.fail(e)
            return
        except Exception as e:  # noqa: BLE001 - classification bugs end as this call's error line
            call.fail(internal_failure(e))
            return
        call.succeed(result)

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        self.lost = True
        try:
            self._pool.lost(self)
        finally:
            if self.closed is not None:
                self.closed.callback(None)
        call = self.call
        if call is None:
            return
        try:
            if self._headers_done and not self._framed and not self._complete:
                self._respond(False)  # a body delimited by the end of the connection
                return
            self.call = None
            call.conn = None
            if not self._got and self.reused and not call.retried and not call.done:
                call.retried = True
                log.debug("reused connection closed before a response; sending again on a fresh one")
                self._pool.dispatch(call, fresh=True)
                return
            call.fail(connection_failure(ResponseFailed([reason])))
        except Exception as e:  # noqa: BLE001
            self.call = None
            call.fail(internal_failure(e))


class ConnectionFactory(Factory):
    noisy = False  # one "Starting factory" log line per connection is noise at info level

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def buildProtocol(self, addr: Any) -> Connection:
        return Connection(self._pool)
