"""The prediction columns of an output record: one column per value, named from the answer.

Seldon answers name their values in ``data.names`` (a classifier's class names); V2 answers name
their outputs (one column per output of one value, ``name_0``, ``name_1``... for an output of several).
An answer without names gets ``prediction_0``, ``prediction_1``...
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


def _flat(value: Any) -> Iterator[Any]:
    if isinstance(value, list):
        for v in value:
            yield from _flat(v)
    else:
        yield value


def _named(name: str, values: list[Any]) -> list[tuple[str, Any]]:
    if len(values) == 1:
        return [(name, values[0])]
    return [(f"{name}_{i}", v) for i, v in enumerate(values)]


def prediction(record: dict[str, Any]) -> list[tuple[str, Any]]:
    """(column, value) pairs of a result record; empty for an error record."""
    outputs = record.get("outputs")
    if isinstance(outputs, list):  # V2
        pairs: list[tuple[str, Any]] = []
        for i, out in enumerate(outputs):
            if isinstance(out, dict):
                pairs += _named(str(out.get("name") or f"output_{i}"), list(_flat(out.get("data"))))
        return pairs
    data = record.get("data")
    if isinstance(data, dict):
        if "ndarray" in data:
            values = list(_flat(data["ndarray"]))
        elif isinstance(data.get("tensor"), dict):
            values = list(_flat(data["tensor"].get("values")))
        else:
            values = []
        names = data.get("names")
        if isinstance(names, list) and len(names) == len(values) and all(isinstance(n, str) for n in names):
            return list(zip(names, values, strict=True))
        return [(f"prediction_{i}", v) for i, v in enumerate(values)]
    for key in ("jsonData", "strData", "binData"):
        if key in record:
            value = record[key]
            return [("prediction", value if isinstance(value, str) else json.dumps(value, separators=(",", ":")))]
    return []


def status_of(record: dict[str, Any] | None) -> tuple[str, str | None, str | None]:
    """``status``, ``error_kind``, ``error_reason`` of a row: success, failure, or missing (no output line)."""
    if record is None:
        return "missing", None, "no output line for this row (the run did not finish: --resume it)"
    status = record.get("status")
    if isinstance(status, dict) and status.get("status") == "FAILURE":
        info, reason = status.get("info"), status.get("reason")
        return "failure", str(info) if info is not None else None, str(reason) if reason is not None else None
    return "success", None, None
