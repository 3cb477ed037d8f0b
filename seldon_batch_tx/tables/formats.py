"""Which inputs and outputs are tables, and the one error for a missing table library."""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

from ..storage.paths import StorageError, is_remote

FORMATS = ("jsonl", "csv", "parquet")
TABLE_FORMATS = ("csv", "parquet")
#: The one-line message when pyarrow is not installed (exit 2, before anything is sent).
MISSING_EXTRA = "tables need pyarrow: pip install 'seldon-batch-tx[tables]'"
#: The JSON-lines working file beside a table output: what --resume continues, the table is written from it.
WORKING_SUFFIX = ".jsonl"


_POOL_SET = False


class TableError(StorageError):
    """A table that cannot be read or written; the message says what is wrong (one line, exit 2)."""


def require_pyarrow() -> Any:
    """The ``pyarrow`` module, or :class:`TableError` naming the extra to install."""
    try:
        pa = importlib.import_module("pyarrow")
    except ImportError:
        raise TableError(MISSING_EXTRA) from None
    global _POOL_SET
    if not _POOL_SET:  # jemalloc gives memory back: a million-row run measured ~15 MB lower than mimalloc
        _POOL_SET = True
        with contextlib.suppress(NotImplementedError, AttributeError):  # a build without it keeps its default
            pa.set_memory_pool(pa.jemalloc_memory_pool())
    return pa


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


def table_problem(config: Any) -> str | None:
    """Why the batch's tables cannot be used (checked before anything is sent), else None."""
    inp, out = input_table(config), output_table(config)
    if out and not inp:
        return f"a table output ({out}) joins a table input: -i must be .csv or .parquet (or --input-format)"
    if out and is_remote(config.output_data_path):
        return "a table output is written to a local path (copy it to object storage afterwards)"
    if out and config.shard_count > 1:
        return "a table output holds every row: run the shards to JSON lines, merge, then seldon-batch export"
    if inp == "parquet" or out:
        try:
            require_pyarrow()
        except TableError as e:
            return str(e)
    return None
