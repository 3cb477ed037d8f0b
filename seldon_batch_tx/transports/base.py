"""What every transport (REST, gRPC) promises the engine.

A transport only moves one already-built JSON request to where the codec's
:class:`~seldon_batch_tx.core.target.Target` says and brings back the decoded JSON response;
it knows nothing of protocols, files, tags or retries. A fourth transport is a module beside
``fast.py``, ``treq_client.py`` and ``grpc_client.py`` (taking ``config``, ``reactor`` and a
``target``) and one branch in :func:`.choose.make_transport`.

What every transport guarantees, whatever the server sends: each ``send`` fires within
``config.timeout`` (gRPC: plus a second of guard slack); it fails only with
:class:`RequestFailed` (or CancelledError when the caller cancelled it); an answer is never
held past ``config.max_response_bytes`` (``response_too_large``, not retried, the connection
dropped) nor nested past :data:`~seldon_batch_tx.core.strict_json.MAX_ANSWER_DEPTH` nor holding NaN or an infinity
(``bad_response``: no output line could carry it as strict JSON); a body that cannot be
encoded is ``input_error``; a bug met while handling an answer is that call's ``internal_error``.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred

from ..core.failures import RequestFailed
from ..core.strict_json import JSONDict

#: Largest status line plus headers of an HTTP answer: a server whose headers never end fails
#: the request instead of filling memory until the timeout.
MAX_HEADER_BYTES = 256 * 1024


class Transport(Protocol):
    """Sends one request body for the configured method (predict or feedback)."""

    def start(self) -> None:
        """Open pools/channels; called once before the first ``send``."""

    def stop(self) -> Deferred[None]:
        """Close pools/channels; fires when they are closed."""

    def send(self, body: JSONDict, puid: str) -> Deferred[JSONDict]:
        """Send ``body``; fire with the response JSON or fail with :class:`RequestFailed`."""


def headers_too_large() -> RequestFailed:
    """An answer whose status line and headers exceed :data:`MAX_HEADER_BYTES`."""
    return RequestFailed("response_too_large", f"answer headers larger than {MAX_HEADER_BYTES} bytes",
                         retryable=False, info="response_too_large")
