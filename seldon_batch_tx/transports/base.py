"""What every transport (REST, gRPC) promises the engine, and :func:`make_transport`.

A transport only moves one already-built JSON request to where the codec's
:class:`~seldon_batch_tx.protocols.base.Target` says and brings back the decoded JSON response;
it knows nothing of protocols, files, tags or retries. A fourth transport is a module beside
``fast.py``, ``treq_client.py`` and ``grpc_client.py`` (taking ``config``, ``reactor`` and a
``target``) and one branch in :func:`make_transport`.

What every transport guarantees, whatever the server sends: each ``send`` fires within
``config.timeout`` (gRPC: plus a second of guard slack); it fails only with
:class:`RequestFailed` (or CancelledError when the caller cancelled it); an answer is never
held past ``config.max_response_bytes`` (``response_too_large``, not retried, the connection
dropped) nor nested past :data:`~seldon_batch_tx.strict_json.MAX_ANSWER_DEPTH` nor holding NaN or an infinity
(``bad_response``: no output line could carry it as strict JSON); a body that cannot be
encoded is ``input_error``; a bug met while handling an answer is that call's ``internal_error``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred

from ..config import BatchConfig

if TYPE_CHECKING:
    from ..protocols.base import Target

JSONDict = dict[str, Any]

#: Largest status line plus headers of an HTTP answer: a server whose headers never end fails
#: the request instead of filling memory until the timeout.
MAX_HEADER_BYTES = 256 * 1024


class RequestFailed(Exception):
    """One attempt failed; the engine decides from ``retryable`` whether to try again.

    ``code`` is the HTTP status (REST) or the numeric gRPC status code, ``None`` when the
    failure happened before any status (connection refused, reset, timeout).
    ``kind`` is a short stable label used for counters: ``http_503``, ``connection``,
    ``timeout``, ``grpc_UNAVAILABLE``, ``bad_response``, ``response_too_large``,
    ``model_failure``, ``input_error``, ``input_too_large``, ``internal_error``.
    ``reason`` is a sentence a person can act on.
    """

    def __init__(
        self,
        kind: str,
        reason: str,
        *,
        code: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        info: str = "",
    ) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.code = code
        self.retryable = retryable
        self.retry_after = retry_after
        self.info = info


class Transport(Protocol):
    """Sends one request body for the configured method (predict or feedback)."""

    def start(self) -> None:
        """Open pools/channels; called once before the first ``send``."""

    def stop(self) -> Deferred[None]:
        """Close pools/channels; fires when they are closed."""

    def send(self, body: JSONDict, puid: str) -> Deferred[JSONDict]:
        """Send ``body``; fire with the response JSON or fail with :class:`RequestFailed`."""


def too_large(limit: int) -> RequestFailed:
    """An answer past ``--max-response-bytes``: the same answer would come again, so no retry."""
    return RequestFailed("response_too_large", f"answer larger than --max-response-bytes {limit}",
                         retryable=False, info="response_too_large")


def headers_too_large() -> RequestFailed:
    """An answer whose status line and headers exceed :data:`MAX_HEADER_BYTES`."""
    return RequestFailed("response_too_large", f"answer headers larger than {MAX_HEADER_BYTES} bytes",
                         retryable=False, info="response_too_large")


def nested_too_deeply(code: int | None = None) -> RequestFailed:
    """A JSON answer nested deeper than :data:`MAX_ANSWER_DEPTH` (or than Python can decode)."""
    return RequestFailed("bad_response", "answer nested too deeply", code=code, retryable=False,
                         info="bad_response")


def not_finite(code: int | None = None) -> RequestFailed:
    """An answer holding NaN or an infinity: no output line could carry it as strict JSON."""
    return RequestFailed("bad_response", "answer holds a number JSON cannot carry (NaN or Infinity)", code=code,
                         retryable=False, info="bad_response")


def internal_failure(error: BaseException) -> RequestFailed:
    """A bug met while handling one request: that request's error line, never a lost call."""
    return RequestFailed("internal_error", f"{type(error).__name__}: {error}", info="internal_error")


def ca_certificates(path: str) -> list[bytes]:
    """The PEM of every certificate in the ``--ca-cert`` bundle at ``path`` (all of them are trusted).

    ValueError, naming the option, when the file holds no certificate.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    with open(path, "rb") as f:
        pem = f.read()
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as e:
        raise ValueError(f"--ca-cert {path}: not a PEM certificate bundle ({e})") from None
    return [c.public_bytes(Encoding.PEM) for c in certificates]


def target_for(config: BatchConfig, target: Target | None) -> Target:
    """``target``, or where the configured protocol's codec sends requests (decided by ``make_codec``)."""
    if target is not None:
        return target
    from ..protocols.base import make_codec

    return make_codec(config).target


def make_transport(config: BatchConfig, reactor: Any, target: Target | None = None) -> Transport:
    """The transport ``config.transport`` (and ``--http-client``) names, sending to ``target``
    (by default the configured codec's); gRPC is imported only when asked for."""
    if config.transport == "grpc":
        from .grpc_client import GrpcTransport

        return GrpcTransport(config, reactor, target=target)
    if config.http_client == "fast":
        from .fast import FastHttpTransport

        return FastHttpTransport(config, reactor, target=target)
    from .treq_client import RestTransport

    return RestTransport(config, reactor, target=target)
