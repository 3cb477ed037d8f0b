"""The checks behind every option: coerce functions, one-line errors and secret files.

Each coerce function turns the text of a flag or an environment variable into a value or raises
``ValueError`` with a short reason; :func:`option_error` makes that the one-line usage error
naming the option and its value (never a secret's). The daemon's sidecar files reuse them, so
whatever arrives there is checked by the same rules as the command line.
"""

from __future__ import annotations

import math
import os
import re
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
    if value is not None and not secret and "@" in value:  # user:password@host: the user part is never shown
        value = re.sub(r"^([a-z][a-z0-9+.-]*://)?.*@", lambda m: f"{m.group(1) or ''}***@", value, flags=re.I | re.S)
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
        # not quoted: it may hold a credential whose header lacked its colon (``X-Api-Key=secret:1``)
        raise ValueError("a header name may only hold letters, digits and !#$%&'*+-.^_`|~")
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


def read_small_file(label: str, file_path: str, limit: int, *, origin: str | None = None) -> bytes:
    """At most ``limit`` bytes of the regular file ``file_path`` (symlinks followed), or a usage error
    naming ``label`` and the path, never the content. Opened without blocking, so a FIFO or a device
    never stalls the start."""

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
        data = os.read(fd, limit + 1)
    except OSError as e:
        raise error(f"cannot be read ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise error(f"is larger than {limit} bytes")
    return data


def read_secret_file(label: str, file_path: str, *, origin: str | None = None) -> str:
    """The secret in ``file_path`` (one trailing newline stripped), or a usage error naming the file.

    Kubernetes mounts secrets as files (through symlinks, which are followed). The file is opened
    without blocking and must be a regular file, so a FIFO or a device never stalls the start.
    Errors name ``label`` and the path, never the content.
    """

    def error(why: str) -> usage.UsageError:
        return option_error(label, file_path, why, origin=origin)

    data = read_small_file(label, file_path, MAX_SECRET_BYTES, origin=origin)
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
