"""A lean REST transport: keep-alive HTTP/1.1 on Twisted's protocol layer, parsed by httptools.

treq over Twisted's HTTP/1.1 client spends most of a request's CPU on URL handling, header
objects, producers and Deferred chains; with a fast server it tops out near 3,000 requests/s.
This transport does only what one Seldon endpoint needs: the request line and static headers
are built once, each request adds its Content-Length, ``seldon-puid`` and body, and responses
are framed by llhttp (through ``httptools``: Content-Length, chunked, read-until-close).

Behaviour shared with :class:`~seldon_batch_tx.transports.treq_client.RestTransport`: the same URL
(``endpoint_url``), TLS policy (``tls_policy``), status classification (``classify``, with
``Retry-After``) and error kinds. At most ``config.workers`` connections are open; idle ones are
reused last-in first-out so a few hot connections serve a light load.

Whatever the server sends, every call ends within ``config.timeout``: its timer is cancelled only
in the same step that fires its Deferred, and any exception met while handling an answer fails
that call (``internal_error``) and drops its connection rather than leaving the call unanswered.
Answers are bounded: headers by ``MAX_HEADER_BYTES``, bodies by ``config.max_response_bytes``
(a larger Content-Length, or body bytes past the limit, fail the call with ``response_too_large``
at once and abort the connection, so at most the limit plus one read is ever buffered).

A reused connection that the server closed while idle (its close racing our write) is lost
before any byte of the response arrives; that request is sent again ONCE on a fresh connection
without spending one of the engine's retries. Every other connection loss is reported as a
retryable ``connection`` failure and the engine's retry policy decides.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import txaio
from httptools import HttpParserError, HttpResponseParser
from twisted.internet.defer import Deferred, DeferredList, TimeoutError, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed

from ..config import BatchConfig
from ..outputs.writer import compact_encoder
from .base import (
    MAX_HEADER_BYTES,
    JSONDict,
    RequestFailed,
    headers_too_large,
    internal_failure,
    too_large,
)
from .treq_client import classify, connection_failure, endpoint_url, tls_policy

txaio.use_twisted()
log = txaio.make_logger()  # type: ignore[attr-defined]

#: One shared C encoder; compact separators keep request bodies small.
_encode = compact_encoder(ensure_ascii=True)
#: Seconds ``stop()`` waits for polite closes before aborting what is left.
_CLOSE_GRACE = 2.0


def request_head(method: str, url: str, token: str | None,
                 extra: tuple[tuple[str, str], ...] = ()) -> tuple[bytes, str, int, bool]:
    """The request line and static headers up to ``Content-Length:``, host, port and TLS.

    ``extra`` (``--header``) are added as given; a ``Host`` among them replaces the URL's.
    """
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    host = parts.hostname or "localhost"
    port = parts.port or (443 if tls else 80)
    host_header = next((v for k, v in extra if k.lower() == "host"), parts.netloc)
    lines = [f"{method} {parts.path or '/'} HTTP/1.1", f"Host: {host_header}", "User-Agent: seldon-batch-tx",
             "Content-Type: application/json"]
    if token:
        lines.append(f"X-Auth-Token: {token}")
    lines += [f"{k}: {v}" for k, v in extra if k.lower() != "host"]
    if any(c in value for value in (token or "", parts.netloc, parts.path, *(x for kv in extra for x in kv))
           for c in "\r\n\0"):
        raise ValueError("the host, path, token and headers must not contain line breaks")
    head = "\r\n".join(lines) + "\r\nContent-Length: "
    return head.encode("latin-1"), host, port, tls


class _Call:
    """One request from ``send`` until its Deferred fires: where it waits and what it sends."""

    __slots__ = ("d", "data", "timer", "conn", "connecting", "retried", "done")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.d: Deferred[JSONDict] = Deferred(self._cancel)
        self.timer: Any = None
        self.conn: _Connection | None = None
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


class _Connection(Protocol):
    """One keep-alive HTTP/1.1 connection carrying at most one request at a time."""

    def __init__(self, pool: FastHttpTransport) -> None:
        self._pool = pool
        self._limit = pool.max_response_bytes
        self._parser = HttpResponseParser(self)
        self.call: _Call | None = None
        self.reused = False
        self.attached = True  # counted in the pool; False once it is being closed
        self.lost = False
        self.closed: Deferred[None] | None = None
        self.out: Any = None  # the transport, typed loosely (zope interfaces confuse mypy)
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

    def start(self, call: _Call) -> None:
        self.call = call
        call.conn = self
        self.out.write(call.data)

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

    def _drop(self, call: _Call, error: RequestFailed) -> None:
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
            result = classify(code, body, retry_after)
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


class _ConnectionFactory(Factory):
    noisy = False  # one "Starting factory" log line per connection is noise at info level

    def __init__(self, pool: FastHttpTransport) -> None:
        self._pool = pool

    def buildProtocol(self, addr: Any) -> _Connection:
        return _Connection(self._pool)


class FastHttpTransport:
    """POSTs JSON bodies to one Seldon endpoint over at most ``workers`` keep-alive connections."""

    def __init__(self, config: BatchConfig, reactor: Any, endpoint: Any = None) -> None:
        self._config = config
        self._reactor = reactor
        self.url = endpoint_url(config, "feedback" if config.method == "feedback" else "predictions")
        self._head, self._host, self._port, self._tls = request_head("POST", self.url,
                                                                     config.call_credentials_token,
                                                                     config.headers)
        self._endpoint = endpoint
        self._factory = _ConnectionFactory(self)
        self._timeout = config.timeout
        self.max_response_bytes = config.max_response_bytes
        self._max = max(config.workers, 1)
        self._open = 0  # connections connecting, busy or idle (not those being closed)
        self._idle: list[_Connection] = []
        self._waiting: deque[_Call] = deque()
        self._connections: set[_Connection] = set()
        self._connecting: set[Deferred[Any]] = set()
        self._stopping = False
        #: Connections opened over the transport's life (tests and benchmarks read it).
        self.connections_made = 0

    def _make_endpoint(self) -> Any:
        endpoint: Any = HostnameEndpoint(self._reactor, self._host, self._port)
        if self._tls:
            host = self._host.encode("ascii") if self._host.isascii() else self._host.encode("idna")
            policy: Any = tls_policy(self._config)
            creator = policy.creatorForNetloc(host, self._port)
            endpoint = wrapClientTLS(creator, endpoint)
        return endpoint

    def start(self) -> None:
        self._stopping = False
        if self._endpoint is None:
            self._endpoint = self._make_endpoint()

    def stop(self) -> Deferred[None]:
        """Close every connection (politely when idle) and fire once all are closed."""
        self._stopping = True
        for d in list(self._connecting):
            d.cancel()
        while self._waiting:
            self._waiting.popleft().fail(RequestFailed("connection", "the transport was stopped",
                                                       retryable=False, info="connection"))
        waits = []
        for conn in list(self._connections):
            if conn.closed is None:
                conn.closed = Deferred()
            waits.append(conn.closed)
            if conn.call is None:
                self.detach(conn)
                conn.out.loseConnection()
            else:
                conn.abort()
        self._idle.clear()
        if not waits:
            return succeed(None)
        timer = self._reactor.callLater(_CLOSE_GRACE, self._abort_all)
        done: Deferred[Any] = DeferredList(waits)

        def closed(_: object) -> None:
            if timer.active():
                timer.cancel()

        return done.addCallback(closed)

    def _abort_all(self) -> None:
        for conn in list(self._connections):
            if not conn.lost:
                conn.out.abortConnection()

    # -- requests ---------------------------------------------------------------------------

    def send(self, body: JSONDict, puid: str) -> Deferred[JSONDict]:
        try:
            payload = _encode(body).encode()
        except RecursionError:
            return fail(RequestFailed("input_error", "request nested too deeply to encode as JSON",
                                      info="input_error"))
        except (TypeError, ValueError) as e:
            return fail(RequestFailed("input_error", f"cannot encode the request as JSON: {e}", info="input_error"))
        call = _Call(b"%b%d\r\nseldon-puid: %b\r\n\r\n%b" % (self._head, len(payload), puid.encode(), payload))
        call.timer = self._reactor.callLater(self._timeout, self._timed_out, call)
        try:
            self.dispatch(call)
        except Exception as e:  # noqa: BLE001 - a pool bug must still answer this call
            log.failure("cannot dispatch an HTTP request")
            if not call.abort_connection() and call.connecting is not None:
                call.connecting.cancel()
            call.fail(internal_failure(e))
        return call.d

    def dispatch(self, call: _Call, fresh: bool = False) -> None:
        """Give ``call`` an idle connection, a new one, or a place in the queue."""
        if self._stopping:
            call.fail(RequestFailed("connection", "the transport was stopped", info="connection"))
        elif self._idle and not fresh:
            self._idle.pop().start(call)
        elif self._open < self._max:
            self._connect(call)
        elif fresh and self._idle:
            self.detach(conn := self._idle.pop())
            conn.out.loseConnection()
            self._connect(call)
        else:
            self._waiting.append(call)

    def _connect(self, call: _Call) -> None:
        assert self._endpoint is not None, "start() first"
        self._open += 1
        self.connections_made += 1
        d = self._endpoint.connect(self._factory)
        call.connecting = d
        self._connecting.add(d)
        d.addCallbacks(self._connected, self._connect_failed, callbackArgs=(call, d), errbackArgs=(call, d))

    def _connected(self, conn: _Connection, call: _Call, d: Deferred[Any]) -> None:
        self._connecting.discard(d)
        call.connecting = None
        if conn.lost:  # closed by the peer before we got to use it
            if not call.done:
                call.fail(RequestFailed("connection", "connection closed as soon as it was made",
                                        retryable=True, info="connection"))
            return
        self._connections.add(conn)
        if call.done:
            self.release(conn, True)
        else:
            conn.start(call)

    def _connect_failed(self, failure: Failure, call: _Call, d: Deferred[Any]) -> None:
        self._connecting.discard(d)
        call.connecting = None
        self._open -= 1
        if not call.done:
            error = failure.value
            call.fail(connection_failure(error if isinstance(error, Exception) else Exception(str(error))))
        self._serve_waiting()

    def _timed_out(self, call: _Call) -> None:
        call.timer = None
        try:
            if call.abort_connection():
                pass  # the connection's loss is not reported: the timeout below is
            elif call.connecting is not None:
                call.connecting.cancel()
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(call)
        except Exception:  # noqa: BLE001 - the timeout is reported whatever failed while dropping
            log.failure("cannot drop a timed-out HTTP request")
        call.fail(connection_failure(TimeoutError()))

    # -- the pool ---------------------------------------------------------------------------

    def release(self, conn: _Connection, keep_alive: bool) -> None:
        """A connection finished a response: next waiter, the idle stack, or closed."""
        if not keep_alive or self._stopping or conn.lost:
            self.detach(conn)
            if not conn.lost:
                conn.out.loseConnection()
            return
        if self._waiting:
            conn.start(self._waiting.popleft())
        else:
            self._idle.append(conn)

    def detach(self, conn: _Connection) -> None:
        """Stop counting ``conn`` against the limit; it is closing and will never be reused."""
        if not conn.attached:
            return
        conn.attached = False
        self._open -= 1
        if conn in self._idle:
            self._idle.remove(conn)
        self._serve_waiting()

    def lost(self, conn: _Connection) -> None:
        self.detach(conn)
        self._connections.discard(conn)

    def _serve_waiting(self) -> None:
        while self._waiting and self._open < self._max and not self._stopping:
            self._connect(self._waiting.popleft())

    @property
    def open_connections(self) -> int:
        return self._open
