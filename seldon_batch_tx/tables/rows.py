"""One table row to the JSON line the codecs already read, or to that row's error.

A row's feature values become ``[[v1, ..., vn]]`` (one row of ``ndarray``; the codec adds the column
names as ``data.names``), or for a V2 model whose metadata names an input per column, the object
``{"column": [v], ...}`` (:mod:`~seldon_batch_tx.protocols.v2_inputs`). A row that cannot be sent
(an empty cell, text in a numeric column, a CSV row wider or narrower than the header) becomes an
error item the table codec turns into that row's ``input_error``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

#: First byte of an item that is a row's error, never a line: the rest is the reason (UTF-8).
ERROR_MARK = b"\x00"


class RowError(ValueError):
    """Why one row cannot be sent (the message names the column)."""


def number(value: Any, column: str) -> int | float:
    """A cell as a JSON number: ints stay ints, text is parsed; RowError for empty, text, NaN, inf."""
    if value is None or value == "":
        raise RowError(f"column {column!r} is empty")
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RowError(f"column {column!r} is {value}, not a finite number")
        return value
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        parsed = float(text)
    except ValueError:
        raise RowError(f"column {column!r} holds {text[:40]!r}, not a number") from None
    if not math.isfinite(parsed):
        raise RowError(f"column {column!r} is {text[:40]!r}, not a finite number")
    return parsed


def looks_numeric(value: str) -> bool:
    """Whether a CSV cell reads as a number (the test for which columns are features)."""
    try:
        float(value)
    except ValueError:
        return False
    return True


class RowRenderer:
    """Renders rows of feature values for one batch: the names are fixed once."""

    def __init__(self, names: Sequence[str], per_column: bool = False) -> None:
        self.names = tuple(names)
        self.per_column = per_column

    def line(self, values: Sequence[Any]) -> bytes:
        """The row's JSON line; RowError for a value that is not a number."""
        numbers = [number(v, n) for v, n in zip(values, self.names, strict=True)]
        if self.per_column:
            return json.dumps({n: [v] for n, v in zip(self.names, numbers, strict=True)},
                              separators=(",", ":")).encode()
        return b"[[" + ",".join(map(repr, numbers)).encode() + b"]]"


def error_line(reason: str) -> bytes:
    """The item bytes of a row that failed: the mark, then the reason."""
    return ERROR_MARK + reason.encode("utf-8", "replace")
