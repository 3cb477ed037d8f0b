"""The gRPC transport: several channels per run (:mod:`.grpc_pool`), calls kept off the reactor thread.

Requests arrive as REST-shaped dicts (built by the engine) and leave as the model's response
in the same shape, so nothing downstream knows which transport ran. Which RPC, and the
conversions both ways, are the codec's :class:`~seldon_batch_tx.core.target.GrpcRoute`
(:mod:`seldon_batch_tx.protocols.seldon_pb`, :mod:`seldon_batch_tx.protocols.v2_pb`); channel
options, status codes and trust on first use are :mod:`.grpc_channel`.

Three ways of keeping gRPC off the reactor thread are implemented (``mode=``):

* ``"aio"`` (default): ``grpc.aio`` on a private asyncio loop in one dedicated thread
  (:mod:`seldon_batch_tx.transports.grpc_loop`), calls and answers handed over in batches, one wake-up
  per burst rather than per call. Cancellable; closing the channel fails calls in flight.
* ``"futures"`` and ``"threads"`` (:mod:`.grpc_sync`): grpcio's sync API, ``stub.Predict.future``
  answered through ``reactor.callFromThread``, or blocking calls in a dedicated thread pool.

Every mode spreads its calls over :func:`.grpc_channel.channel_count` channels (each its own
connection, so a Service's replicas all get work) and replaces each after its lifetime
(``--connection-max-age``/``--connection-max-requests``, :mod:`.lifetime`) without failing a call.

Why ``aio``: measured with the whole command (10,000 lines, 50 workers, the gRPC echo server
of bench/grpc_echo.py, a 2-core box shared with other work), ``futures`` spent 0.57 ms of
client CPU per request, 40% of it in grpcio's sync call set-up (a channel spin thread that
starts and stops with the calls in flight, a lock shared with it); ``aio`` spent 0.43 ms, and
0.32 ms once requests were built without ``json_format`` (see grpc_messages): 2,765 lines/s,
3.2x the original processor (bench/grpc_bench.py). Against the real microservice
(bench/grpc_modes.py, 3000 requests) the modes are equal within noise (~900-960 req/s, the one
server process behind one channel is the bottleneck); client CPU aio 0.32, futures 0.33,
threads 0.37 ms per request. ``futures`` and ``threads`` stay as fallbacks (~40 lines each)
should a grpcio release misbehave with ``grpc.aio`` in a thread.

Which service: ``seldon.protos.Seldon`` for every gateway. The Seldon Core executor (what
istio/ambassador route to, and what ``--gateway-type seldon`` usually points at) serves only
``Seldon``; the Python model microservice serves both ``Seldon`` and ``Model``. ``service="Model"``
is available for a bare non-Python model unit that serves only ``Model``.

TLS without verification (``use_ssl`` and ``ssl_verify=False``): gRPC has no switch to skip
verification. Unless ``ca_cert`` is given, ``start()`` fetches the server's certificate once
(trust on first use, off the reactor thread) and trusts exactly that certificate, overriding the
expected host name with a name taken from it. This works for the usual self-signed server
certificate; a certificate signed by an unknown CA cannot be trusted that way: pass ``ca_cert``
(a PEM bundle: gRPC trusts every certificate in it).

Bounded and always answered: the receive limit is ``config.max_response_bytes`` (a larger answer
is ``response_too_large``, not retried); a body protobuf cannot carry (too deep, wrong types) is
that line's ``input_error``; any exception while converting an answer fails that call; and a
guard timer a little past ``config.timeout`` fails a call whose gRPC deadline somehow did not.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import txaio
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.python.failure import Failure

from ..config import BatchConfig
from ..core.certificates import ca_certificates
from ..core.failures import RequestFailed, internal_failure
from ..core.strict_json import JSONDict
from ..core.target import Target
from .grpc_channel import (
    certificate_name_for,
    channel_count,
    channel_options,
    fetch_server_certificate,
    grpc_target,
    rpc_failure,
    split_host_port,
)
from .grpc_loop import AioCaller
from .grpc_sync import SyncCaller
from .lifetime import Lifetime

txaio.use_twisted()

MODES = ("aio", "futures", "threads")
SERVICES = ("Seldon", "Model")
#: Seconds past ``config.timeout`` before the guard timer fails a call gRPC has not ended.
GUARD_SLACK = 1.0

class GrpcTransport:
    """Sends Seldon v1 predict/feedback calls over a pool of gRPC channels."""

    log = txaio.make_logger()  # type: ignore[attr-defined]

    def __init__(
        self,
        config: BatchConfig,
        reactor: Any,
        *,
        mode: str = "aio",
        service: str = "Seldon",
        target: Target,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if service not in SERVICES:
            raise ValueError(f"service must be one of {SERVICES}, not {service!r}")
        self._config = config
        self._reactor = reactor
        self._mode = mode
        self._service = service
        self._call: AioCaller | SyncCaller | None = None  # set once calls can go
        self._running = False
        # ssl_verify=False without ca_cert: the channel opens once the certificate is fetched
        self._trust_on_first_use = config.use_ssl and not config.ssl_verify and not config.ca_cert
        self._waiting: list[Deferred[None]] | None = None  # sends waiting for that
        #: The codec's method and conversions (``Seldon/Predict``, ``ModelInfer``...): no protocol of our own.
        self._route = target.grpc_route()
        self._metadata = self._base_metadata(config)

    @staticmethod
    def _base_metadata(config: BatchConfig) -> tuple[tuple[str, str], ...]:
        metadata: list[tuple[str, str]] = []
        if config.gateway_type in ("istio", "ambassador"):
            metadata += [("seldon", config.deployment_name), ("namespace", config.namespace)]
        if config.call_credentials_token:
            metadata.append(("x-auth-token", config.call_credentials_token))
        # --header: gRPC metadata keys are lower case; a Host header becomes the channel's :authority
        metadata += [(name.lower(), value) for name, value in config.headers if name.lower() != "host"]
        return tuple(metadata)

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Open the channels (and the thread pool in ``threads`` mode)."""
        config = self._config
        self._running = True
        if self._trust_on_first_use:
            self._begin_certificate_fetch()
        else:
            root = None
            if config.use_ssl and config.ca_cert:
                root = b"".join(ca_certificates(config.ca_cert))  # every certificate of the bundle
            self._connect(root, None)

    def _connect(self, root_certificates: bytes | None, name_override: str | None) -> None:
        config = self._config
        options = channel_options(config, name_override if config.use_ssl else None)
        credentials = None
        if config.use_ssl:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        count = channel_count(config)
        grpc_api: Any = grpc.aio if self._mode == "aio" else grpc

        target = grpc_target(config.host)  # a resolver target as given; round_robin spreads over its addresses

        def open_channel() -> Any:  # aio: on the loop thread
            if credentials is None:
                return grpc_api.insecure_channel(target, options=options)
            return grpc_api.secure_channel(target, credentials, options=options)

        if self._mode == "aio":
            aio = AioCaller(self._reactor)
            aio.start(open_channel, self._multi_callable, count, Lifetime.from_config(config, time.monotonic))
            self._call = aio
        else:
            sync = SyncCaller(self._reactor, self._mode, config.workers)
            sync.start(open_channel, self._multi_callable, count, Lifetime.from_config(config, self._reactor.seconds))
            self._call = sync
        self.log.info(
            "gRPC channels to {host} open ({count}, tls={tls}, service={service}, method={method}, mode={mode})",
            count=count,
            host=config.host,
            tls=config.use_ssl,
            service=self._route.service or self._service,
            method=self._route.rpc or config.method,
            mode=self._mode,
        )

    def _multi_callable(self, channel: Any) -> Any:
        """The route's method on ``channel`` (sync or aio), for the configured service."""
        return self._route.method(channel, self._service)

    def _begin_certificate_fetch(self) -> None:
        self._waiting = []
        threading.Thread(
            target=self._fetch_certificate_then_connect, name="grpc-tls-fetch", daemon=True
        ).start()

    def _fetch_certificate_then_connect(self) -> None:
        """Runs in its own thread: trust-on-first-use for ``ssl_verify=False``."""
        host, port = split_host_port(self._config.host)
        try:
            pem = fetch_server_certificate(host, port, self._config.timeout)
            name = certificate_name_for(pem, host)
        except (OSError, ValueError):  # connection/TLS errors, unparsable certificate
            self._reactor.callFromThread(self._certificate_fetched, None, None, Failure())
        else:
            self._reactor.callFromThread(self._certificate_fetched, pem, name, None)

    def _certificate_fetched(self, pem: bytes | None, name: str | None, error: Failure | None) -> None:
        """On the reactor thread: open the channel trusting ``pem``, or fail the waiting sends."""
        waiting, self._waiting = self._waiting or [], None
        if error is None and not self._running:
            error = Failure(RuntimeError("transport stopped"))
        if error is None and pem is not None:
            self.log.warn(  # noqa: G010 (txaio loggers spell it warn)
                "TLS verification off: trusting the certificate {host} presents now (name {name})",
                host=self._config.host,
                name=name,
            )
            self._connect(pem, name)
            for d in waiting:
                d.callback(None)
            return
        assert error is not None
        self.log.error(
            "cannot fetch the TLS certificate of {host}: {error}",
            host=self._config.host,
            error=error.getErrorMessage(),
        )
        for d in waiting:
            d.errback(
                RequestFailed(
                    "connection",
                    f"cannot fetch the TLS certificate of {self._config.host}: {error.getErrorMessage()}",
                    retryable=True,
                )
            )

    def stop(self) -> Deferred[None]:
        """Close the channels (in-flight calls fail with CANCELLED) and join the pool's threads."""
        self._running = False
        call, self._call = self._call, None
        return succeed(None) if call is None else call.stop()

    # --- requests ------------------------------------------------------------------------

    def send(self, body: JSONDict, puid: str) -> Deferred[JSONDict]:
        """Call the model; a body gRPC cannot encode or a failed call fails with RequestFailed.

        Fires within ``config.timeout`` (plus :data:`GUARD_SLACK` at worst) whatever happens.
        """
        try:
            inner = self._send(body, puid)
        except Exception as e:  # noqa: BLE001 - a bug: this call's error line, not a lost call
            self.log.failure("unexpected error sending a gRPC request")
            return fail(internal_failure(e))
        return self._guarded(inner)

    def _guarded(self, inner: Deferred[JSONDict]) -> Deferred[JSONDict]:
        """``inner``'s outcome, or a ``timeout`` failure if it has none in time (then ``inner`` is cancelled)."""
        if inner.called:  # refused before any call (input errors): nothing to guard
            return inner
        outer: Deferred[JSONDict] = Deferred(lambda _: inner.cancel())

        def expire() -> None:
            if not outer.called:
                self.log.warn(  # noqa: G010 (txaio loggers spell it warn)
                    "a gRPC call outlived its deadline of {timeout}s; failing it", timeout=self._config.timeout)
                outer.errback(RequestFailed("timeout", "no response within the request timeout", retryable=True,
                                            info="timeout"))
            inner.cancel()

        timer = self._reactor.callLater(self._config.timeout + GUARD_SLACK, expire)

        def forward(result: JSONDict | Failure) -> None:
            if timer.active():
                timer.cancel()
            if outer.called:
                return  # expired or cancelled meanwhile: the outcome was already given
            if isinstance(result, Failure):
                outer.errback(result)
            else:
                outer.callback(result)

        inner.addBoth(forward)
        return outer

    def _send(self, body: JSONDict, puid: str) -> Deferred[JSONDict]:
        if self._running and self._call is None and self._trust_on_first_use and self._waiting is None:
            self._begin_certificate_fetch()  # the last fetch failed: try again for this send
        if self._waiting is not None:  # TLS certificate still being fetched
            ready: Deferred[None] = Deferred()
            self._waiting.append(ready)
            return ready.addCallback(lambda _: self._send(body, puid))
        if self._call is None:
            return fail(RuntimeError("GrpcTransport.send() called before start() or after stop()"))
        try:
            request = self._route.request(body)
        except Exception as e:  # noqa: BLE001 - a line the protocol cannot carry: its error line, not a crash
            if isinstance(e, RecursionError):
                reason = "nested too deeply"
            elif isinstance(e, ValueError):
                reason = str(e)
            else:
                reason = f"{type(e).__name__}: {e}"
            return fail(RequestFailed("input_error", f"cannot encode the request for gRPC: {reason}",
                                      info="input_error"))
        metadata = (*self._metadata, ("seldon-puid", puid))
        return self._call.call(request, self._config.timeout, metadata).addCallback(self._outcome)

    def _failure(self, error: grpc.RpcError) -> RequestFailed:
        return rpc_failure(error, self._config.max_response_bytes)

    def _converted(self, response: Any) -> JSONDict:
        """The REST-shaped answer; any conversion error is this call's RequestFailed."""
        if response is None:  # grpc.aio's answer to bytes its deserializer could not parse
            raise RequestFailed("bad_response", "the gRPC answer is not a valid protobuf message of the method's "
                                "response type", info="bad_response")
        try:
            return self._route.answer(response)
        except RequestFailed:
            raise
        except Exception as e:  # noqa: BLE001
            raise internal_failure(e) from None

    def _outcome(self, outcome: tuple[bool, Any]) -> JSONDict:
        """On the reactor thread: the converted response, or the call's failure raised."""
        ok, value = outcome
        if ok:
            return self._converted(value)
        if isinstance(value, grpc.RpcError):
            raise self._failure(value)
        if isinstance(value, CancelledError):
            raise value
        if isinstance(value, ValueError):  # a sync channel closed meanwhile
            raise RequestFailed("connection", f"gRPC channel unusable: {value}", info="connection")
        raise RequestFailed("bad_response", f"gRPC call failed: {value!r}", info="bad_response")
