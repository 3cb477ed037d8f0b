"""What both REST clients share: the URL, TLS policy, CA bundle, body encoding, status classes.

The fast client (:mod:`.fast`) and the treq client (:mod:`.treq_client`) differ only in how
bytes move; everything that decides what a request is and what an answer means lives here, so
the two can never disagree: the URL (``http[s]://host`` + the codec's :class:`~..core.target.Target`
path), certificate checks (off, a ``--ca-cert`` bundle, or the system's roots), the strict
compact JSON of a request body, and :func:`classify` (2xx answers read by :mod:`..core.strict_json`
within :data:`~..core.strict_json.MAX_ANSWER_DEPTH` and checked for a model FAILURE by the codec's
rule; 429 and 5xx retryable, with ``Retry-After`` (the microservice's 500 for a model that raised is
``split_first``); other statuses final; redirects never followed, so a 3xx is an ``http_3xx`` line rather than
``X-Auth-Token`` sent elsewhere).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.defer import CancelledError, TimeoutError
from twisted.internet.error import ConnectError, ConnectionClosed, DNSLookupError
from twisted.internet.error import ConnectionRefusedError as Refused
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.web.client import BrowserLikePolicyForHTTPS, ResponseFailed
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from ..config import BatchConfig
from ..core import strict_json
from ..core.certificates import ca_certificates
from ..core.failures import RequestFailed, check_answer, model_raised, nested_too_deeply, not_finite
from ..core.strict_json import JSONDict
from ..core.target import Target
from .base import headers_too_large

#: The most of an answer's text an error reason quotes (a model's whole message, within reason).
MAX_REASON_CHARS = 4096
#: One shared C encoder; compact separators keep request bodies small.
_encode = strict_json.compact_bytes(ensure_ascii=True)


def model_url(config: BatchConfig, target: Target) -> str:
    """The model's URL: the scheme ``--ssl`` asks for, ``--host``, and the codec's path."""
    return f"{'https' if config.use_ssl else 'http'}://{config.host}{target.path}"


def encode_request(body: JSONDict, target: Target) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    """A request body as the target's protocol sends it (strict JSON unless it says otherwise), and
    the extra headers it needs; RequestFailed ``input_error`` when it cannot be."""
    if target.encode is None:
        return encode_body(body), ()
    try:
        return target.encode(body)
    except RecursionError:
        raise RequestFailed("input_error", "request nested too deeply to encode", info="input_error") from None
    except (TypeError, ValueError, OverflowError, KeyError, struct.error) as e:
        raise RequestFailed("input_error", f"cannot encode the request: {e}", info="input_error") from None


def encode_body(body: JSONDict) -> bytes:
    """A request body as strict compact JSON; RequestFailed ``input_error`` when it cannot be."""
    try:
        return _encode(body)
    except RecursionError:
        raise RequestFailed("input_error", "request nested too deeply to encode as JSON", info="input_error") from None
    except (TypeError, ValueError) as e:
        raise RequestFailed("input_error", f"cannot encode the request as JSON: {e}", info="input_error") from None


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
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS] + "..."


def _retry_after(value: bytes | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value.decode("ascii")))
    except ValueError:
        return None  # an HTTP date; the usual backoff applies


def classify(code: int, body: bytes, retry_after: bytes | None = None,
             decode: Callable[[bytes], tuple[Any, bytes]] | None = None) -> JSONDict:
    """The decoded answer of a 2xx (read by ``decode``, the target's, when given), or the
    RequestFailed an HTTP status (or a model FAILURE) means."""
    if 200 <= code < 300:
        try:
            if decode is None:
                decoded = strict_json.decode(body, any_encoding=True)
            else:
                decoded, body = decode(body)
        except strict_json.TooDeep:
            raise nested_too_deeply(code) from None
        except strict_json.NotFinite:
            raise not_finite(code) from None
        except ValueError:
            raise RequestFailed("bad_response", f"HTTP {code} with a body that is not JSON: {_excerpt(body)}",
                                code=code, retryable=True, info="bad_response") from None
        if not isinstance(decoded, dict):
            raise RequestFailed("bad_response", f"HTTP {code} with JSON that is not an object: {_excerpt(body)}",
                                code=code, retryable=True, info="bad_response")
        try:
            strict_json.check(decoded, body, strict_json.MAX_ANSWER_DEPTH)
        except strict_json.TooDeep:
            raise nested_too_deeply(code) from None
        except strict_json.NotFinite:
            raise not_finite(code) from None
        return check_answer(decoded, code, label="model_failure")
    retryable = code == 429 or code >= 500
    raise RequestFailed(f"http_{code}", f"HTTP {code}: {_excerpt(body)}", code=code, retryable=retryable,
                        retry_after=_retry_after(retry_after) if retryable else None, info=f"http_{code}",
                        split_first=code == 500 and model_raised(body))


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
        return RequestFailed("connection", f"cannot connect: {_connect_cause(failure)}", retryable=True,
                             info="connection")
    return RequestFailed("connection", f"{type(failure).__name__}: {failure}", retryable=True, info="connection")




def _connect_cause(failure: BaseException) -> str:
    """Twisted's words for the usual causes, said plainly ("Connection was refused by other side: 111:
    Connection refused." is "connection refused")."""
    if isinstance(failure, Refused):
        return "connection refused"
    if isinstance(failure, DNSLookupError):
        return f"the name does not resolve ({failure.args[0] if failure.args else ''})".replace(" ()", "")
    return " ".join(str(failure).split())


class HeadersTooLarge(Exception):
    """An answer's status line and headers went past :data:`~.base.MAX_HEADER_BYTES`."""
