"""Does the model answer? The one readiness probe, before the first line and during an outage.

:func:`probe` resolves the host, connects, and asks readiness where the protocol has a route
for it: V2 over REST ``/v2/health/ready`` then ``/v2/models/NAME[/versions/V]/ready`` (each must
answer 200; a server without ``/v2/health/ready``, a 404 there, is taken as reachable); the Seldon
protocol over REST a ``GET`` of the microservice's ``/health/ping`` (``--gateway-type seldon``)
or, through a gateway, of ``/seldon/NS/NAME/ready`` (Seldon Core's executor answers 503 there
until its graph is ready), where any answer but 502/503/504 counts (a 404 from a service without
that route still proves something answers behind the name; but the microservice's own 500 there, from a
host that answers ``/health/ping`` at its root and not under the prefix, is the microservice on its own
port: "give -g seldon"; with ``--use-ssl``, a plain-HTTP port is named as such, nothing is sent without TLS).
gRPC: resolve, connect, and for V2 ``ServerReady`` then ``ModelReady`` through the gRPC transport, for
Seldon a gRPC channel (the run's TLS settings) that must become READY (:mod:`..transports.grpc_ready`).
Probes carry the run's TLS settings, ``--header`` values and token, as requests do.

It answers ``None`` (ready) or one line naming the host, the port and the cause; every step is
bounded by :func:`probe_timeout`. :func:`wait_ready` is ``--wait-ready``: probing with backoff
until ready or until the time is up.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import txaio
from twisted.internet import error as terror
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater

from ..config import BatchConfig
from ..core.failures import model_raised
from ..host_checks import grpc_scheme
from ..protocols.base import gateway_prefix
from ..redaction import Secrets
from ..transports.http import tls_policy

txaio.use_twisted()
log = txaio.make_logger()

#: Seconds of the first pause between probes, and the longest one (backoff doubles in between).
FIRST_PAUSE = 0.5
LONGEST_PAUSE = 5.0
#: Bytes of a readiness answer read at most (the rest is dropped with the connection).
MAX_PROBE_BYTES = 64 * 1024
#: Gateway statuses meaning "no model behind me" rather than an answer of the model.
GATEWAY_DOWN = (502, 503, 504)


def probe_timeout(config: BatchConfig) -> float:
    """Longest one probe step may take: ``--timeout``, at most 10 s (a readiness answer is small)."""
    return min(config.timeout, 10.0)


def where(config: BatchConfig) -> tuple[str, int]:
    """The host and port requests go to (``--host``, the scheme's port when it has none)."""
    parts = urlsplit(f"{'https' if config.use_ssl else 'http'}://{config.host}")
    return parts.hostname or "localhost", parts.port or (443 if config.use_ssl else 80)


def routes(config: BatchConfig) -> list[str]:
    """The REST readiness routes of the configured protocol and gateway (all must answer)."""
    prefix = gateway_prefix(config)
    if config.protocol == "v2":
        model = quote(config.model_name or config.deployment_name, safe="")
        version = f"/versions/{quote(config.model_version, safe='')}" if config.model_version else ""
        return [f"{prefix}/v2/health/ready", f"{prefix}/v2/models/{model}{version}/ready"]
    return [f"{prefix}/ready" if prefix else "/health/ping"]


def cause_of(error: BaseException) -> str:
    """A short, readable cause for a failed connection or probe."""
    reasons = getattr(error, "reasons", None)  # twisted.web's ResponseFailed / ResponseNeverReceived
    if isinstance(reasons, list) and reasons:
        return "; ".join(dict.fromkeys(cause_of(r.value) for r in reasons if hasattr(r, "value")))
    if isinstance(error, terror.ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, terror.DNSLookupError):
        return "the name does not resolve"
    if isinstance(error, (TimeoutError, terror.TimeoutError, CancelledError)):
        return "no answer in time"
    if isinstance(error, terror.ConnectionLost | terror.ConnectionDone):
        return "connection closed by the server"
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split())[:200]


class _Discard(Protocol):
    """Keeps at most :data:`MAX_PROBE_BYTES` of an answer body, then drops the connection."""

    def __init__(self, done: Deferred[None]) -> None:
        self.done, self.seen, self.head = done, 0, b""

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        if self.seen < MAX_PROBE_BYTES:
            self.head += data[:MAX_PROBE_BYTES - self.seen]
        self.seen += len(data)
        if self.seen > MAX_PROBE_BYTES and self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802 - Twisted's name
        if not self.done.called:
            self.done.callback(None)


async def _connect(config: BatchConfig, reactor: Any, host: str, port: int) -> None:
    """Resolve and open one TCP connection, then close it."""
    endpoint = HostnameEndpoint(reactor, host, port, timeout=probe_timeout(config))
    factory = Factory.forProtocol(Protocol)
    factory.noisy = False  # no "Starting factory" lines for a probe
    d = endpoint.connect(factory)
    d.addTimeout(probe_timeout(config) + 1.0, reactor)
    conn: Any = await d
    if conn.transport is not None:
        conn.transport.abortConnection()


async def _get(config: BatchConfig, reactor: Any, path: str) -> tuple[int, bytes]:
    """The HTTP status of ``GET path`` (with the start of its body) with the run's TLS, headers and token."""
    from twisted.web.client import Agent

    from ..transports.twisted_internals import bounded_pool

    pool = bounded_pool(reactor, 1)  # quiet, with bounded answer headers
    try:
        return await _get_with(config, reactor, path, Agent(reactor, contextFactory=tls_policy(config),
                                                            connectTimeout=probe_timeout(config), pool=pool))
    finally:
        await pool.closeCachedConnections()


async def _get_with(config: BatchConfig, reactor: Any, path: str, agent: Any) -> tuple[int, bytes]:
    from twisted.web.http_headers import Headers

    headers = Headers({b"User-Agent": [b"seldon-batch-tx"]})
    if config.call_credentials_token:
        headers.addRawHeader(b"X-Auth-Token", config.call_credentials_token.encode("latin-1"))
    for name, value in config.headers:
        headers.addRawHeader(name.encode("latin-1"), value.encode("latin-1"))
    url = f"{'https' if config.use_ssl else 'http'}://{config.host}{path}"
    d = agent.request(b"GET", url.encode("ascii", "backslashreplace"), headers)
    d.addTimeout(probe_timeout(config), reactor)
    response = await d
    done: Deferred[None] = Deferred()
    body = _Discard(done)
    response.deliverBody(body)
    done.addTimeout(probe_timeout(config), reactor)
    with contextlib.suppress(TimeoutError, CancelledError):
        await done  # the status is what counts, and the body's start when it names what answered
    return int(response.code), body.head


async def probe(config: BatchConfig, reactor: Any) -> str | None:
    """``None`` when the model is ready, else one line: what was asked, of which host and port, and why not.

    A gRPC resolver target (``dns:///``, ``ipv4:``/``ipv6:`` lists) is resolved by gRPC itself: no
    connection of ours first, only the V2 readiness calls (which go through the gRPC transport).
    """
    if config.transport == "grpc" and grpc_scheme(config.host) is not None:
        return await _grpc_ready(config, reactor, config.host) if config.protocol == "v2" else None
    host, port = where(config)
    at = f"{host}:{port}"
    try:
        await _connect(config, reactor, host, port)
    except Exception as e:  # noqa: BLE001 - every way a connection fails is a cause to report
        return f"cannot connect to {at}: {cause_of(e)}"
    if config.transport == "grpc":
        return await (_grpc_ready if config.protocol == "v2" else _channel_ready)(config, reactor, at)
    for step, path in enumerate(routes(config)):
        try:
            code, body = await _get(config, reactor, path)
        except Exception as e:  # noqa: BLE001
            cause = cause_of(e)
            return f"no readiness answer from {at}{path}: {cause}{_tls_hint(config, cause)}"
        if code == 500 and model_raised(body) and await _bare(config, reactor):
            return (f"{at} is a Seldon model microservice, not an {config.gateway_type} gateway: it has no route "
                    f"{path} (it answered HTTP 500 MICROSERVICE_INTERNAL_ERROR); score it with -g seldon")
        if code in GATEWAY_DOWN:
            return f"not ready: HTTP {code} from {at}{path}"
        if config.protocol == "v2" and code != 200:
            if step == 0:
                return None  # a server without V2's health routes (a 404): that it answers is all we can know
            return f"not ready: HTTP {code} from {at}{path}"
    return None


#: OpenSSL's words when the other side answered a TLS handshake in plain HTTP.
_PLAIN_WORDS = ("wrong version number", "http request", "packet length too long")


def _tls_hint(config: BatchConfig, cause: str) -> str:
    """With ``--use-ssl``, what a plain-HTTP port looks like: OpenSSL's "wrong version number", or no answer
    at all (a server waiting for a request line). Nothing is sent without TLS to find out."""
    if not config.use_ssl:
        return ""
    if any(word in cause.lower() for word in _PLAIN_WORDS):
        return " (the port speaks plain HTTP, not TLS: leave out --use-ssl, or give its TLS port)"
    if cause == "no answer in time":
        return " (a port without TLS may never answer a TLS handshake: check --use-ssl)"
    return ""


async def _bare(config: BatchConfig, reactor: Any) -> bool:
    """Whether a gateway type was given to the model microservice on its own port: it answers its own
    ``/health/ping`` at its root but not under the gateway's prefix (behind a gateway, a model without
    Seldon's executor lacks ``/ready`` too, yet answers ``PREFIX/health/ping``)."""
    prefix = gateway_prefix(config)
    if not prefix:  # -g seldon: the microservice itself is what was asked for
        return False
    try:
        return (await _get(config, reactor, f"{prefix}/health/ping"))[0] != 200 and \
            (await _get(config, reactor, "/health/ping"))[0] == 200
    except Exception:  # noqa: BLE001 - no answer: not what tells a bare microservice
        return False


def same(route: Any) -> Any:
    return route


def quiet(transport: Any) -> Any:
    """A probe's transport logs nothing ("gRPC channels open" per probe): its outcome is the one line."""
    transport.log = txaio.make_logger(level="none")
    return transport


async def _grpc_ready(config: BatchConfig, reactor: Any, at: str) -> str | None:
    """V2 over gRPC: ``ServerReady`` then ``ModelReady``, sent through the gRPC transport (TLS, token, metadata)."""
    from ..core.failures import RequestFailed
    from ..core.target import Target
    from ..protocols.v2_pb import readiness_routes
    from ..transports.choose import make_transport

    probing = config.replace(workers=1, grpc_channels=1, timeout=probe_timeout(config), connection_max_age=None)
    for method, route in readiness_routes(config.model_name or config.deployment_name, config.model_version):
        transport = quiet(make_transport(probing, reactor, target=Target(f"grpc:{method}",
                                                                           functools.partial(same, route))))
        transport.start()
        try:
            answer = await transport.send({}, "readiness")
        except RequestFailed as e:
            if e.kind == "grpc_UNIMPLEMENTED":  # a server without the readiness RPCs answered: reachable,
                return None                     # as over REST a server without /v2/health/ready (404)
            reason = Secrets.of(config).text(e.reason)  # the server's words may quote the token
            return f"no readiness answer from {at} (gRPC {method}): {reason}"
        finally:
            await transport.stop()
        if not answer.get("ready"):
            return f"not ready: gRPC {method} from {at} answered ready=false"
    return None


async def _channel_ready(config: BatchConfig, reactor: Any, at: str) -> str | None:
    """Seldon over gRPC (no readiness RPC): a channel with the run's TLS settings must become READY."""
    from ..core.failures import RequestFailed
    from ..core.target import Target
    from ..transports.choose import make_transport
    from ..transports.grpc_ready import channel_ready_route

    probing = config.replace(workers=1, grpc_channels=1, timeout=probe_timeout(config), connection_max_age=None)
    route = channel_ready_route(config.use_ssl)
    transport = quiet(make_transport(probing, reactor, target=Target("grpc:channel", functools.partial(same, route))))
    transport.start()
    try:
        answer = await transport.send({}, "readiness")
    except RequestFailed as e:
        return f"cannot open a gRPC connection to {at}: {Secrets.of(config).text(e.reason)}"
    finally:
        await transport.stop()
    return None if answer.get("ready") else f"cannot open a gRPC connection to {at}: {answer.get('cause')}"


def clock_time(seconds: float) -> str:
    """``HH:MM:SS`` (local time) of a reactor time, as the log and the dashboard show it."""
    return time.strftime("%H:%M:%S", time.localtime(seconds))


async def wait_ready(config: BatchConfig, reactor: Any, seconds: float,
                     stopped: Callable[[], bool] = lambda: False) -> str | None:
    """Probe until ready (``None``) or ``seconds`` have passed or ``stopped()`` (the last reason); once when 0."""
    deadline = reactor.seconds() + seconds
    pause = FIRST_PAUSE
    reason = await probe(config, reactor)
    if reason is not None and seconds > 0:
        log.info("waiting up to {seconds:g} s for the model ({reason})", seconds=seconds, reason=reason)
    while reason is not None and reactor.seconds() < deadline and not stopped():
        await deferLater(reactor, min(pause, max(deadline - reactor.seconds(), 0.0)))
        pause = min(2 * pause, LONGEST_PAUSE)
        last, reason = reason, await probe(config, reactor)
        if reason is not None and reason != last:
            log.info("still waiting for the model: {reason}", reason=reason)
    return reason
