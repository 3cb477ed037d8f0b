"""Opening a table input for a batch: its row count, then its rows as items once the model is known."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..config import BatchConfig
from ..core.items import Item
from ..storage.paths import is_remote
from ..storage.reading import InputSource, open_input
from .errors import require_pyarrow
from .formats import input_table
from .reader import count_table_rows, csv_rows, parquet_dataset, parquet_rows, table_items
from .rows import RowRenderer


def open_table_source(config: BatchConfig, options: dict[str, Any] | None, *, count: bool) -> InputSource:
    """The input as the batch opens it: a CSV's byte stream (a URL through the storage layer) or, for
    Parquet, nothing to stream yet; ``total_lines`` is the row count where it is cheap or asked for
    (``count``: --resume). Blocking: the batch runs it on a thread for a URL."""
    path = config.input_data_path
    if input_table(config) == "parquet":
        require_pyarrow()
        return InputSource(path, io.BytesIO(), None, count_table_rows(path, "parquet", options))
    total = count_table_rows(path, "csv", options) if count or not is_remote(path) else None
    source = open_input(path, options)
    source.total_lines = total
    return source


def model_columns(config: BatchConfig) -> tuple[str, ...]:
    """The V2 model's input names when it declares more than one (then one input per column)."""
    model = config.v2_model
    if config.protocol != "v2" or model is None or len(model.inputs) < 2:
        return ()
    return tuple(spec.name for spec in model.inputs)


def table_batch_items(config: BatchConfig, source: InputSource, options: dict[str, Any] | None,
                      make_id: Callable[[int], str],
                      wanted: Callable[[int], bool] | None) -> tuple[BatchConfig, Iterator[Item]]:
    """The config with the feature names (the table codec reads them) and the rows as items."""
    per_model = model_columns(config)
    columns: Sequence[str] = config.columns or per_model
    if input_table(config) == "parquet":
        names, rows = parquet_rows(parquet_dataset(config.input_data_path, options), columns,
                                   rendered=not per_model)  # type: ignore[assignment]
    else:
        names, rows = csv_rows(source.stream, columns)  # type: ignore[assignment]
    renderer = RowRenderer(names, per_column=bool(per_model) and tuple(names) == per_model)
    config = config.replace(table_names=tuple(names))
    return config, table_items(rows, renderer, make_id, wanted)
