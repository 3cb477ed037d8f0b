"""The gRPC transport: one channel per run, calls kept off the reactor thread.

Requests arrive as REST-shaped dicts (built by the engine) and leave as the model's response
in the same shape, so nothing downstream knows which transport ran; the conversion lives in
:mod:`seldon_batch_tx.protocols.seldon_pb`.

Three ways of keeping gRPC off the reactor thread are implemented (``mode=``):

* ``"aio"`` (default): ``grpc.aio`` on a private asyncio loop in one dedicated thread
  (:mod:`seldon_batch_tx.transports.grpc_loop`), calls and answers handed over in batches, one wake-up
  per burst rather than per call. Cancellable; closing the channel fails calls in flight.
* ``"futures"``: ``stub.Predict.future(...)``; gRPC's completion thread hands each result back
  with ``reactor.callFromThread``.
* ``"threads"``: blocking ``stub.Predict(...)`` in a dedicated ``ThreadPool`` sized to
  ``config.workers`` via ``deferToThreadPool`` (never the reactor's shared pool, which DNS uses).

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

import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

import grpc
import txaio
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.protocols import v2_pb as grpc_v2_messages
from seldon_batch_tx.protocols.seldon_pb import (
    JSONDict,
    NonFiniteNumber,
    feedback_from_dict,
    message_from_dict,
    message_to_dict,
)
from seldon_batch_tx.protocols.v2 import model_name
from seldon_batch_tx.protos import prediction_pb2, prediction_pb2_grpc
from seldon_batch_tx.transports.base import RequestFailed, ca_certificates, internal_failure, not_finite, too_large
from seldon_batch_tx.transports.grpc_loop import AioCaller

txaio.use_twisted()

MODES = ("aio", "futures", "threads")
SERVICES = ("Seldon", "Model")

#: Codes worth another attempt: the server was unreachable, too slow or shedding load.
RETRYABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)

MAX_MESSAGE_BYTES = 100 * 1024 * 1024
#: Seconds past ``config.timeout`` before the guard timer fails a call gRPC has not ended.
GUARD_SLACK = 1.0

#: Requests far above gRPC's 4 MB default (whole mini-batches travel in one message; answers are
#: limited by ``config.max_response_bytes``, see :func:`channel_options`); keepalive pings during
#: calls notice a dead gateway connection within ~80 s, and stay within what a default gRPC
#: server tolerates (client sends at most 2 pings without data).
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 0),
]


def channel_options(config: BatchConfig) -> list[tuple[str, Any]]:
    """:data:`CHANNEL_OPTIONS` plus the receive limit ``--max-response-bytes`` and a ``Host`` authority."""
    options = [*CHANNEL_OPTIONS, ("grpc.max_receive_message_length", min(config.max_response_bytes, 2**31 - 1))]
    options += [("grpc.default_authority", v) for k, v in config.headers if k.lower() == "host"]
    return options


def rpc_failure(error: grpc.RpcError, receive_limit: int | None = None) -> RequestFailed:
    """The RequestFailed for a failed call: kind ``grpc_<CODE>``, numeric code, retryable or not.

    An answer past our receive limit (``receive_limit``) is ``response_too_large``, not the
    server shedding load: the same answer would come again.
    """
    code_fn = getattr(error, "code", None)
    details_fn = getattr(error, "details", None)
    code = code_fn() if callable(code_fn) else None
    details = (details_fn() if callable(details_fn) else None) or ""
    if not isinstance(code, grpc.StatusCode):
        return RequestFailed("grpc_UNKNOWN", f"gRPC call failed: {error!r}", code=2, info="UNKNOWN")
    text = str(details)
    retryable = code in RETRYABLE_CODES
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in text:
        if receive_limit is not None and _over_receive_limit(text, receive_limit):
            return too_large(receive_limit)
        if "CLIENT: Sent message larger than max" in text:
            return RequestFailed("input_too_large", f"request larger than gRPC's send limit: {text}",
                                 code=code.value[0], info="input_too_large")
        retryable = False  # the server's own size limit: the same request would be refused again
    return RequestFailed(
        f"grpc_{code.name}",
        f"gRPC {code.name}: {details}",
        code=code.value[0],
        retryable=retryable,
        info=code.name,
    )


def _over_receive_limit(details: str, limit: int) -> bool:
    """Whether gRPC refused an answer for our receive limit (its own words, with our number)."""
    if "Received message larger than max" not in details or "SERVER:" in details:
        return False
    return "CLIENT:" in details or f" vs. {min(limit, 2**31 - 1)})" in details


def model_failure(status: prediction_pb2.Status) -> RequestFailed:
    """A response with ``status.status == FAILURE`` is a failed request, never retried."""
    reason = status.reason or status.info or "the model answered with status FAILURE"
    return RequestFailed(
        "model_failure", reason, code=status.code or None, retryable=False, info=status.info
    )


def response_to_dict(response: prediction_pb2.SeldonMessage) -> JSONDict:
    """The REST-shaped response, or RequestFailed for a FAILURE status or an unreadable message."""
    if response.HasField("status") and response.status.status == prediction_pb2.Status.FAILURE:
        raise model_failure(response.status)
    try:
        return message_to_dict(response, finite=True)
    except NonFiniteNumber:
        raise not_finite() from None
    except RecursionError:
        raise RequestFailed("bad_response", "answer nested too deeply", info="bad_response") from None
    except Exception as exc:  # a conversion bug must not kill the worker
        raise RequestFailed("bad_response", f"cannot convert the gRPC response: {exc}",
                            info="bad_response") from exc


def fetch_server_certificate(host: str, port: int, timeout: float) -> bytes:
    """The server's leaf certificate (PEM), without verifying it, offering ALPN h2 like gRPC."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, port), timeout=timeout) as sock,
        context.wrap_socket(sock, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError(f"{host}:{port} sent no certificate")
    return ssl.DER_cert_to_PEM_cert(der).encode("ascii")


def certificate_name_for(pem: bytes, host: str) -> str | None:
    """A name the certificate is valid for, to override the target name; None if ``host`` fits."""
    from cryptography import x509  # only needed for ssl_verify=False

    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = san.get_values_for_type(x509.DNSName)
        ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        dns_names, ips = [], []
    try:
        if str(ipaddress.ip_address(host)) in ips:
            return None
    except ValueError:
        if host in dns_names:
            return None
    if dns_names:
        return dns_names[0].lstrip("*.") if dns_names[0].startswith("*.") else dns_names[0]
    common = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if common:
        return str(common[0].value)
    return ips[0] if ips else None


def split_host_port(target: str) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` / ``host`` (port 443) as a pair."""
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        return host, int(rest.lstrip(":") or 443)
    host, sep, port = target.rpartition(":")
    if not sep or ":" in host:
        return target, 443
    return host, int(port)


class GrpcTransport:
    """Sends Seldon v1 predict/feedback calls over one shared gRPC channel."""

    log = txaio.make_logger()  # type: ignore[attr-defined]

    def __init__(
        self,
        config: BatchConfig,
        reactor: Any,
        *,
        mode: str = "aio",
        service: str = "Seldon",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if service not in SERVICES:
            raise ValueError(f"service must be one of {SERVICES}, not {service!r}")
        self._config = config
        self._reactor = reactor
        self._mode = mode
        self._service = service
        self._channel: grpc.Channel | None = None
        self._call: Any = None  # the stub's multi-callable for the configured method
        self._aio: AioCaller | None = None  # mode "aio": the loop thread that owns the channel
        self._pool: ThreadPool | None = None
        self._shutdown_trigger: Any = None
        self._running = False
        # ssl_verify=False without ca_cert: the channel opens once the certificate is fetched
        self._trust_on_first_use = config.use_ssl and not config.ssl_verify and not config.ca_cert
        self._waiting: list[Deferred[None]] | None = None  # sends waiting for that
        self._build: Callable[[JSONDict], Any] = (
            feedback_from_dict if config.method == "feedback" else message_from_dict
        )
        self._metadata = self._base_metadata(config)
        self._convert: Callable[[Any], JSONDict] = response_to_dict
        if config.protocol == "v2":  # Open Inference Protocol: inference.GRPCInferenceService/ModelInfer
            self._build = grpc_v2_messages.request_builder(model_name(config), config.model_version)
            self._convert = grpc_v2_messages.response_to_dict

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
        """Open the channel (and the thread pool in ``threads`` mode)."""
        config = self._config
        if self._mode == "threads":
            self._pool = ThreadPool(
                minthreads=config.workers, maxthreads=config.workers, name="grpc-transport"
            )
            self._pool.start()
            # Pool threads are not daemons: stop them even if nobody calls stop().
            self._shutdown_trigger = self._reactor.addSystemEventTrigger(
                "during", "shutdown", self._pool.stop
            )
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
        options = channel_options(config)
        credentials = None
        if config.use_ssl:
            if name_override:
                options.append(("grpc.ssl_target_name_override", name_override))
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        if self._mode == "aio":
            self._aio = AioCaller(self._reactor)

            def open_channel() -> grpc.aio.Channel:  # on the loop thread
                if credentials is None:
                    return grpc.aio.insecure_channel(config.host, options=options)
                return grpc.aio.secure_channel(config.host, credentials, options=options)

            self._aio.start(open_channel, self._multi_callable)
            self._call = self._aio
        else:
            if credentials is None:
                self._channel = grpc.insecure_channel(config.host, options=options)
            else:
                self._channel = grpc.secure_channel(config.host, credentials, options=options)
            self._call = self._multi_callable(self._channel)
        self.log.info(
            "gRPC channel to {host} open (tls={tls}, service={service}, method={method}, mode={mode})",
            host=config.host,
            tls=config.use_ssl,
            service=self._service,
            method=config.method,
            mode=self._mode,
        )

    def _multi_callable(self, channel: Any) -> Any:
        """The stub method for the configured service, method and protocol (sync or aio channel)."""
        if self._config.protocol == "v2":
            return grpc_v2_messages.model_infer_call(channel)
        stub: Any = (
            prediction_pb2_grpc.SeldonStub(channel)
            if self._service == "Seldon"
            else prediction_pb2_grpc.ModelStub(channel)
        )
        return stub.SendFeedback if self._config.method == "feedback" else stub.Predict

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
        """Close the channel (in-flight calls fail with CANCELLED) and join the pool's threads."""
        self._running = False
        channel, self._channel, self._call = self._channel, None, None
        if channel is not None:
            channel.close()
        aio, self._aio = self._aio, None
        if aio is not None:
            return aio.stop()
        pool, self._pool = self._pool, None
        if pool is None:
            return succeed(None)
        if self._shutdown_trigger is not None:
            self._reactor.removeSystemEventTrigger(self._shutdown_trigger)
            self._shutdown_trigger = None
        done: Deferred[None] = Deferred()

        def join() -> None:
            pool.stop()
            self._reactor.callFromThread(done.callback, None)

        threading.Thread(target=join, name="grpc-transport-stop", daemon=True).start()
        return done

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
            request = self._build(body)
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
        if self._aio is not None:
            return self._aio.call(request, self._config.timeout, metadata).addCallback(self._aio_outcome)
        if self._mode == "threads":
            assert self._pool is not None
            return deferToThreadPool(self._reactor, self._pool, self._blocking_call, request, metadata)
        return self._future_call(request, metadata)

    def _failure(self, error: grpc.RpcError) -> RequestFailed:
        return rpc_failure(error, self._config.max_response_bytes)

    def _converted(self, response: Any) -> JSONDict:
        """The REST-shaped answer; any conversion error is this call's RequestFailed."""
        try:
            return self._convert(response)
        except RequestFailed:
            raise
        except Exception as e:  # noqa: BLE001
            raise internal_failure(e) from None

    def _aio_outcome(self, outcome: tuple[bool, Any]) -> JSONDict:
        """On the reactor thread: the converted response, or the call's failure raised."""
        ok, value = outcome
        if ok:
            return self._converted(value)
        if isinstance(value, grpc.RpcError):
            raise self._failure(value)
        if isinstance(value, CancelledError):
            raise value
        raise RequestFailed("bad_response", f"gRPC call failed: {value!r}", info="bad_response")

    def _blocking_call(self, request: Any, metadata: tuple[tuple[str, str], ...]) -> JSONDict:
        """Runs in the dedicated pool."""
        try:
            response = self._call(request, timeout=self._config.timeout, metadata=metadata)
        except grpc.RpcError as error:
            raise self._failure(error) from None
        except ValueError as error:  # the channel was closed meanwhile
            raise RequestFailed("connection", f"gRPC channel unusable: {error}", info="connection") from None
        except Exception as e:  # noqa: BLE001
            raise internal_failure(e) from None
        return self._converted(response)

    def _future_call(self, request: Any, metadata: tuple[tuple[str, str], ...]) -> Deferred[JSONDict]:
        try:
            future = self._call.future(request, timeout=self._config.timeout, metadata=metadata)
        except grpc.RpcError as error:
            return fail(self._failure(error))
        except ValueError as error:  # e.g. the channel was closed meanwhile
            return fail(RequestFailed("connection", f"gRPC channel unusable: {error}", info="connection"))
        d: Deferred[JSONDict] = Deferred(lambda _: future.cancel())
        future.add_done_callback(
            lambda f: self._reactor.callFromThread(self._deliver, d, f)
        )
        return d

    def _deliver(self, d: Deferred[JSONDict], future: Any) -> None:
        """On the reactor thread: fire ``d`` from the finished gRPC future."""
        if d.called:  # cancelled by the caller meanwhile
            return
        try:
            if future.cancelled():
                d.errback(CancelledError("gRPC call cancelled"))
                return
            error = future.exception()
            if error is not None:
                if isinstance(error, grpc.RpcError):
                    d.errback(self._failure(error))
                else:  # e.g. an undecodable response: still one failed request, not a crash
                    d.errback(RequestFailed("bad_response", f"gRPC call failed: {error!r}", info="bad_response"))
                return
            result = self._converted(future.result())
        except RequestFailed as e:
            d.errback(e)
        except Exception as e:  # noqa: BLE001 - a bug: still this call's answer
            d.errback(internal_failure(e))
        else:
            d.callback(result)
