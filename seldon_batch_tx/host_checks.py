"""The rule for ``--host``: a host[:port], an [IPv6]:port, or (with ``--transport grpc``) a gRPC
name-resolver target, checked once here for options, sidecars and the configuration alike.

Split from :mod:`.checks` (the coerce functions of every option) because an address has rules of its
own: ports, IPv6 brackets and zone ids, ASCII names, resolver schemes and address lists.
"""

from __future__ import annotations

import ipaddress

from .checks import shown

#: gRPC name-resolver schemes ``--host`` takes with ``--transport grpc``; such targets go to grpc unchanged.
GRPC_SCHEMES = ("dns", "ipv4", "ipv6")
#: Longest ``--host`` (an ``ipv4:`` list of ~180 addresses); longer is a wrong value, not a target.
MAX_HOST_CHARS = 4096
#: Longest DNS name (RFC 1035).
MAX_NAME_CHARS = 253
_TARGET_FORMS = "dns:///NAME[:PORT], ipv4:ADDR:PORT[,ADDR:PORT...] or ipv6:[ADDR]:PORT[,...]"


def grpc_scheme(value: str) -> str | None:
    """The gRPC resolver scheme ``value`` is written in (``dns``, ``ipv4``, ``ipv6``), or None for a host.

    Only a port after the colon (``dns:80``) is the host named ``dns`` on port 80, as it always was.
    """
    scheme, colon, rest = value.partition(":")
    if not colon or scheme.lower() not in GRPC_SCHEMES or (rest.isascii() and rest.isdigit()):
        return None
    return scheme.lower()


def host_transport_problem(host: str, transport: str) -> str | None:
    """Why ``host`` does not fit ``transport``, or None: the one rule, for options, config and sidecars.

    A resolver target names gRPC's own resolver (and its round_robin over every address); REST has none.
    """
    scheme = grpc_scheme(host)
    if scheme is not None and transport != "grpc":
        return f"a gRPC {scheme}: target needs --transport grpc (REST takes host[:port] or [IPv6]:port)"
    return None


def _port(port: str) -> None:
    if not port.isascii() or not port.isdigit() or len(port) > 5:
        raise ValueError(f"port {shown(port)} is not a number")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"port {port} is not in 1-65535")


def _ipv6(address: str) -> None:
    """An IPv6 address without a zone id: ``ipaddress`` takes any text after ``%``, and in a URL that text
    can turn what follows into another host (``[fd00::9%@[::1]:80]``) or break the URL's parsing."""
    if "%" in address:
        raise ValueError(f"{shown(address)}: zone ids (%) are not supported")
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        raise ValueError(f"{shown(address)} is not an IPv6 address") from None


def _plain_host_port(value: str) -> None:
    """``host``, ``host:port`` or ``[v6]:port``: the form REST and gRPC's default resolver both take."""
    port: str | None
    if value.startswith("["):
        address, closed, rest = value[1:].partition("]")
        if not closed:
            raise ValueError("an IPv6 address needs its closing ]")
        _ipv6(address)
        if rest and not rest.startswith(":"):
            raise ValueError("only :PORT may follow the ]")
        port = rest[1:] if rest else None
    else:
        host, colon, after = value.rpartition(":")
        host, port = (host, after) if colon else (value, None)
        if ":" in host:
            raise ValueError("an IPv6 address must be in brackets, e.g. [::1]:9000")
        if not host:
            raise ValueError("no host name before the port")
        if not host.isascii():
            raise ValueError(f"{shown(host)} is not ASCII (an internationalised name goes in its xn-- form)")
        if not all(c.isalnum() or c in "-._" for c in host) or host.startswith(("-", ".")):
            raise ValueError(f"{shown(host)} is not a host name")
        if len(host) > MAX_NAME_CHARS:
            raise ValueError(f"the host name is longer than {MAX_NAME_CHARS} characters")
    if port is not None:
        _port(port)


def _dns_target(rest: str) -> None:
    """After ``dns:``: ``//[SERVER]/NAME[:PORT]`` or ``NAME[:PORT]`` (gRPC's own grammar; port 443 if none)."""
    name = rest
    if rest.startswith("//"):
        server, slash, name = rest[2:].partition("/")
        if not slash:
            raise ValueError("dns://SERVER must be followed by /NAME[:PORT] (dns:///NAME[:PORT] uses the "
                             "system's DNS)")
        if server:
            try:
                _plain_host_port(server)
            except ValueError as e:
                raise ValueError(f"DNS server: {e}") from None
    if not name:
        raise ValueError("no name to resolve: write dns:///NAME[:PORT]")
    _plain_host_port(name)


def _address_list(scheme: str, rest: str) -> None:
    """After ``ipv4:``/``ipv6:``: gRPC's static list of ``ADDR:PORT``/``[ADDR]:PORT`` (gRPC needs each port)."""
    if not rest:
        raise ValueError(f"no address after {scheme}:")
    for item in rest.split(","):
        if not item:
            raise ValueError(f"an empty item in the {scheme}: address list")
        if scheme == "ipv4":
            address, colon, port = item.rpartition(":")
            if not colon:
                raise ValueError(f"{shown(item)} has no port (gRPC's ipv4: needs ADDR:PORT)")
            try:
                ipaddress.IPv4Address(address)
            except ValueError:
                raise ValueError(f"{shown(address)} is not an IPv4 address") from None
        else:
            if not item.startswith("["):
                raise ValueError(f"{shown(item)}: ipv6: addresses are written [ADDR]:PORT")
            address, closed, after = item[1:].partition("]")
            if not closed:
                raise ValueError("an IPv6 address needs its closing ]")
            _ipv6(address)
            if not after.startswith(":"):
                raise ValueError(f"{shown(item)} has no port (gRPC's ipv6: needs [ADDR]:PORT)")
            port = after[1:]
        _port(port)


def host_port(value: str) -> str:
    """Where the model is, returned unchanged: ``host``, ``host:port`` or ``[v6]:port`` (port 1..65535), or
    a gRPC name-resolver target (:data:`GRPC_SCHEMES`; only with ``--transport grpc``, see
    :func:`host_transport_problem`): ``dns:///NAME[:PORT]``, ``dns://SERVER/NAME[:PORT]``,
    ``ipv4:ADDR:PORT[,...]``, ``ipv6:[ADDR]:PORT[,...]``.
    """
    if not value:
        raise ValueError("must not be empty")
    if not value.isprintable() or any(c.isspace() for c in value):
        raise ValueError("contains a space, control character or line break")
    if len(value) > MAX_HOST_CHARS:
        raise ValueError(f"is longer than {MAX_HOST_CHARS} characters")
    if "@" in value:  # user:password@host: the reason must not quote it either
        raise ValueError("holds a user part (user:password@): give host[:port]; credentials go in "
                         "--call-credentials-token or --header")
    scheme = grpc_scheme(value)
    if scheme == "dns":
        _dns_target(value[4:])
    elif scheme is not None:
        _address_list(scheme, value[5:])
    else:
        head, sep, after = value.partition(":")
        if sep and after.startswith("/") and head and all(c.isalnum() or c in "+.-" for c in head):
            raise ValueError(f"{head}: is not a target this tool takes: give host[:port] or [IPv6]:port, or "
                             f"with --transport grpc {_TARGET_FORMS}")
        _plain_host_port(value)
    return value
