"""Which inputs and outputs are tables, and the one error for a missing table library."""

from __future__ import annotations

import importlib
from typing import Any

FORMATS = ("jsonl", "csv", "parquet")
TABLE_FORMATS = ("csv", "parquet")
#: The one-line message when pyarrow is not installed (exit 2, before anything is sent).
MISSING_EXTRA = "tables need pyarrow: pip install 'seldon-batch-tx[tables]'"
#: The JSON-lines working file beside a table output: what --resume continues, the table is written from it.
WORKING_SUFFIX = ".jsonl"


class TableError(ValueError):
    """A table that cannot be read or written; the message says what is wrong (one line)."""


def require_pyarrow() -> Any:
    """The ``pyarrow`` module, or :class:`TableError` naming the extra to install."""
    try:
        return importlib.import_module("pyarrow")
    except ImportError:
        raise TableError(MISSING_EXTRA) from None


def format_of(path: str, given: str | None) -> str:
    """``given`` (``--input-format``/``--output-format``), else the path's extension: ``.csv``,
    ``.parquet``/``.pq`` (also a directory or prefix ending in ``/``... use ``--input-format parquet``)."""
    if given:
        return given
    name = path.split("?", 1)[0].lower().rstrip("/")
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    return "jsonl"


def input_table(config: Any) -> str | None:
    """``csv`` or ``parquet`` when the batch's input is a table, else None."""
    fmt = format_of(config.input_data_path, config.input_format)
    return fmt if fmt in TABLE_FORMATS else None


def output_table(config: Any) -> str | None:
    """``csv`` or ``parquet`` when the batch's output is to be a table, else None."""
    fmt = format_of(config.output_data_path, config.output_format)
    return fmt if fmt in TABLE_FORMATS else None


def working_path(output: str) -> str:
    """The JSON-lines working file of a table output (``scored.parquet`` -> ``scored.parquet.jsonl``)."""
    return output + WORKING_SUFFIX
