"""REST transport: one persistent treq client per run, sized to the workers.

It turns one JSON body into one HTTP POST and classifies what comes back, so the engine only
sees a response dict or a :class:`RequestFailed` that says whether a retry could help.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import treq
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.error import ConnectError, ConnectionClosed, DNSLookupError
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IReactorTime
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    ResponseFailed,
    _HTTP11ClientFactory,
)
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from .config import BatchConfig
from .transport import JSONDict, RequestFailed

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
        with open(config.ca_cert, "rb") as f:
            return BrowserLikePolicyForHTTPS(trustRoot=ssl.Certificate.loadPEM(f.read()))
    return BrowserLikePolicyForHTTPS()


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


def classify(code: int, body: bytes, retry_after: bytes | None = None) -> JSONDict:
    """The decoded response of a 2xx, or the RequestFailed an HTTP status means."""
    if 200 <= code < 300:
        try:
            decoded = json.loads(body)
        except ValueError:
            raise RequestFailed("bad_response", f"HTTP {code} with a body that is not JSON: {_excerpt(body)}",
                                code=code, retryable=True, info="bad_response") from None
        if not isinstance(decoded, dict):
            raise RequestFailed("bad_response", f"HTTP {code} with JSON that is not an object: {_excerpt(body)}",
                                code=code, retryable=True, info="bad_response")
        status = decoded.get("status")
        if isinstance(status, dict) and status.get("status") == "FAILURE":
            raise RequestFailed("model_failure", f"model reported failure: {_excerpt(body)}",
                                code=status.get("code") or code, info="model_failure")
        return decoded
    retryable = code == 429 or code >= 500
    raise RequestFailed(f"http_{code}", f"HTTP {code}: {_excerpt(body)}", code=code, retryable=retryable,
                        retry_after=_retry_after(retry_after) if retryable else None, info=f"http_{code}")


def connection_failure(failure: BaseException) -> RequestFailed:
    """A readable, retryable RequestFailed for errors before any HTTP status arrived."""
    if isinstance(failure, (CancelledError, TimeoutError)):
        return RequestFailed("timeout", "no response within the request timeout", retryable=True, info="timeout")
    if isinstance(failure, ResponseFailed):
        if any(r.check(CancelledError) for r in failure.reasons):  # treq's timeout cancels the request
            return connection_failure(TimeoutError())
        inner = "; ".join(str(r.value) for r in failure.reasons) or "response failed"
        return RequestFailed("connection", f"connection lost during the response: {inner}",
                             retryable=True, info="connection")
    if isinstance(failure, (ConnectError, DNSLookupError, ConnectionClosed)):
        return RequestFailed("connection", f"cannot connect: {failure}", retryable=True, info="connection")
    return RequestFailed("connection", f"{type(failure).__name__}: {failure}", retryable=True, info="connection")


class _QuietFactory(_HTTP11ClientFactory):
    noisy = False  # one "Starting factory" log line per connection is noise at info level


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
        return Deferred.fromCoroutine(self._send(json.dumps(body).encode(), puid))

    async def _send(self, data: bytes, puid: str) -> JSONDict:
        headers = {**self._headers, "seldon-puid": [puid]}
        try:
            started = self._reactor.seconds()
            response = await self._client.post(self.url, data=data, headers=headers, timeout=self._config.timeout)
            # treq's timeout stops at the headers: a body that stalls must time out too.
            body = response.content()
            body.addTimeout(max(self._config.timeout - (self._reactor.seconds() - started), 0.001), self._reactor)
            try:
                content = await body
            except TimeoutError:
                _drop_connection(response)  # the connection is mid-body: never reuse it
                raise
        except RequestFailed:
            raise
        except Exception as e:  # noqa: BLE001 - every transport error becomes an error record
            raise connection_failure(e) from None
        return classify(response.code, content, response.headers.getRawHeaders(b"retry-after", [None])[0])


def _drop_connection(response: Any) -> None:
    transport = getattr(getattr(response, "original", response), "_transport", None)
    if transport is not None:
        transport.stopProducing()


async def _done() -> None:
    return None
