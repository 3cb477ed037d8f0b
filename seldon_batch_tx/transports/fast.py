"""A lean REST transport: keep-alive HTTP/1.1 on Twisted's protocol layer, parsed by httptools.

treq over Twisted's HTTP/1.1 client spends most of a request's CPU on URL handling, header
objects, producers and Deferred chains; with a fast server it tops out near 3,000 requests/s.
This transport does only what one Seldon endpoint needs: the request line and static headers
are built once, each request adds its Content-Length, ``seldon-puid`` and body, and responses
are framed by llhttp (through ``httptools``: Content-Length, chunked, read-until-close).

Behaviour shared with :class:`~seldon_batch_tx.transports.treq_client.RestTransport` lives in
:mod:`.http`: the URL (``model_url`` of the codec's target), TLS policy (``tls_policy``), body
encoding, status classification (``classify``, with ``Retry-After``) and error kinds. This module
is the pool; one connection's protocol is :mod:`.fast_connection`. At most ``config.workers``
connections are open; idle ones are reused last-in first-out so a few hot connections serve a
light load. A connection past its lifetime (:mod:`.lifetime`: ``--connection-max-age``,
``--connection-max-requests``) is closed when its answer is complete or when it leaves the idle
stack, never under a request: a new one (its host name resolved again) takes its place.

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

import txaio
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, DeferredList, TimeoutError, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.python.failure import Failure

from ..config import BatchConfig
from ..core.failures import RequestFailed, internal_failure
from ..core.strict_json import JSONDict
from ..core.target import Target
from .fast_connection import Call, Connection, ConnectionFactory, request_head
from .http import connection_failure, encode_request, model_url, tls_policy
from .lifetime import Lifetime

txaio.use_twisted()
log = txaio.make_logger()  # type: ignore[attr-defined]

#: Seconds ``stop()`` waits for polite closes before aborting what is left.
_CLOSE_GRACE = 2.0


class FastHttpTransport:
    """POSTs JSON bodies to one Seldon endpoint over at most ``workers`` keep-alive connections."""

    def __init__(self, config: BatchConfig, reactor: Any, endpoint: Any = None, *,
                 target: Target) -> None:
        self._config = config
        self._reactor = reactor
        self._target = target
        self.url = model_url(config, target)
        #: How a 2xx answer is read (the target's choice; None: strict JSON), for the connections.
        self.decode = target.decode
        self._head, self._host, self._port, self._tls = request_head("POST", self.url,
                                                                     config.call_credentials_token,
                                                                     config.headers, self._target.content_type)
        self._endpoint = endpoint
        self._factory = ConnectionFactory(self)
        self._timeout = config.timeout
        self.max_response_bytes = config.max_response_bytes
        self._max = max(config.workers, 1)
        self._open = 0  # connections connecting, busy or idle (not those being closed)
        self._idle: list[Connection] = []
        self._waiting: deque[Call] = deque()
        self._connections: set[Connection] = set()
        self._connecting: set[Deferred[Any]] = set()
        self._stopping = False
        #: When a connection retires (:mod:`.lifetime`): checked as it comes back and as it leaves the idle stack.
        self.lifetime = Lifetime.from_config(config, reactor.seconds)
        #: Connections opened over the transport's life (tests and benchmarks read it).
        self.connections_made = 0

    def _make_endpoint(self) -> Any:
        """A name is resolved again for each connection (new replicas behind it get work); an IP
        address has nothing to resolve, and a plain TCP endpoint connects it without
        ``HostnameEndpoint``'s resolver thread and happy-eyeballs attempts (IPv4: a third of the CPU
        per connection; Twisted's IPv6 endpoint still calls getaddrinfo in a thread), so retiring
        connections every few seconds costs little."""
        endpoint: Any
        if isIPAddress(self._host):
            endpoint = TCP4ClientEndpoint(self._reactor, self._host, self._port)
        elif isIPv6Address(self._host):
            endpoint = TCP6ClientEndpoint(self._reactor, self._host, self._port)
        else:
            endpoint = HostnameEndpoint(self._reactor, self._host, self._port)
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
            payload, extra = encode_request(body, self._target)
        except RequestFailed as e:
            return fail(e)
        more = b"".join(b"%b: %b\r\n" % (k.encode(), v.encode()) for k, v in extra) if extra else b""
        call = Call(b"%b%d\r\n%bseldon-puid: %b\r\n\r\n%b" % (self._head, len(payload), more, puid.encode(),
                                                                 payload))
        call.timer = self._reactor.callLater(self._timeout, self._timed_out, call)
        try:
            self.dispatch(call)
        except Exception as e:  # noqa: BLE001 - a pool bug must still answer this call
            log.failure("cannot dispatch an HTTP request")
            if not call.abort_connection() and call.connecting is not None:
                call.connecting.cancel()
            call.fail(internal_failure(e))
        return call.d

    def dispatch(self, call: Call, fresh: bool = False) -> None:
        """Give ``call`` an idle connection, a new one, or a place in the queue."""
        if self._stopping:
            call.fail(RequestFailed("connection", "the transport was stopped", info="connection"))
        elif not fresh and (conn := self._idle_connection()) is not None:
            conn.start(call)
        elif self._open < self._max:
            self._connect(call)
        elif fresh and self._idle:
            self.detach(conn := self._idle.pop())
            conn.out.loseConnection()
            self._connect(call)
        else:
            self._waiting.append(call)

    def _connect(self, call: Call) -> None:
        assert self._endpoint is not None, "start() first"
        self._open += 1
        self.connections_made += 1
        d = self._endpoint.connect(self._factory)
        call.connecting = d
        self._connecting.add(d)
        d.addCallbacks(self._connected, self._connect_failed, callbackArgs=(call, d), errbackArgs=(call, d))

    def _connected(self, conn: Connection, call: Call, d: Deferred[Any]) -> None:
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

    def _connect_failed(self, failure: Failure, call: Call, d: Deferred[Any]) -> None:
        self._connecting.discard(d)
        call.connecting = None
        self._open -= 1
        if not call.done:
            error = failure.value
            call.fail(connection_failure(error if isinstance(error, Exception) else Exception(str(error))))
        self._serve_waiting()

    def _timed_out(self, call: Call) -> None:
        call.timer = None
        try:
            if call.abort_connection():
                pass  # the connection's loss is not reported: the timeout below is
            elif (connecting := call.connecting) is not None:  # not even connected: unreachable (an outage)
                call.fail(RequestFailed("connection", f"cannot connect to {self._host}:{self._port}: no connection "
                                        f"within --timeout {self._timeout:g} s", retryable=True, info="connection"))
                connecting.cancel()
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(call)
        except Exception:  # noqa: BLE001 - the timeout is reported whatever failed while dropping
            log.failure("cannot drop a timed-out HTTP request")
        call.fail(connection_failure(TimeoutError()))

    # -- the pool ---------------------------------------------------------------------------

    def release(self, conn: Connection, keep_alive: bool) -> None:
        """A connection finished a response: next waiter, the idle stack, or closed."""
        if not keep_alive or self._stopping or conn.lost or self.lifetime.expired(conn.lease):
            self.detach(conn)
            if not conn.lost:
                conn.out.loseConnection()
            return
        if self._waiting:
            conn.start(self._waiting.popleft())
        else:
            self._idle.append(conn)

    def _idle_connection(self) -> Connection | None:
        """The most recently used idle connection still within its lifetime; the retired ones are closed."""
        while self._idle:
            conn = self._idle.pop()
            if not self.lifetime.expired(conn.lease):
                return conn
            self.detach(conn)
            conn.out.loseConnection()
        return None

    def detach(self, conn: Connection) -> None:
        """Stop counting ``conn`` against the limit; it is closing and will never be reused."""
        if not conn.attached:
            return
        conn.attached = False
        self._open -= 1
        if conn in self._idle:
            self._idle.remove(conn)
        self._serve_waiting()

    def lost(self, conn: Connection) -> None:
        self.detach(conn)
        self._connections.discard(conn)

    def _serve_waiting(self) -> None:
        while self._waiting and self._open < self._max and not self._stopping:
            self._connect(self._waiting.popleft())

    @property
    def open_connections(self) -> int:
        return self._open
