"""The failure of one request and its kinds, shared by protocols, transports and the pipeline.

Every failure of an attempt is a :class:`RequestFailed` with a short stable ``kind`` (the label
counters use) and a reason a person can act on; :func:`check_answer` is the one model-FAILURE check
of every protocol and transport.
"""

from __future__ import annotations

import json

from .strict_json import JSONDict


class RequestFailed(Exception):
    """One attempt failed; the engine decides from ``retryable`` whether to try again.

    ``code`` is the HTTP status (REST) or the numeric gRPC status code, ``None`` when the
    failure happened before any status (connection refused, reset, timeout).
    ``kind`` is a short stable label used for counters: ``http_503``, ``connection``,
    ``timeout``, ``grpc_UNAVAILABLE``, ``bad_response``, ``response_too_large``,
    ``model_failure``, ``input_error``, ``input_too_large``, ``internal_error``.
    ``reason`` is a sentence a person can act on. ``split_first``: a retryable fault that may be about
    what the request carries (a model's exception): a request of several lines is split at once (the
    engine's halving isolates the lines that make it fail), a request of one line is retried.
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
        split_first: bool = False,
    ) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.code = code
        self.retryable = retryable
        self.retry_after = retry_after
        self.info = info
        self.split_first = split_first


def too_large(limit: int) -> RequestFailed:
    """An answer past ``--max-response-bytes``: the same answer would come again, so no retry."""
    return RequestFailed("response_too_large", f"answer larger than --max-response-bytes {limit}",
                         retryable=False, info="response_too_large")


def nested_too_deeply(code: int | None = None) -> RequestFailed:
    """A JSON answer nested deeper than :data:`.strict_json.MAX_ANSWER_DEPTH` (or than Python can decode)."""
    return RequestFailed("bad_response", "answer nested too deeply", code=code, retryable=False,
                         info="bad_response")


def not_finite(code: int | None = None) -> RequestFailed:
    """An answer holding NaN or an infinity: no output line could carry it as strict JSON."""
    return RequestFailed("bad_response", "answer holds a number JSON cannot carry (NaN or Infinity)", code=code,
                         retryable=False, info="bad_response")


def internal_failure(error: BaseException) -> RequestFailed:
    """A bug met while handling one request: that request's error line, never a lost call."""
    return RequestFailed("internal_error", f"{type(error).__name__}: {error}", info="internal_error")


def check_answer(answer: JSONDict, code: int | None = None, label: str | None = None) -> JSONDict:
    """``answer``, unless its ``status`` says the model failed: the one model-FAILURE check of
    every protocol and transport, a RequestFailed never retried (the model would fail again).

    Its code is the status's (a non-zero integer), else ``code`` (the HTTP status); its reason
    the status's ``reason``, else its ``info``; its ``info`` is ``label`` when the transport
    labels its failures by kind (REST), else the status's own ``info``.
    """
    status = answer.get("status")
    if not isinstance(status, dict) or status.get("status") != "FAILURE":
        return answer
    model_code, info, reason = status.get("code"), status.get("info"), status.get("reason")
    info = info if isinstance(info, str) else ""
    if not (isinstance(reason, str) and reason):
        reason = info or "the model answered with status FAILURE"
    raise RequestFailed("model_failure", reason, code=model_code if type(model_code) is int and model_code else code,
                        retryable=False, info=info if label is None else label)


def model_raised(body: bytes) -> bool:
    """Whether an HTTP 500's body is the Seldon microservice's word that the model raised
    (``{"status": {"reason": "MICROSERVICE_INTERNAL_ERROR"}}``): what its gRPC side says with UNKNOWN,
    about these lines (a ragged or mistyped array, a value the model refuses), not a server fault."""
    if b"MICROSERVICE_INTERNAL_ERROR" not in body:
        return False
    try:
        status = json.loads(body).get("status")
    except (ValueError, AttributeError, RecursionError):
        return False
    return isinstance(status, dict) and status.get("reason") == "MICROSERVICE_INTERNAL_ERROR"
