"""Per-file settings: a sidecar ``NAME.json`` beside an input, and what it may set.

Sidecars may set only options that cannot send data or credentials elsewhere
(:data:`SIDECAR_SAFE`); the others (:data:`SIDECAR_ALLOWABLE`) wait for the operator's
``--sidecar-allow KEY,...``, and :data:`SIDECAR_NEVER` are the daemon's alone. Values are
coerced by the command line's option table, so a sidecar cannot say what ``--option`` could not.
A new per-file option is placed in one of these three sets.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

import txaio
from twisted.python import usage

from ..checks import boolean
from ..config import BatchConfig
from ..options import OPTIONS, Option
from .files import Rejected, read_small, shown

txaio.use_twisted()
log = txaio.make_logger()

_OPTIONS_BY_NAME = {o.name: o for o in OPTIONS}
#: Options whose BatchConfig field has another name (repeatable ones collect into a tuple).
_FIELDS = {"header": "headers"}
#: Options that are never per-file, whatever ``--sidecar-allow`` says: the daemon decides where
#: files are read and written, how it logs and serves, and how a file is resumed.
SIDECAR_NEVER = frozenset({"input-data-path", "output-data-path", "dashboard", "log-level", "resume",
                           "retry-failed", "call-credentials-token-file"})
#: Options a sidecar may set without the operator's leave: how lines are encoded and paced, and
#: how hard this one file is pushed. None of them changes where requests go, what credentials or
#: headers they carry, or how much memory one answer may take. ``workers`` is capped at the
#: daemon's own ``--workers``, ``max-rate`` at its ``--max-rate``, and ``adaptive`` cannot turn the
#: daemon's ``--adaptive`` off: a file may go easier on the model, never harder. ``model-version``
#: is not here: it is part of the model's address (a path segment on the daemon's host, sent with
#: its credentials).
SIDECAR_SAFE = frozenset({"data-type", "payload-type", "method", "batch-size", "batch-id", "batch-interval",
                          "workers", "retries", "timeout", "max-failures", "ordered", "input-name", "benchmark",
                          "fsync-interval", "max-rate", "adaptive", "max-batch-rows"})
#: Keys an operator may add with ``--sidecar-allow``: host, transport, protocol, TLS, headers,
#: tokens, model and deployment, namespace, gateway, shards, limits and the drain time.
SIDECAR_ALLOWABLE = frozenset(o.name for o in OPTIONS) - SIDECAR_NEVER - SIDECAR_SAFE


def _option_name(key: Any) -> str:
    return str(key).replace("_", "-")


def check_sidecar_allow(keys: Iterable[str]) -> frozenset[str]:
    """The keys of ``--sidecar-allow``, normalised; ValueError naming a key that cannot be allowed."""
    allowed = set()
    for key in keys:
        name = _option_name(key.strip()).lower()
        if not name:
            continue
        if name in SIDECAR_NEVER:
            raise ValueError(f"{name!r} is never a per-file setting")
        if name not in SIDECAR_ALLOWABLE and name not in SIDECAR_SAFE:
            raise ValueError(f"{name!r} is not an option (allowable: {', '.join(sorted(SIDECAR_ALLOWABLE))})")
        allowed.add(name)
    return frozenset(allowed)


def _no_control_characters(key: Any, value: Any) -> None:
    """Strings go into headers, URLs and tags: CR, LF or NUL in one would be a header injection."""
    if isinstance(value, str) and any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise Rejected(f"sidecar setting {key!r}: {value!r} holds control characters")


def _read(path: str, label: str) -> dict[Any, Any]:
    """The sidecar's JSON object."""
    try:
        data = json.loads(read_small(path))
    except Rejected as e:
        raise Rejected(f"sidecar {label}: {e}") from None
    except (OSError, ValueError, RecursionError) as e:
        raise Rejected(f"sidecar {label} is not readable JSON: {type(e).__name__}: {e}") from None
    if not isinstance(data, dict):
        raise Rejected(f"sidecar {label} must hold a JSON object of settings")
    return data


def _allowed_option(config: BatchConfig, key: Any, allow: frozenset[str]) -> tuple[Option, str]:
    """The option a sidecar key names and its BatchConfig field, if this sidecar may set it."""
    name = _option_name(key)
    option = _OPTIONS_BY_NAME.get(name)
    field = _FIELDS.get(name, option.field) if option is not None else ""
    if option is None or name in SIDECAR_NEVER or not hasattr(config, field):
        raise Rejected(f"sidecar setting {key!r} is not a per-file option")
    if name not in SIDECAR_SAFE and name not in allow:
        raise Rejected(f"sidecar setting {key!r} is the daemon's (it decides where data and credentials go); "
                       f"its operator can allow it with --sidecar-allow {name}")
    return option, field


def _coerce(option: Option, key: Any, value: Any) -> Any:
    """A sidecar value checked exactly as the same value on the command line."""
    repeated = option.name in _FIELDS and isinstance(value, list) and all(isinstance(v, str) for v in value)
    for one in value if repeated else [value]:
        _no_control_characters(key, one)
    try:
        if value is None:
            if option.default is not None:
                raise ValueError("may not be null")
            return None
        if option.coerce is None:
            return value if isinstance(value, bool) else boolean(str(value))
        if repeated:  # {"header": ["A: 1", "B: 2"]}, as a repeated flag
            return option.parse("\n".join(value), label=f"sidecar setting {key!r}")
        if isinstance(value, (dict, list)):
            raise ValueError(f"must be a string, number or boolean, not {type(value).__name__}")
        raw = str(value).lower() if isinstance(value, bool) else str(value)
        return option.parse(raw, label=f"sidecar setting {key!r}")
    except usage.UsageError as e:  # names the key and its value (never a secret's)
        raise Rejected(str(e)) from None
    except (ValueError, TypeError, OverflowError) as e:
        raise Rejected(f"sidecar setting {key!r}: {e}") from None


def _no_harder_on_the_model(config: BatchConfig, changes: dict[str, Any], label: str) -> None:
    """A sidecar may lower the daemon's ``--max-rate`` and ``--max-batch-rows`` and turn ``--adaptive`` on,
    never the reverse:
    the operator's limits protect a model shared with online traffic."""
    cap = config.max_rate
    if cap is not None and "max_rate" in changes and (changes["max_rate"] is None or changes["max_rate"] > cap):
        log.info("sidecar {sidecar}: max-rate {asked} capped at the daemon's {cap}", sidecar=label,
                 asked=changes["max_rate"], cap=cap)
        changes["max_rate"] = cap
    rows = config.max_batch_rows
    if rows is not None and "max_batch_rows" in changes and (changes["max_batch_rows"] or rows + 1) > rows:
        log.info("sidecar {sidecar}: max-batch-rows {asked} capped at the daemon's {cap}", sidecar=label,
                 asked=changes["max_batch_rows"], cap=rows)
        changes["max_batch_rows"] = rows
    if config.adaptive and changes.get("adaptive") is False:
        log.info("sidecar {sidecar}: adaptive stays on (the daemon's --adaptive)", sidecar=label)
        changes["adaptive"] = True


def apply_sidecar(config: BatchConfig, path: str, allow: frozenset[str] = frozenset(),
                  max_workers: int | None = None) -> BatchConfig:
    """``config`` with the settings of a sidecar ``NAME.json``, coerced by the option table.

    Keys are option names (``workers`` / ``data-type`` / ``data_type``); values are checked
    exactly as on the command line, so ``{"workers": 0}`` is refused like ``--workers 0``. Only
    :data:`SIDECAR_SAFE` keys and those in ``allow`` (``--sidecar-allow``) are accepted;
    ``workers`` is capped at ``max_workers``.
    """
    label = shown(os.path.basename(path))
    changes: dict[str, Any] = {}
    for key, value in _read(path, label).items():
        option, field = _allowed_option(config, key, allow)
        changes[field] = _coerce(option, key, value)
    if max_workers is not None and changes.get("workers", 0) > max_workers:
        log.info("sidecar {sidecar}: workers {asked} capped at the daemon's {cap}", sidecar=label,
                 asked=changes["workers"], cap=max_workers)
        changes["workers"] = max_workers
    _no_harder_on_the_model(config, changes, label)
    try:
        return config.replace(**changes)
    except (ValueError, TypeError) as e:
        raise Rejected(f"sidecar {label}: the settings do not fit together: {e}") from None
