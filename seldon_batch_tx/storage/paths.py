"""Where data lives: ``-`` (standard input/output), a local path, or an fsspec URL.

One place decides what a path names, which storage options apply (``--storage-options JSON``
plus ``AWS_ENDPOINT_URL`` for MinIO and moto) and how a URL is shown in logs, so a secret in
the options or in a URL's user part never reaches a log line, a summary or an error message.
Credentials themselves come from the backend's usual sources (environment, profiles, instance
roles): nothing here reads them.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any
from urllib.parse import urlsplit

from ..redaction import SECRET_OPTION_WORDS, is_secret_option, show_path

#: The path that means standard input (``-i -``) or standard output (``-o -``).
STDIO = "-"
#: Option keys whose values are never shown (matched as substrings, case-insensitive).
SECRET_WORDS = SECRET_OPTION_WORDS
#: The protocols that take ``AWS_ENDPOINT_URL`` (S3-compatible stores).
S3_PROTOCOLS = ("s3", "s3a")
#: The optional backend package (and this project's extra) each protocol needs.
BACKENDS = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"),
            "abfs": ("adlfs", "azure"), "az": ("adlfs", "azure")}

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class StorageError(Exception):
    """A storage problem told in one line that names the URL (never a secret); exit status 2
    when it happens before the run starts."""


class StorageUnavailable(StorageError):
    """The store failed while the run used it (unreachable, no credentials, a time limit, a
    signal): exit status 3, one line, and the output stays for ``--resume``."""


def first_line(error: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters) for a one-line report."""
    text = str(error).strip().splitlines()
    reason = text[0][:200] if text and text[0] else ""
    name = type(error).__name__
    return reason if name in reason else f"{name}: {reason}" if reason else name


def is_stdio(path: str) -> bool:
    """Whether ``path`` is ``-``: standard input for ``-i``, standard output for ``-o``."""
    return path == STDIO


def protocol(path: str) -> str | None:
    """The URL's protocol (``s3``, ``gs``...) in lower case, or None for a plain local path."""
    match = _URL.match(path)
    return match.group(1).lower() if match else None


def is_remote(path: str) -> bool:
    """Whether ``path`` is read and written through fsspec: a URL other than ``file://``."""
    proto = protocol(path)
    return proto is not None and proto not in ("file", "local")


def local_path(path: str) -> str:
    """A local path for ``path`` (``file:///x`` -> ``/x``); remote URLs are refused."""
    if is_remote(path):
        raise ValueError(f"{display(path)} is not a local path")
    return urlsplit(path).path if protocol(path) else path


def canonical(path: str) -> str:
    """The one spelling of the object ``path`` names: ``s3a://`` is ``s3://`` (so both take the
    same staging file and output lock), the scheme in lower case."""
    proto = protocol(path)
    if proto is None or not is_remote(path):
        return path
    rest = path.split("://", 1)[1]
    return f"{'s3' if proto in S3_PROTOCOLS else proto}://{rest}"


def output_problem(path: str) -> str | None:
    """Why ``path`` cannot be an output URL, else None: a query or fragment would be written into
    the key by some backends while messages name another object."""
    if is_remote(path) and ("?" in path or "#" in path):
        return (f"{display(path)}: an output URL may not hold '?' or '#' (the key would not be the one "
                "shown); give s3://BUCKET/KEY")
    return None


#: botocore's limits unless ``--storage-options`` sets ``config_kwargs``: a store that does not
#: answer fails a call in about a minute, never hangs it (the overall limit is ``--storage-timeout``).
BOTOCORE_LIMITS = {"connect_timeout": 10, "read_timeout": 60, "retries": {"max_attempts": 3, "mode": "standard"}}


def display(path: str) -> str:
    """``path`` as logs and messages may show it (the one rule: :func:`..redaction.show_path`)."""
    return show_path(path) if is_remote(path) else path


def is_secret_key(name: str) -> bool:
    """Whether an option named ``name`` may hold a secret (its value is never shown)."""
    return is_secret_option(name)


def redact(options: Any) -> Any:
    """A copy of ``options`` fit for logs: values under secret-looking keys become ``***``,
    nested dictionaries (``client_kwargs``...) included."""
    if isinstance(options, dict):
        return {k: "***" if is_secret_key(str(k)) else redact(v) for k, v in options.items()}
    if isinstance(options, (list, tuple)):
        return [redact(v) for v in options]
    return options


def parse_storage_options(text: str | None) -> dict[str, Any]:
    """``--storage-options JSON``: a JSON object of keyword arguments for the fsspec backend.

    The message of a bad value never repeats the value (it may hold a secret).
    """
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise StorageError(f"--storage-options is not valid JSON (at line {getattr(e, 'lineno', '?')} "
                           f"column {getattr(e, 'colno', '?')})") from None
    if not isinstance(value, dict):
        raise StorageError(f"--storage-options must be a JSON object, not a JSON {type(value).__name__}")
    return value


def storage_options(path: str, options: dict[str, Any] | None = None,
                    environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The options for ``path``'s backend: ``options`` as given, plus for S3 the endpoint from
    ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` when the options name none."""
    merged = dict(options or {})
    env = os.environ if environ is None else environ
    if protocol(path) in S3_PROTOCOLS:
        client_kwargs = dict(merged.get("client_kwargs") or {})
        named = merged.get("endpoint_url") or client_kwargs.get("endpoint_url")
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        if not named and endpoint:
            merged["endpoint_url"] = endpoint
        merged["config_kwargs"] = {**BOTOCORE_LIMITS, **dict(merged.get("config_kwargs") or {})}
    return merged


def filesystem(path: str, options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec filesystem and the backend's path for URL ``path``.

    A protocol whose backend is not installed is a :class:`StorageError` naming the extra.
    """
    import fsspec  # imported here: local-only runs need no fsspec

    proto = protocol(path) or "file"
    try:
        fs, rpath = fsspec.core.url_to_fs(path, **storage_options(path, options))
    except ImportError:
        package, extra = BACKENDS.get(proto, (f"the fsspec backend for {proto}://", ""))
        hint = f"pip install 'seldon-batch-tx[{extra}]'" if extra else f"install {package}"
        raise StorageError(f"{display(path)}: {proto}:// needs {package} ({hint})") from None
    except ValueError as e:
        if "not known" in str(e) or "Protocol" in str(e):
            raise StorageError(f"{display(path)}: unknown storage protocol {proto}://") from None
        raise StorageError(f"{display(path)}: bad storage options ({type(e).__name__})") from None
    except TypeError as e:
        raise StorageError(f"{display(path)}: a storage option is not accepted by the {proto} backend "
                           f"({first_line(e)})") from None
    return fs, rpath
