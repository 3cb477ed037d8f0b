"""What every transport (REST, gRPC) promises the engine.

A transport only moves one already-built JSON request to the model and brings back the
decoded JSON response; it knows nothing of files, tags or retries.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred

JSONDict = dict[str, Any]


class RequestFailed(Exception):
    """One attempt failed; the engine decides from ``retryable`` whether to try again.

    ``code`` is the HTTP status (REST) or the numeric gRPC status code, ``None`` when the
    failure happened before any status (connection refused, reset, timeout).
    ``kind`` is a short stable label used for counters: ``http_503``, ``connection``,
    ``timeout``, ``grpc_UNAVAILABLE``, ``bad_response``.
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
