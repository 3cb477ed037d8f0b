"""V2 datatypes: the one reading of which datatype a value has and whether it can travel as one.

Below both the codec (:mod:`.v2`) and the model-aware inputs (:mod:`.v2_inputs`), which check lines
against the model's datatypes with the same rules.
"""

from __future__ import annotations

import json
from typing import Any

from .base import InputError

INT_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64"})
UINT_TYPES = frozenset({"UINT8", "UINT16", "UINT32", "UINT64"})
FLOAT_TYPES = frozenset({"FP16", "BF16", "FP32", "FP64"})
#: Inferred numeric types that may share a mini-batch (promoted to FP64 together).
NUMERIC_INFERRED = frozenset({"INT64", "FP64"})


def _leaf_type(x: Any) -> str:
    if isinstance(x, bool):
        return "BOOL"
    if isinstance(x, int):
        return "INT64"
    if isinstance(x, float):
        return "FP64"
    if isinstance(x, str):
        return "BYTES"
    raise InputError(f"unsupported value {json.dumps(x)[:40]}: expected numbers, booleans or strings")


def infer_datatype(flat: list[Any]) -> str:
    """INT64 for integers, FP64 once any float appears, BOOL, BYTES; InputError for a mix."""
    kinds = {_leaf_type(x) for x in flat}
    if kinds <= NUMERIC_INFERRED:
        return "FP64" if "FP64" in kinds else "INT64"
    if len(kinds) == 1:
        return kinds.pop()
    raise InputError(f"mixed value types {', '.join(sorted(kinds))} in one tensor")


def check_datatype(flat: list[Any], datatype: str) -> None:
    """InputError unless every element can travel as ``datatype``."""
    if datatype == "BOOL":
        ok = all(isinstance(x, bool) for x in flat)
    elif datatype in INT_TYPES or datatype in UINT_TYPES:
        ok = all(isinstance(x, int) and not isinstance(x, bool) for x in flat)
        if ok and datatype in UINT_TYPES:
            ok = all(x >= 0 for x in flat)
    elif datatype in FLOAT_TYPES:
        ok = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in flat)
    else:
        ok = all(isinstance(x, str) for x in flat)
    if not ok:
        bad = next((x for x in flat if _leaf_type(x) != datatype), flat[0])
        raise InputError(f"value {json.dumps(bad)[:40]} is not a valid {datatype} element")
    check_range(flat, datatype)


#: The finite range of each sized datatype: a value past it cannot travel (binary) or be read (JSON).
RANGES = {"FP16": (-65504.0, 65504.0), "BF16": (-3.3895313892515355e38, 3.3895313892515355e38),
          "FP32": (-3.4028234663852886e38, 3.4028234663852886e38),
          **{f"INT{n}": (-(2 ** (n - 1)), 2 ** (n - 1) - 1) for n in (8, 16, 32, 64)},
          **{f"UINT{n}": (0, 2 ** n - 1) for n in (8, 16, 32, 64)}}


def check_range(flat: list[Any], datatype: str) -> None:
    """InputError naming the first value outside ``datatype``'s range (numbers already checked)."""
    bounds = RANGES.get(datatype)
    if bounds is None or not flat:
        return
    low, high = bounds
    if low <= min(flat) and max(flat) <= high:
        return
    bad = next(x for x in flat if not low <= x <= high)
    raise InputError(f"value {json.dumps(bad)[:40]} is out of {datatype}'s range")
