"""Which inputs and outputs are tables, and what makes them unusable (checked before anything is sent)."""

from __future__ import annotations

from typing import Any

from ..storage.paths import StorageError, is_remote, is_stdio, parse_storage_options
from .errors import TableError, require_pyarrow

FORMATS = ("jsonl", "csv", "parquet")
TABLE_FORMATS = ("csv", "parquet")
#: The JSON-lines working file beside a table output: what --resume continues, the table is written from it.
WORKING_SUFFIX = ".jsonl"


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
    if inp and not is_stdio(config.input_data_path):  # the header and first rows: nothing sent, nothing created
        from .reader import input_problem

        try:
            options = parse_storage_options(config.storage_options)
        except StorageError as e:
            return str(e)
        # for V2 without --columns, a model declaring an input per column names the features once it is asked
        features = bool(config.columns) or config.protocol != "v2"
        return input_problem(config.input_data_path, inp, options, columns=config.columns or (), features=features,
                             keep=config.keep_columns, table_output=bool(out))
    return None


def table_rows(path: str, given: str | None, options: dict[str, Any] | None = None) -> int | None:
    """A table input's data rows (``seldon-batch verify``: as the run numbers them); None for JSON lines."""
    fmt = format_of(path, given)
    if fmt not in TABLE_FORMATS:
        return None
    from .reader import count_table_rows

    return count_table_rows(path, fmt, options)
