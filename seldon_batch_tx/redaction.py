"""The one place that decides what of a path, a URL or a credential may be shown.

Two rules, used by every surface (logs, summaries, outputs, dashboard pages, the JSON API,
/metrics labels, download names):

* a path or URL is shown through :func:`show_path`: a URL's user part and query (where presigned
  URLs carry their signatures) are never shown; a batch's name is :func:`batch_name`, the last
  segment of that redacted form's path;
* the run's credentials (:func:`config_secrets`: ``--call-credentials-token``, values of secret
  ``--header`` names, secret ``--storage-options`` values) are replaced by ``[redacted]`` wherever
  a server's answer quotes them. :class:`Secrets` does that with one substring search per secret
  on the encoded bytes of a line, and nothing at all when no secret is configured.

This module sits at the bottom: it imports nothing of the package.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

REDACTED = "[redacted]"
#: What replaces a URL's user part or query.
HIDDEN = "***"
#: Shorter secrets are not searched for: redacting every "ab" would mangle the text, not protect it.
MIN_SECRET = 4
#: Header names whose values are credentials (matched as lower-case substrings).
SECRET_HEADER_PARTS = ("auth", "token", "key", "secret", "password", "passwd", "cookie", "credential",
                       "session", "signature")
#: ``--storage-options`` keys whose values are never shown (matched as lower-case substrings).
SECRET_OPTION_WORDS = ("secret", "token", "password", "passwd", "credential", "key", "sas", "signature", "auth")

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


# -- paths and URLs ----------------------------------------------------------------------

def is_url(path: str) -> bool:
    """Whether ``path`` is written as a URL (``scheme://...``), ``file://`` included."""
    return _URL.match(path) is not None


def show_path(path: str) -> str:
    """``path`` as anything may show it: a URL's user part and query become ``***``, its fragment
    is dropped; a plain path is unchanged."""
    if not is_url(path):
        return path
    try:
        parts = urlsplit(path)
    except ValueError:  # e.g. an unbalanced "[" in the host: show the scheme only
        return f"{path.split('://', 1)[0]}://{HIDDEN}"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{HIDDEN}@{netloc.rsplit('@', 1)[1]}"
    # Written out rather than through urlunsplit, which drops the "//" of an empty host
    # (`dns:///name` would be shown as `dns:/name`).
    query = f"?{HIDDEN}" if parts.query else ""
    return f"{parts.scheme}://{netloc}{parts.path}{query}"


def batch_name(path: str) -> str:
    """The name a batch is shown under: the last segment of ``path`` (of a URL's path only, so
    never its query or user part)."""
    if is_url(path):
        try:
            path = urlsplit(path).path
        except ValueError:
            return HIDDEN
    return os.path.basename(path.rstrip("/")) or path


# -- credentials -------------------------------------------------------------------------

def is_secret_option(name: str) -> bool:
    """Whether a storage option named ``name`` may hold a secret (its value is never shown)."""
    lowered = name.lower()
    return any(word in lowered for word in SECRET_OPTION_WORDS)


def header_secrets(headers: Iterable[tuple[str, str]]) -> list[str]:
    """Values of credential-like headers, and the credential alone of ``Scheme CREDENTIAL`` values."""
    found = []
    for name, value in headers:
        if any(part in name.lower() for part in SECRET_HEADER_PARTS):
            found.append(value.strip())
            scheme, _, credential = value.strip().partition(" ")
            if credential and scheme.isalpha():  # "Bearer X", "Basic X": X alone is the secret too
                found.append(credential.strip())
    return found


def option_secrets(options: Any, secret: bool = False) -> list[str]:
    """String values under secret-looking keys of parsed ``--storage-options`` (nested too)."""
    if isinstance(options, dict):
        return [s for k, v in options.items() for s in option_secrets(v, secret or is_secret_option(str(k)))]
    if isinstance(options, list | tuple):
        return [s for v in options for s in option_secrets(v, secret)]
    return [options] if secret and isinstance(options, str) else []


def config_secrets(config: Any) -> list[str]:
    """Every credential a run's config holds (a ``BatchConfig``, or None for none)."""
    if config is None:
        return []
    found = [getattr(config, "call_credentials_token", None) or ""]
    found += header_secrets(getattr(config, "headers", ()) or ())
    text = getattr(config, "storage_options", None)
    if text:
        with contextlib.suppress(ValueError):  # refused by the option check before any run
            found += option_secrets(json.loads(text))
    return [s for s in found if len(s) >= MIN_SECRET]


_ESCAPE = re.compile(r'\\(u[0-9a-fA-F]{4}|["\\/bfnrt])')
_ESCAPED = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def unescaped(value: str) -> str:
    """``value`` with JSON escapes (``\\u0041``, ``\\/``) and percent-encoding undone: how a server
    may quote a credential in the text of an error it answers (a reason quotes that text as is)."""
    if "\\" in value:
        value = _ESCAPE.sub(lambda m: chr(int(m[1][1:], 16)) if m[1][0] == "u" else _ESCAPED.get(m[1], m[1]), value)
        # a surrogate pair (\\ud83d\\ude00) is one character
        value = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    return unquote(value) if "%" in value else value


def redact(value: str, secrets: Iterable[str], _rounds: int = 4) -> str:
    """``value`` with every occurrence of a secret replaced (longest first, so none leaks in part);
    when a secret is there only escaped or percent-encoded (even twice), the unescaped text with it replaced;
    an excerpt cut inside a secret (ending ``...``) with the secret's first characters replaced."""
    ordered = [s for s in sorted(set(secrets), key=len, reverse=True) if len(s) >= MIN_SECRET]
    for secret in ordered:
        if secret in value:
            value = value.replace(secret, REDACTED)
    if value.endswith("..."):  # an excerpt cut inside a secret ends with its first characters
        for secret in ordered:
            cut = next((n for n in range(len(secret) - 1, MIN_SECRET - 1, -1) if value.endswith(secret[:n] + "...")), 0)
            if cut:
                value = value[:-cut - 3] + REDACTED + "..."
                break
    plain = value
    for _ in range(_rounds):
        if "\\" not in plain and "%" not in plain:
            break
        further = unescaped(plain)
        if further == plain:
            break
        plain = further
        if any(secret in plain for secret in ordered):
            return redact(plain, ordered, _rounds - 1) if _rounds > 1 else REDACTED
    return value


class SecretInAnswer(ValueError):
    """A credential sits in an output line where ``[redacted]`` cannot stand (outside a JSON string)."""


class Secrets:
    """A run's credentials, ready to be searched for in text and in encoded JSON lines.

    Falsy when there are none, so a caller can skip the search entirely.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.values = tuple(sorted({s for s in secrets if len(s) >= MIN_SECRET}, key=len, reverse=True))
        needles: set[bytes] = set()
        for secret in self.values:
            needles.add(secret.encode("utf-8", "surrogatepass"))
            needles.add(json.dumps(secret, ensure_ascii=False)[1:-1].encode("utf-8", "surrogatepass"))
            needles.add(json.dumps(secret)[1:-1].encode("ascii"))
        self._needles = tuple(sorted(needles, key=len, reverse=True))
        self._redacted = REDACTED.encode("ascii")

    @classmethod
    def of(cls, config: Any) -> Secrets:
        return cls(config_secrets(config))

    def __bool__(self) -> bool:
        return bool(self.values)

    def text(self, value: str) -> str:
        """``value`` with every secret replaced by ``[redacted]``."""
        return redact(value, self.values) if self.values else value

    def line(self, data: bytes) -> bytes:
        """One encoded JSON line with every secret replaced; :class:`SecretInAnswer` when a secret
        stands outside a string (a number or a key fragment ``[redacted]`` would make invalid)."""
        found = False
        for needle in self._needles:
            if needle in data:
                data = data.replace(needle, self._redacted)
                found = True
        if found:
            try:
                json.loads(data)
            except ValueError:
                raise SecretInAnswer("the answer quotes a credential of this run where it cannot be "
                                     "redacted") from None
        return data
