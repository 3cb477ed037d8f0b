"""What every transport (REST, gRPC) promises the engine.

A transport only moves one already-built JSON request to the model and brings back the
decoded JSON response; it knows nothing of files, tags or retries.

What every transport guarantees, whatever the server sends: each ``send`` fires within
``config.timeout`` (gRPC: plus a second of guard slack); it fails only with
:class:`RequestFailed` (or CancelledError when the caller cancelled it); an answer is never
held past ``config.max_response_bytes`` (``response_too_large``, not retried, the connection
dropped) nor nested past :data:`MAX_ANSWER_DEPTH` nor holding NaN or an infinity
(``bad_response``: no output line could carry it as strict JSON); a body that cannot be
encoded is ``input_error``; a bug met while handling an answer is that call's ``internal_error``.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred

JSONDict = dict[str, Any]

#: Deepest JSON nesting accepted in an answer: far beyond any model's output (an ndarray of 5
#: dimensions is 5 deep), and far enough inside Python's recursion limit (1,000 frames) that
#: decoding, converting and writing an accepted answer can never overflow the stack.
MAX_ANSWER_DEPTH = 512
#: Largest status line plus headers of an HTTP answer: a server whose headers never end fails
#: the request instead of filling memory until the timeout.
MAX_HEADER_BYTES = 256 * 1024
#: Every byte except JSON's brackets, for :func:`too_deep`'s quick bound.
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


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


def has_non_finite(value: Any, budget: int) -> bool:
    """Whether a decoded JSON value holds NaN or an infinity; iterative, at most ``budget`` values visited."""
    stack = [value]
    for _ in range(budget):
        if not stack:
            return False
        x = stack.pop()
        kind = type(x)
        if kind is float:
            if x - x != 0.0:  # NaN and the infinities; 0.0 for every finite float
                return True
        elif kind is list:
            stack.extend(x)
        elif kind is dict:
            stack.extend(x.values())
    return bool(stack)


def internal_failure(error: BaseException) -> RequestFailed:
    """A bug met while handling one request: that request's error line, never a lost call."""
    return RequestFailed("internal_error", f"{type(error).__name__}: {error}", info="internal_error")


def too_deep(value: Any, body: bytes, limit: int = MAX_ANSWER_DEPTH) -> bool:
    """Whether ``value`` (decoded from ``body``) nests lists and objects deeper than ``limit``.

    Cheap for the usual answer: fewer brackets than ``limit`` cannot nest that deep, and
    otherwise deleting the innermost bracket pairs pass by pass bounds the depth at C speed.
    Only when brackets inside strings spoil that bound are the decoded containers walked.
    """
    opens = body.count(b"[") + body.count(b"{")
    if opens <= limit:
        return False
    brackets = body.translate(None, _NOT_BRACKETS)
    for _ in range(limit):
        if not brackets:
            return False
        shorter = brackets.replace(b"[]", b"").replace(b"{}", b"")
        if len(shorter) == len(brackets):
            break  # brackets inside strings: walk the decoded value instead
        brackets = shorter
    stack: list[tuple[Any, int]] = [(value, 1)]
    for _ in range(opens + 1):  # each container is visited once, and there are at most ``opens``
        if not stack:
            return False
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if type(item) is dict else item if type(item) is list else ()
        stack.extend((x, depth + 1) for x in children if type(x) is list or type(x) is dict)
    return bool(stack)


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
