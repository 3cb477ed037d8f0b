"""What the dashboard lets out, and to whom: the listener check, the token, the Host check, redaction.

Who may ask: a dashboard reachable from other hosts needs a token (:func:`check_endpoint`, before
anything starts); with a token every route but ``/health`` and ``/static/*`` needs it
(:func:`token_ok`); without one only requests whose ``Host`` is a loopback name or the address the
connection came in on are answered (:func:`host_allowed`), so a DNS-rebinding page cannot read the
dashboard through the victim's loopback.

What leaves: everything shown or exported goes through :func:`clean` first. File names come from
os.listdir (undecodable bytes arrive as lone surrogates U+DC80-U+DCFF) and batch ids from sidecar
JSON (any lone surrogate, quotes, newlines, any length); such text cannot be encoded as UTF-8, and
a server may echo a credential into an error reason. :func:`clean` makes text valid and bounded and
redacts the dashboard token and every batch's credentials (the rule is :mod:`..redaction`'s).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet.address import IPv4Address, IPv6Address

from ..redaction import MIN_SECRET, REDACTED, config_secrets, redact

__all__ = ["MIN_SECRET", "REDACTED", "clean", "config_secrets", "display_text", "public_id", "redact"]

if TYPE_CHECKING:
    from twisted.web.server import Request

DEFAULT_ENDPOINT = "tcp:8080:interface=127.0.0.1"
TOKEN_ENV = "SELDON_BATCH_DASHBOARD_TOKEN"
#: How to give the token, for ``twistd seldon-batch`` (whose options have it); ``seldon-batch-processor``
#: reads it from the environment only, and says so (:func:`check_endpoint`'s ``set_token``).
SET_TOKEN = f"--dashboard-token (or {TOKEN_ENV})"
#: Sent with every answer: no inline script, no framing, no sniffing, nothing cached.
SECURITY_HEADERS = {
    b"content-security-policy": b"default-src 'self'; script-src 'self'; style-src 'self'; "
                                b"img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"cache-control": b"no-store",
}
#: Longest text of one field the dashboard shows or exports; longer text is cut with a marker.
MAX_TEXT = 4096
#: Longest batch id the dashboard uses in links, the API and metric labels (longer: cut + hash).
MAX_ID = 200


# -- where it listens -------------------------------------------------------------------

def endpoint_is_loopback(description: str) -> bool:
    """True when a server endpoint string only accepts local connections.

    ``tcp``/``tcp6``/``ssl`` without ``interface=`` listen on every address, so they are
    not loopback; ``unix`` sockets are local. Unknown kinds count as non-loopback.
    """
    parts = [p.replace("\\:", ":") for p in re.split(r"(?<!\\):", description)]
    kind = parts[0].strip().lower()
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return False
    interface = ""
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if eq and key.strip() == "interface":
            interface = value.strip().strip("[]")
    if interface == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return False


def check_endpoint(description: str, token: str | None, set_token: str = SET_TOKEN) -> None:
    """Refuse, before anything starts, a dashboard reachable from other hosts without a token; the
    message tells to set ``set_token`` (what the command that refuses it reads)."""
    if not description or description.strip().lower() == "none":
        return
    if not endpoint_is_loopback(description) and not token:
        raise ValueError(f"the dashboard endpoint {description!r} is not loopback-only: set {set_token} "
                         "so that other hosts need the token")


def token_ok(request: Request, token: str) -> bool:
    """The request carries ``token`` in a header or the query string (constant-time compare)."""
    supplied: bytes | None = None
    auth = request.getHeader(b"authorization")
    if auth and auth[:7].lower() == b"bearer ":
        supplied = auth[7:].strip()
    supplied = supplied or request.getHeader(b"x-dashboard-token")
    if not supplied:
        values = (request.args or {}).get(b"token")
        supplied = values[0] if values else None
    return supplied is not None and hmac.compare_digest(supplied, token.encode("utf-8"))


def host_name(header: bytes) -> str | None:
    """The host part of a ``Host`` header, lower case, without port or brackets; None if malformed."""
    try:
        text = header.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return None
    port = ""
    if text.startswith("["):
        name, bracket, port = text[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            return None
        port = port[1:]
    elif text.count(":") == 1:
        name, _, port = text.partition(":")
    else:
        name = text  # a bare name, or a bare IPv6 address such as ::1
    if (port and not (port.isdigit() and port.isascii())) or not name:
        return None
    return name[:-1] if name.endswith(".") else name


def _address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def host_allowed(request: Request) -> bool:
    """The request's ``Host`` names this machine's loopback or the address it was received on.

    Connections over a unix socket pass: no browser page can open one, so no rebinding.
    """
    local = request.getHost()
    if not isinstance(local, IPv4Address | IPv6Address):
        return True
    header = request.getHeader(b"host")
    name = host_name(header) if header is not None else None
    if name is None:
        return False
    if name == "localhost":
        return True
    address = _address(name)
    if address is None:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    if address.is_loopback or (mapped is not None and mapped.is_loopback):
        return True
    bound = _address(local.host.split("%", 1)[0])
    return bound is not None and not bound.is_unspecified and address == bound


# -- untrusted text ----------------------------------------------------------------------

def _visible(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    if 0xD800 <= code <= 0xDFFF:  # any other lone surrogate
        return "\ufffd"
    return char


def display_text(value: str, limit: int | None = MAX_TEXT) -> str:
    """``value`` as text that always encodes to UTF-8, cut to about ``limit`` characters.

    Bytes that were not UTF-8 show as ``\\xNN`` (so two such names stay distinguishable), other
    lone surrogates as U+FFFD; everything else is kept (escaping is the renderer's job).
    """
    cut = 0
    if limit is not None and len(value) > limit:
        cut, value = len(value) - limit, value[:limit]
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = "".join(_visible(c) for c in value)
    return f"{value}…[{cut} more characters]" if cut else value


def public_id(batch_id: str) -> str:
    """The batch id as the dashboard uses it in links, the API and metric labels.

    Usually the id itself; an id that is not printable text (undecodable bytes, newlines or other
    controls, which HTML attributes and URLs mangle), too long, or not usable as a path segment
    (``""``, ``.``, ``..``) becomes its printable start plus a hash, so it stays unique.
    """
    if len(batch_id) <= MAX_ID and batch_id.isprintable() and batch_id not in ("", ".", ".."):
        return batch_id
    digest = hashlib.sha256(batch_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    head = "".join(c if c.isprintable() else "?" for c in batch_id[: MAX_ID - len(digest) - 1])
    return f"{head}~{digest}"


def clean(value: Any, secrets: Iterable[str] = ()) -> Any:
    """A JSON-ready copy of ``value`` safe to show: text made valid UTF-8 and bounded, secrets
    redacted, non-finite floats as ``None`` (strict JSON has no NaN), tuples as lists."""
    secrets = list(secrets)

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            return display_text(redact(item, secrets))
        if isinstance(item, dict):
            return {walk(k) if isinstance(k, str) else k: walk(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [walk(v) for v in item]
        if isinstance(item, float) and not math.isfinite(item):
            return None
        return item

    return walk(value)
