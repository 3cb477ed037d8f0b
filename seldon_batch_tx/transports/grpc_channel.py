"""gRPC channel settings and status codes: options, failures as RequestFailed, trust on first use.

What a gRPC call's outcome means (:func:`rpc_failure`: retryable codes, our receive limit versus
the server's), the channel options every channel gets (:func:`channel_options`), and, for
``--no-ssl-verify``, fetching the server's certificate once to trust exactly it
(:func:`fetch_server_certificate`, :func:`certificate_name_for`).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from typing import Any

import grpc

from ..config import BatchConfig
from ..core.failures import RequestFailed, too_large
from ..host_checks import grpc_scheme

#: Codes worth another attempt: the server was unreachable, too slow or shedding load.
RETRYABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)

MAX_MESSAGE_BYTES = 100 * 1024 * 1024

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


#: Each channel its own subchannel (connection): grpcio's global subchannel pool would otherwise
#: give every channel to one address the same connection, hence the same replica. ``round_robin``
#: spreads one channel's calls over every address its name resolves to (a headless Service's pods);
#: with one address it behaves like the default ``pick_first``.
SPREAD_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.lb_policy_name", "round_robin"),
]

#: Default channels: twice the workers, within these bounds (see :func:`channel_count`).
MIN_CHANNELS, MAX_CHANNELS = 8, 64


def channel_count(config: BatchConfig) -> int:
    """``--grpc-channels``, or twice ``--workers`` within 8..64.

    Why more channels than calls in flight: the kernel (or a Service) places each connection on a
    replica at random, so the share of a replica is its share of connections. With 4 replicas, 16
    connections leave one under 8% of the work in ~23% of runs, 32 in ~3%, 64 in well under 1%;
    even a run with one worker then visits every replica in turn.
    """
    if config.grpc_channels:
        return int(config.grpc_channels)
    return min(max(2 * config.workers, MIN_CHANNELS), MAX_CHANNELS)


def channel_options(config: BatchConfig, tls_name: str | None = None) -> list[tuple[str, Any]]:
    """:data:`CHANNEL_OPTIONS` and :data:`SPREAD_OPTIONS`, the receive limit ``--max-response-bytes``, a
    ``Host`` authority and ``tls_name``, the name a trusted-on-first-use certificate is checked against.

    Without either, an ``ipv4:``/``ipv6:`` list's authority is its first address: grpc's own would be the
    whole list, which no certificate names (and which TLS then refuses). With ``tls_name`` grpc makes that
    name the authority itself.
    """
    options = [*CHANNEL_OPTIONS, *SPREAD_OPTIONS,
               ("grpc.max_receive_message_length", min(config.max_response_bytes, 2**31 - 1))]
    authority = [v for k, v in config.headers if k.lower() == "host"]
    if not authority and not tls_name and grpc_scheme(config.host) in ("ipv4", "ipv6"):
        authority = [first_listed(config.host)]
    options += [("grpc.default_authority", v) for v in authority]
    if tls_name:
        options.append(("grpc.ssl_target_name_override", tls_name))
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


def grpc_target(host: str) -> str:
    """What grpc is given for ``--host``: a resolver target (``dns:``, ``ipv4:``, ``ipv6:``) unchanged, and
    ``host[:port]`` as ``dns:///host[:port]``.

    The prefix is what grpc adds to a bare name itself; written out, a host named like one of grpc's
    schemes (``dns:80``, ``unix:80``) stays that host instead of becoming a resolver or a socket path.
    """
    return host if grpc_scheme(host) is not None else f"dns:///{host}"


def first_listed(target: str) -> str:
    """The first ``ADDR:PORT`` / ``[ADDR]:PORT`` of an ``ipv4:``/``ipv6:`` list."""
    return target[len("ipv4:"):].split(",")[0]


def split_host_port(target: str) -> tuple[str, int]:
    """The one ``(host, port)`` to fetch a TLS certificate from for ``--host`` (443 when no port is given).

    ``host:port`` / ``[v6]:port`` / ``host``; for a resolver target the ``NAME[:PORT]`` of ``dns:`` (looked up
    with the system's resolver, also for ``dns://SERVER/``) and the first address of an ``ipv4:``/``ipv6:``
    list: every replica behind one target is expected to present the same certificate.
    """
    scheme = grpc_scheme(target)
    if scheme == "dns":
        rest = target[4:]
        target = rest[2:].partition("/")[2] if rest.startswith("//") else rest
    elif scheme is not None:
        target = first_listed(target)
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        return host, int(rest.lstrip(":") or 443)
    host, sep, port = target.rpartition(":")
    if not sep or ":" in host:
        return target, 443
    return host, int(port)
