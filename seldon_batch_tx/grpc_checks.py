"""gRPC's own rules, checked once at start (exit 2), not found per line: metadata and the DNS server.

Metadata: which ``--header`` values can travel as gRPC metadata.

gRPC is stricter than HTTP: keys are lower-case ``[0-9a-z_.-]`` (the client lower-cases them), keys
ending in ``-bin`` carry binary values that a text option cannot give, ``grpc-`` keys are gRPC's own,
values are printable ASCII without tabs, and servers accept at most 8 KiB of metadata by default
(``grpc.max_metadata_size``; HPACK counts 32 bytes per entry on top of name and value). Such a header
used to fail every call (and be retried); now it is one usage error (exit 2), or a sidecar's reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

#: gRPC's default limit on the metadata a server accepts.
MAX_METADATA_BYTES = 8192
#: What HPACK adds per entry when sizing a header list (RFC 7541, 4.1).
ENTRY_OVERHEAD = 32
#: Room kept for the metadata every call carries besides ``--header`` (seldon, namespace, seldon-puid,
#: x-auth-token's name, user agent, te, content-type, the path and authority).
RESERVED_BYTES = 1024
_KEY_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyz_.-")


def grpc_metadata_problem(headers: Iterable[tuple[str, str]], token: str | None = None) -> str | None:
    """Why ``headers`` (and the call token) cannot be sent as gRPC metadata, or None. Never shows a value."""
    size = RESERVED_BYTES + (len(token) + ENTRY_OVERHEAD if token else 0)
    for name, value in headers:
        key = name.lower()
        size += len(key) + len(value) + ENTRY_OVERHEAD
        if key == "host":  # becomes the channel's :authority
            continue
        if not set(key) <= _KEY_CHARS:
            return (f"header {name}: a gRPC metadata key may hold only letters, digits and _ . - "
                    f"(it is sent lower-cased)")
        if key.endswith("-bin"):
            return f"header {name}: gRPC keys ending in -bin carry binary values, which --header cannot give"
        if key.startswith("grpc-"):
            return f"header {name}: keys starting with grpc- are reserved by gRPC"
        if not all(" " <= c <= "~" for c in value):
            return f"header {name}: a gRPC metadata value must be printable ASCII (no tab)"
    if size > MAX_METADATA_BYTES:
        return (f"the headers come to about {size:,} bytes of gRPC metadata; servers accept at most "
                f"{MAX_METADATA_BYTES:,} by default")
    return None


def grpc_resolver_problem(host: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Why ``dns://SERVER/NAME`` would not ask SERVER, or None.

    gRPC's c-ares resolver (grpcio's default) sends the queries to SERVER; its ``native`` resolver
    (``GRPC_DNS_RESOLVER=native``) uses the system's and ignores SERVER without a word. Either
    resolver answers names in ``/etc/hosts`` (``localhost``) from that file first, as the system does.
    """
    if not host.lower().startswith("dns://") or host[6:].startswith("/"):
        return None
    resolver = (os.environ if environ is None else environ).get("GRPC_DNS_RESOLVER", "").strip().lower()
    if resolver == "native":
        return ("dns://SERVER/NAME needs gRPC's c-ares resolver, but $GRPC_DNS_RESOLVER is native (which would "
                "ask the system's DNS instead): unset it, or write dns:///NAME")
    return None
