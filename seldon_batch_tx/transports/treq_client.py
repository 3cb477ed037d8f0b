"""REST transport: one persistent treq client per run, sized to the workers.

It turns one JSON body into one HTTP POST to the codec's target and classifies what comes back
(:func:`.http.classify`), so the engine only sees a response dict or a :class:`RequestFailed`
that says whether a retry could help.

Answers are bounded like the fast client's: treq's own buffering is off (it would hold any
body whole), the body is collected here up to ``config.max_response_bytes`` (past it, or with a
larger Content-Length, the connection is aborted: ``response_too_large``), the status line and
headers are cut at ``MAX_HEADER_BYTES`` (:mod:`.twisted_internals`), and one deadline of
``config.timeout`` covers the headers and the body. Connections retire by :mod:`.lifetime`
(``--connection-max-age``, ``--connection-max-requests``) through the pool of :mod:`.twisted_internals`.
"""

from __future__ import annotations

from typing import Any

import treq
from twisted.internet.defer import Deferred, TimeoutError, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH

from ..config import BatchConfig
from ..core.failures import RequestFailed, internal_failure, too_large
from ..core.strict_json import JSONDict
from ..core.target import Target
from .http import classify, connection_failure, encode_request, model_url, tls_policy
from .lifetime import Lifetime
from .twisted_internals import abort_response, abort_transport, bounded_pool


class _CappedBody(Protocol):
    """Collects one answer's body, at most ``limit`` bytes: past that, the connection is aborted."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self.done: Deferred[bytes] | None = Deferred(self._cancel)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        if self.done is None:
            return
        self._size += len(data)
        if self._size > self._limit:
            done = self.abandon()
            if done is not None:
                done.errback(too_large(self._limit))
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802 - Twisted's name
        done, self.done = self.done, None
        if done is None:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            done.callback(b"".join(self._parts))
        else:
            done.errback(reason)

    def _cancel(self, _: Deferred[bytes]) -> None:
        self.abandon()  # the caller gave up; Deferred.cancel fails ``done`` with CancelledError

    def abandon(self) -> Deferred[bytes] | None:
        """Stop reading (limit, timeout or cancel): abort the connection, drop what was read."""
        done, self.done = self.done, None
        self._parts = []
        abort_transport(self.transport)
        return done


class RestTransport:
    """POSTs JSON bodies to one Seldon model endpoint over a shared connection pool."""

    def __init__(self, config: BatchConfig, reactor: IReactorTime, client: Any = None, *,
                 target: Target) -> None:
        self._config = config
        self._reactor = reactor
        self._client = client
        self._pool: HTTPConnectionPool | None = None
        self._target = target
        self.url = model_url(config, target)
        headers = {"Content-Type": [target.content_type]}
        if config.call_credentials_token:
            headers["X-Auth-Token"] = [config.call_credentials_token]
        for name, value in config.headers:  # --header: gateway routing (seldon-model, Host), auth...
            headers.setdefault(name, []).append(value)
        self._headers = headers
        #: When a connection retires (:mod:`.lifetime`), read when the pool is made.
        self.lifetime = Lifetime.from_config(config, reactor.seconds)

    def start(self) -> None:
        if self._client is not None:
            return
        lifetime = None if self.lifetime.unlimited else self.lifetime
        self._pool = bounded_pool(self._reactor, max(self._config.workers, 2), lifetime)
        agent = Agent(self._reactor, contextFactory=tls_policy(self._config), pool=self._pool)
        self._client = treq.client.HTTPClient(agent)

    def stop(self) -> Deferred[None]:
        if self._pool is None:
            return succeed(None)
        pool, self._pool = self._pool, None
        return pool.closeCachedConnections()

    def send(self, body: JSONDict, puid: str) -> Deferred[JSONDict]:
        try:
            data, extra = encode_request(body, self._target)
        except RequestFailed as e:
            return fail(e)
        return Deferred.fromCoroutine(self._send(data, puid, extra))

    async def _send(self, data: bytes, puid: str, extra: tuple[tuple[str, str], ...] = ()) -> JSONDict:
        headers = {**self._headers, "seldon-puid": [puid]}
        for name, value in extra:
            headers[name] = [value]
        try:
            started = self._reactor.seconds()
            # unbuffered: treq would otherwise read the whole body into memory, whatever its size;
            # no redirects: a 303 would be followed elsewhere carrying X-Auth-Token (an http_3xx line instead)
            response = await self._client.post(self.url, data=data, headers=headers, timeout=self._config.timeout,
                                               unbuffered=True, allow_redirects=False)
            # treq's timeout stops at the headers: the body gets what is left of the same deadline
            left = max(self._config.timeout - (self._reactor.seconds() - started), 0.001)
            content = await self._read_body(response, left)
        except RequestFailed:
            raise
        except Exception as e:  # noqa: BLE001 - every transport error becomes an error record
            raise connection_failure(e) from None
        try:
            return classify(response.code, content, response.headers.getRawHeaders(b"retry-after", [None])[0],
                            self._target.decode)
        except RequestFailed:
            raise
        except Exception as e:  # noqa: BLE001 - a classification bug is this request's error line
            raise internal_failure(e) from None

    async def _read_body(self, response: Any, timeout: float) -> bytes:
        """The body, at most ``max_response_bytes``, within ``timeout`` seconds."""
        limit = self._config.max_response_bytes
        if response.length is not UNKNOWN_LENGTH and response.length > limit:
            abort_response(response)  # refused before reading any of it
            raise too_large(limit)
        if response.length == 0:
            return b""
        collector = _CappedBody(limit)
        done = collector.done
        assert done is not None
        response.deliverBody(collector)

        def timed_out() -> None:
            pending = collector.abandon()  # mid-body: the connection can never be reused
            if pending is not None:
                pending.errback(TimeoutError())

        timer = self._reactor.callLater(timeout, timed_out)
        try:
            return await done
        finally:
            if timer.active():
                timer.cancel()

