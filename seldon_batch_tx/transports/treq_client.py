"""REST transport: one persistent treq client per run, sized to the workers.

It turns one JSON body into one HTTP POST and classifies what comes back, so the engine only
sees a response dict or a :class:`RequestFailed` that says whether a retry could help.

Answers are bounded like the fast client's: treq's own buffering is off (it would hold any
body whole), the body is collected here up to ``config.max_response_bytes`` (past it, or with a
larger Content-Length, the connection is aborted: ``response_too_large``), the status line and
headers are cut at ``MAX_HEADER_BYTES``, and one deadline of ``config.timeout`` covers the
headers and the body.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

import treq
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.error import ConnectError, ConnectionClosed, DNSLookupError
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web._newclient import HEADER, STATUS, HTTP11ClientProtocol
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    PotentialDataLoss,
    ResponseDone,
    ResponseFailed,
    _HTTP11ClientFactory,
)
from twisted.web.iweb import UNKNOWN_LENGTH, IPolicyForHTTPS
from zope.interface import implementer

from ..config import BatchConfig
from .base import (
    MAX_HEADER_BYTES,
    JSONDict,
    RequestFailed,
    ca_certificates,
    has_non_finite,
    headers_too_large,
    internal_failure,
    nested_too_deeply,
    not_finite,
    too_deep,
    too_large,
)

_EXCERPT = 300


def endpoint_url(config: BatchConfig, path: str) -> str:
    """The model URL for ``path`` (``predictions``/``feedback``) and the gateway type."""
    scheme = "https" if config.use_ssl else "http"
    if config.protocol == "v2":  # Open Inference Protocol; a gateway's Seldon Core 1 prefix when not direct
        model = quote(config.model_name or config.deployment_name, safe="")
        version = f"/versions/{quote(config.model_version, safe='')}" if config.model_version else ""
        prefix = "" if config.gateway_type == "seldon" else f"/seldon/{config.namespace}/{config.deployment_name}"
        return f"{scheme}://{config.host}{prefix}/v2/models/{model}{version}/infer"
    if config.gateway_type == "seldon":
        return f"{scheme}://{config.host}/api/v1.0/{path}"
    return f"{scheme}://{config.host}/seldon/{config.namespace}/{config.deployment_name}/api/v1.0/{path}"


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedCreator:
    """TLS without certificate checks, for ``--no-ssl-verify`` against self-signed servers."""

    def __init__(self) -> None:
        self._context = ssl.CertificateOptions(verify=False).getContext()

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:  # noqa: N802
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        return connection


@implementer(IPolicyForHTTPS)
class _NoVerifyPolicy:
    def __init__(self) -> None:
        self._creator = _UnverifiedCreator()

    def creatorForNetloc(self, hostname: bytes, port: int) -> _UnverifiedCreator:  # noqa: N802
        return self._creator


def tls_policy(config: BatchConfig) -> IPolicyForHTTPS:
    """Certificate checks as configured: off, against a custom CA, or the system's roots."""
    if not config.ssl_verify:
        return _NoVerifyPolicy()
    if config.ca_cert:
        return BrowserLikePolicyForHTTPS(trustRoot=ssl.trustRootFromCertificates(ca_bundle(config.ca_cert)))
    return BrowserLikePolicyForHTTPS()


def ca_bundle(path: str) -> list[ssl.Certificate]:
    """Every certificate of the PEM bundle at ``path`` (a CA file often holds several: all are trusted)."""
    return [ssl.Certificate.loadPEM(pem) for pem in ca_certificates(path)]


def _excerpt(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    return text if len(text) <= _EXCERPT else text[:_EXCERPT] + "..."


def _retry_after(value: bytes | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value.decode("ascii")))
    except ValueError:
        return None  # an HTTP date; the usual backoff applies


class _NotStrictJSON(ValueError):
    """``NaN``/``Infinity`` literals: Python's extensions, which no strict JSON output line can carry."""


def _refuse_constant(name: str) -> Any:
    raise _NotStrictJSON(name)


_decoder = json.JSONDecoder(parse_constant=_refuse_constant)
#: An exponent of 100 or more (in a lower-cased body): the only way, with 309+ digits in a row,
#: that a JSON number can be beyond a double (``1e999`` decodes to infinity).
_HUGE_EXPONENT = re.compile(rb"e\+?0*[1-9][0-9][0-9]")
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_LONG_DIGITS = b"0" * 309


def decode_answer(body: bytes) -> Any:
    """``json.loads`` of an answer (same encodings, same errors), refusing NaN and Infinity literals."""
    return _decoder.decode(body.decode(json.detect_encoding(body), "surrogatepass"))


def may_overflow(body: bytes) -> bool:
    """Whether some number in ``body`` might be beyond a double: cheap C passes, rarely true."""
    if _HUGE_EXPONENT.search(body.lower()):
        return True
    return len(body) > 308 and _LONG_DIGITS in body.translate(_DIGITS_AS_ZERO)


def classify(code: int, body: bytes, retry_after: bytes | None = None) -> JSONDict:
    """The decoded response of a 2xx, or the RequestFailed an HTTP status means."""
    if 200 <= code < 300:
        try:
            decoded = decode_answer(body)
        except RecursionError:
            raise nested_too_deeply(code) from None
        except _NotStrictJSON:
            raise not_finite(code) from None
        except ValueError:
            raise RequestFailed("bad_response", f"HTTP {code} with a body that is not JSON: {_excerpt(body)}",
                                code=code, retryable=True, info="bad_response") from None
        if not isinstance(decoded, dict):
            raise RequestFailed("bad_response", f"HTTP {code} with JSON that is not an object: {_excerpt(body)}",
                                code=code, retryable=True, info="bad_response")
        if too_deep(decoded, body):
            raise nested_too_deeply(code)
        if may_overflow(body) and has_non_finite(decoded, len(body) + 1):
            raise not_finite(code)
        status = decoded.get("status")
        if isinstance(status, dict) and status.get("status") == "FAILURE":
            model_code = status.get("code")
            raise RequestFailed("model_failure", f"model reported failure: {_excerpt(body)}",
                                code=model_code if type(model_code) is int and model_code else code,
                                info="model_failure")
        return decoded
    retryable = code == 429 or code >= 500
    raise RequestFailed(f"http_{code}", f"HTTP {code}: {_excerpt(body)}", code=code, retryable=retryable,
                        retry_after=_retry_after(retry_after) if retryable else None, info=f"http_{code}")


def connection_failure(failure: BaseException) -> RequestFailed:
    """A readable, retryable RequestFailed for errors before any HTTP status arrived."""
    if isinstance(failure, (CancelledError, TimeoutError)):
        return RequestFailed("timeout", "no response within the request timeout", retryable=True, info="timeout")
    if isinstance(failure, ResponseFailed):
        if any(r.check(HeadersTooLarge) for r in failure.reasons):
            return headers_too_large()
        if any(r.check(CancelledError) for r in failure.reasons):  # treq's timeout cancels the request
            return connection_failure(TimeoutError())
        inner = "; ".join(str(r.value) for r in failure.reasons) or "response failed"
        return RequestFailed("connection", f"connection lost during the response: {inner}",
                             retryable=True, info="connection")
    if isinstance(failure, (ConnectError, DNSLookupError, ConnectionClosed)):
        return RequestFailed("connection", f"cannot connect: {failure}", retryable=True, info="connection")
    return RequestFailed("connection", f"{type(failure).__name__}: {failure}", retryable=True, info="connection")


class HeadersTooLarge(Exception):
    """An answer's status line and headers went past :data:`MAX_HEADER_BYTES`."""


class _BoundedClientProtocol(HTTP11ClientProtocol):
    """Twisted's HTTP/1.1 client, with a bound on the bytes of each answer's status line and headers.

    Twisted limits the length of one header line but not their number, so a server whose headers
    never end would fill memory until the timeout.
    """

    _head = 0

    def request(self, request: Any) -> Any:
        self._head = 0
        return super().request(request)

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

    def buildProtocol(self, addr: Any) -> HTTP11ClientProtocol:  # noqa: N802 - Twisted's name
        return _BoundedClientProtocol(self._quiescentCallback)


def _abort(transport: Any) -> None:
    """Abort the connection under a response's transport proxy (never reused: it is mid-answer)."""
    if transport is None:
        return
    connection = getattr(transport, "_producer", None)
    if connection is not None and hasattr(connection, "abortConnection"):
        connection.abortConnection()
    else:
        transport.stopProducing()


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
        _abort(self.transport)
        return done


class RestTransport:
    """POSTs JSON bodies to one Seldon model endpoint over a shared connection pool."""

    def __init__(self, config: BatchConfig, reactor: IReactorTime, client: Any = None) -> None:
        self._config = config
        self._reactor = reactor
        self._client = client
        self._pool: HTTPConnectionPool | None = None
        self.url = endpoint_url(config, "feedback" if config.method == "feedback" else "predictions")
        headers = {"Content-Type": ["application/json"]}
        if config.call_credentials_token:
            headers["X-Auth-Token"] = [config.call_credentials_token]
        for name, value in config.headers:  # --header: gateway routing (seldon-model, Host), auth...
            headers.setdefault(name, []).append(value)
        self._headers = headers

    def start(self) -> None:
        if self._client is not None:
            return
        self._pool = HTTPConnectionPool(self._reactor, persistent=True)
        self._pool.maxPersistentPerHost = max(self._config.workers, 2)
        self._pool.retryAutomatically = False
        self._pool._factory = _QuietFactory
        agent = Agent(self._reactor, contextFactory=tls_policy(self._config), pool=self._pool)
        self._client = treq.client.HTTPClient(agent)

    def stop(self) -> Deferred[None]:
        if self._pool is None:
            return Deferred.fromCoroutine(_done())
        pool, self._pool = self._pool, None
        return pool.closeCachedConnections()

    def send(self, body: JSONDict, puid: str) -> Deferred[JSONDict]:
        try:
            data = json.dumps(body).encode()
        except RecursionError:
            return _failed(RequestFailed("input_error", "request nested too deeply to encode as JSON",
                                         info="input_error"))
        except (TypeError, ValueError) as e:
            return _failed(RequestFailed("input_error", f"cannot encode the request as JSON: {e}",
                                         info="input_error"))
        return Deferred.fromCoroutine(self._send(data, puid))

    async def _send(self, data: bytes, puid: str) -> JSONDict:
        headers = {**self._headers, "seldon-puid": [puid]}
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
            return classify(response.code, content, response.headers.getRawHeaders(b"retry-after", [None])[0])
        except RequestFailed:
            raise
        except Exception as e:  # noqa: BLE001 - a classification bug is this request's error line
            raise internal_failure(e) from None

    async def _read_body(self, response: Any, timeout: float) -> bytes:
        """The body, at most ``max_response_bytes``, within ``timeout`` seconds."""
        limit = self._config.max_response_bytes
        original = getattr(response, "original", response)
        if response.length is not UNKNOWN_LENGTH and response.length > limit:
            _abort(getattr(original, "_transport", None))  # refused before reading any of it
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


def _failed(error: RequestFailed) -> Deferred[JSONDict]:
    d: Deferred[JSONDict] = Deferred()
    d.errback(error)
    return d


async def _done() -> None:
    return None
