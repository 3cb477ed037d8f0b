"""The range of every number a run takes: intervals, rates, timeouts, sizes, counts.

Any finite value used to pass, so ``{"batch-interval": 1e308}`` in a sidecar stalled the daemon for
good and ``{"fsync-interval": 1e-300}`` fsynced on every reactor turn. Each numeric option now names
its lower and upper limit here (the README's table of limits is generated from the same numbers),
and a value outside is refused in one line: exit 2 on the command line, ``failed/`` with the reason
for a sidecar (both go through the option table's coerce functions).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .checks import finite, optional_positive, whole_number

MIB = 1 << 20
#: Seconds in an hour and a day: the longest waits a run can live with.
HOUR = 3600.0
DAY = 86400.0

#: (lowest, highest) of each bounded option; None below means "none"/0 is also taken (feature off).
LIMITS: dict[str, tuple[float, float]] = {
    "batch-interval": (0.0, 60.0),
    "fsync-interval": (0.1, HOUR),
    "poll-interval": (0.05, HOUR),
    "max-rate": (0.01, 1_000_000.0),
    "timeout": (0.01, HOUR),
    "drain-timeout": (0.0, HOUR),
    "wait-ready": (0.0, DAY),
    "outage-timeout": (0.0, 7 * DAY),
    "connection-max-age": (0.1, DAY),
    "dashboard-linger": (0.1, 7 * DAY),
    "file-time-slice": (1.0, DAY),
    "storage-timeout": (1.0, DAY),
    "batch-size": (1, 10_000),
    "max-batch-rows": (1, 1_000_000),
    "retries": (0, 100),
    "max-line-bytes": (1, 1024 * MIB),
    "max-response-bytes": (1, 1024 * MIB),
    "max-bytes-in-flight": (MIB, 64 * 1024 * MIB),
    "grpc-channels": (1, 1024),
}


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def unit(name: str) -> str:
    """What ``name`` counts, for the README's table."""
    if name == "max-rate":
        return "requests per second"
    if name.endswith("-bytes") or name.endswith("-in-flight"):
        return "bytes"
    return {"batch-size": "lines per request", "max-batch-rows": "rows per request", "retries": "retries",
            "grpc-channels": "channels"}.get(name, "seconds")


def _check(name: str, number: float, unit: str) -> None:
    low, high = LIMITS[name]
    if number < low:
        raise ValueError(f"must be at least {_number(low)}{unit}" if low else "must not be negative")
    if number > high:
        raise ValueError(f"must be at most {_number(high)}{unit}")


def seconds(name: str) -> Callable[[str], float]:
    """A number of seconds within ``name``'s limits (a lower limit of 0 takes 0)."""
    def coerce(value: str) -> float:
        number = finite(value)
        if number <= 0 and LIMITS[name][0] > 0:
            raise ValueError("must be positive")
        _check(name, number, " seconds")
        return number
    return coerce


def optional_seconds(name: str, unit: str = " seconds") -> Callable[[str], float | None]:
    """Like :func:`seconds`, but ``0``/``none``/empty turn the feature off (None)."""
    def coerce(value: str) -> float | None:
        number = optional_positive(value)
        if number is not None:
            _check(name, number, unit)
        return number
    return coerce


def optional_rate(name: str) -> Callable[[str], float | None]:
    """Requests per second within ``name``'s limits, or None (no limit)."""
    return optional_seconds(name, " per second")


def linger_seconds(value: str) -> float | None:
    """``--dashboard-linger``: seconds within limits, ``forever`` (infinity), or ``0``/``none``."""
    if value.strip().lower() in ("forever", "inf", "infinity"):
        return math.inf
    return optional_seconds("dashboard-linger")(value)


def outage_seconds(value: str) -> float | None:
    """``--outage-timeout``: seconds within limits (``0``: no pausing), or ``none``/``forever`` (no limit)."""
    if value.strip().lower() in ("none", "forever", "inf", "infinity"):
        return None
    return seconds("outage-timeout")(value)


def count(name: str, unit: str = "") -> Callable[[str], int]:
    """A whole number within ``name``'s limits."""
    def coerce(value: str) -> int:
        number = whole_number(value)
        _check(name, number, unit)
        return number
    return coerce


def optional_count(name: str, unit: str = "") -> Callable[[str], int | None]:
    """Like :func:`count`, but ``0``/``none``/empty mean "chosen for you" (None)."""
    def coerce(value: str) -> int | None:
        if value.strip().lower() in ("", "0", "none"):
            return None
        return count(name, unit)(value)
    return coerce


def limits_table() -> str:
    """The README's table of limits, one row per option (kept in step by a test)."""
    rows = ["| Option | Lowest | Highest | Unit |", "| --- | --- | --- | --- |"]
    rows += [f"| `--{name}` | {_number(low)} | {_number(high)} | {unit(name)} |"
             for name, (low, high) in LIMITS.items()]
    return "\n".join(rows)
