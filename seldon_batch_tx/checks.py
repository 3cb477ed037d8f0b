"""The checks behind every option: coerce functions, one-line errors and secret files.

Each coerce function turns the text of a flag or an environment variable into a value or raises
``ValueError`` with a short reason; :func:`option_error` makes that the one-line usage error
naming the option and its value (never a secret's). The daemon's sidecar files reuse them, so
whatever arrives there is checked by the same rules as the command line.
"""

from __future__ import annotations

import ipaddress
import math
import os
import stat
from collections.abc import Callable

from twisted.python import usage

from .redaction import show_path

TRUE_WORDS = frozenset({"true", "yes", "1", "on"})
FALSE_WORDS = frozenset({"false", "no", "0", "off"})
#: Largest secret file read (a token is a few hundred bytes; a bigger file is a wrong path).
MAX_SECRET_BYTES = 64 * 1024
#: RFC 9110 ``tchar``: the characters of a header name.
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
#: Headers the HTTP client writes itself: a second copy would change how the request is framed.
_CLIENT_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te",
                             "trailer", "proxy-connection"})
_SHOWN_CHARS = 100


def shown(value: str) -> str:
    """``value`` as it may appear in a one-line message: as is when plain, else escaped; long ones cut.

    ``repr`` escapes CR, LF, NUL and every other non-printable character, so the message stays one line.
    A URL is shown without its user part and query (:func:`.redaction.show_path`).
    """
    value = show_path(value)
    cut = value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS]
    plain = cut and cut.isprintable() and not any(c.isspace() or c in "'\"" for c in cut)
    text = cut if plain else repr(cut)
    return text if cut is value else f"{text}... ({len(value)} characters)"


def option_error(label: str, value: str | None, why: str, *, secret: bool = False,
                 origin: str | None = None) -> usage.UsageError:
    """The one-line usage error ``LABEL VALUE (from $VAR): WHY``; a secret's value is never shown.

    ``origin`` names the environment variable the value came from, if it did not come from a flag.
    """
    head = label if value is None else f"{label} {'(value not shown)' if secret else shown(value)}"
    if origin:
        head += f" (from ${origin})"
    return usage.UsageError(f"{head}: {why}")


def choice(*allowed: str) -> Callable[[str], str]:
    def coerce(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"not one of {', '.join(allowed)}")
        return value
    coerce.coerceDoc = f"One of: {'|'.join(allowed)}."  # type: ignore[attr-defined]
    return coerce


def whole_number(value: str) -> int:
    """An integer written in ASCII digits (``int`` alone also takes ``1_000`` and other scripts' digits)."""
    text = value.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not digits or not digits.isascii() or not digits.isdigit():
        raise ValueError("not a whole number")
    if len(digits) > 18:
        raise ValueError("too large")
    return int(text)


def at_least(minimum: int, most: int | None = None) -> Callable[[str], int]:
    def coerce(value: str) -> int:
        number = whole_number(value)
        if number < minimum:
            raise ValueError(f"must be at least {minimum}")
        if most is not None and number > most:
            raise ValueError(f"must be at most {most}")
        return number
    return coerce


def finite(value: str) -> float:
    """A finite number of seconds (``float`` alone also takes ``nan``, ``inf`` and ``1_0``)."""
    text = value.strip()
    if not text or not text.isascii() or "_" in text:
        raise ValueError("not a number")
    try:
        number = float(text)
    except ValueError:
        raise ValueError("not a number") from None
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    return number


def non_negative(value: str) -> float:
    number = finite(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def positive(value: str) -> float:
    number = finite(value)
    if number <= 0:
        raise ValueError("must be positive")
    return number


def optional_positive(value: str) -> float | None:
    return positive(value) if value.strip().lower() not in ("", "0", "none") else None


def linger(value: str) -> float | None:
    """Seconds, or ``forever`` (infinity); ``0``/``none``: no lingering."""
    if value.strip().lower() in ("forever", "inf", "infinity"):
        return math.inf
    return optional_positive(value)


def optional_int(value: str) -> int | None:
    return at_least(1)(value) if value.strip().lower() not in ("", "0", "none") else None


def text(value: str) -> str:
    """Free text (a batch id, a tensor name): non-empty and printable, so it fits one log line."""
    if not value:
        raise ValueError("must not be empty")
    if not value.isprintable():
        raise ValueError("contains a control character or line break")
    return value


def column_names(value: str) -> tuple[str, ...]:
    """``a,b,c``: table column names (``--columns``, ``--keep-columns``), each non-empty, none twice."""
    names = tuple(n.strip() for n in text(value).split(","))
    if not all(names):
        raise ValueError("an empty column name (write them as a,b,c)")
    if len(set(names)) != len(names):
        raise ValueError("a column named twice")
    return names


def path(value: str) -> str:
    """A file or directory path: non-empty, without NUL or line breaks."""
    if not value:
        raise ValueError("must not be empty")
    if any(c in value for c in "\0\r\n"):
        raise ValueError("contains a NUL or a line break")
    return value


def name_segment(value: str) -> str:
    """A name that becomes one URL path segment and gRPC metadata (deployment, namespace, model).

    Printable ASCII without whitespace, ``/``, ``?``, ``#``, ``%`` or ``\\`` and not ``.``/``..``: such a
    name cannot reach another path of the server or split a request line.
    """
    if not value:
        raise ValueError("must not be empty")
    if not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        raise ValueError("must be printable ASCII without spaces")
    bad = sorted({c for c in value if c in "/?#%\\"})
    if bad:
        raise ValueError(f"must not contain {' '.join(bad)}")
    if value in (".", ".."):
        raise ValueError("is not a name")
    return value


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


def secret_token(value: str) -> str:
    """A token sent in a header: printable ASCII without spaces (the message never shows it)."""
    if not value:
        raise ValueError("must not be empty")
    if not all("!" <= c <= "~" for c in value):
        raise ValueError("must be printable ASCII without spaces, control characters or line breaks")
    return value


def header_pair(line: str) -> tuple[str, str]:
    """One ``Name: Value``: a token name the client does not set itself, a printable ASCII value."""
    name, sep, value = line.partition(":")
    name, value = name.strip(" \t"), value.strip(" \t")
    if not sep or not name:
        raise ValueError("is not a header NAME:VALUE")
    if not all(c in _TOKEN_CHARS for c in name):
        raise ValueError(f"header name {shown(name)} may only hold letters, digits and !#$%&'*+-.^_`|~")
    if name.lower() in _CLIENT_HEADERS:
        raise ValueError(f"header {name} is set by the HTTP client itself")
    if not all(" " <= c <= "~" or c == "\t" for c in value):
        raise ValueError(f"the value of header {name} must be printable ASCII (no CR, LF, NUL or other "
                         "control characters)")
    return name, value


def header_pairs(value: str) -> tuple[tuple[str, str], ...]:
    """``Name: Value`` (several on separate lines, as in ``$SELDON_BATCH_HEADER``) as pairs.

    Only LF separates lines: a CR, NUL or other control character anywhere is refused, never
    turned into a second header.
    """
    return tuple(header_pair(line) for line in value.split("\n") if line.strip(" \t"))


def boolean(value: str) -> bool:
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError("not a boolean (true/false)")


def read_secret_file(label: str, file_path: str, *, origin: str | None = None) -> str:
    """The secret in ``file_path`` (one trailing newline stripped), or a usage error naming the file.

    Kubernetes mounts secrets as files (through symlinks, which are followed). The file is opened
    without blocking and must be a regular file, so a FIFO or a device never stalls the start.
    Errors name ``label`` and the path, never the content.
    """

    def error(why: str) -> usage.UsageError:
        return option_error(label, file_path, why, origin=origin)

    try:
        fd = os.open(file_path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise error(f"cannot be read ({e.strerror or e})") from None
    except ValueError:  # a NUL, or a lone surrogate no file name can hold
        raise error("is not a usable file name") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error("is not a regular file")
        data = os.read(fd, MAX_SECRET_BYTES + 1)
    except OSError as e:
        raise error(f"cannot be read ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_BYTES:
        raise error(f"is larger than {MAX_SECRET_BYTES} bytes")
    data = data[:-2] if data.endswith(b"\r\n") else data[:-1] if data.endswith(b"\n") else data
    if not data:
        raise error("is empty")
    try:
        secret = secret_token(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise error("must hold one token of printable ASCII without spaces, control characters or line "
                    "breaks (one trailing newline is allowed)") from None
    return secret


def ca_file_problem(file_path: str) -> str | None:
    """Why ``file_path`` cannot be the ``--ca-cert`` file, or None: checked before anything is sent."""
    if not (os.path.isfile(file_path) and os.access(file_path, os.R_OK)):
        return "the CA certificate file does not exist or is not readable"
    from .core.certificates import ca_certificates

    try:
        ca_certificates(file_path)
    except (ValueError, OSError):
        return "the file holds no PEM certificate"
    return None
