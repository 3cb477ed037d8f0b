"""A scored table from an output's JSON lines joined with the input it answers, streamed.

Columns: the input's (or ``--keep-columns``), then the prediction (:mod:`.predictions`), then
``status``, ``error_kind``, ``error_reason`` and ``batch_index``; one row per input row, in input
order (the output's records in index order, :mod:`.ordered`). A record batch at a time is held;
the table is written beside its name and renamed into place, so a reader never sees half of it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from typing import Any

from ..storage.reading import open_input
from .formats import TableError, require_pyarrow
from .ordered import _indexed, ordered_records
from .predictions import prediction, status_of
from .reader import CSV_SAMPLE_ROWS, PARQUET_BATCH_ROWS, csv_records, parquet_dataset
from .rows import looks_numeric

STATUS_COLUMNS = ("status", "error_kind", "error_reason", "batch_index")


def first_prediction(records_path: str) -> list[tuple[str, Any]]:
    """The prediction columns (names and a sample value) of the output's first result record."""
    import json

    from ..outputs.lines import line_info

    for _, data in _indexed(records_path):
        if not line_info(data).failed:
            return prediction(json.loads(data))
    return []


def _csv_batches(path: str, keep: Sequence[str] | None, options: dict[str, Any] | None) -> Iterator[tuple[Any, int]]:
    """A CSV's kept columns in record batches: numeric columns (as the reader decides) as float64."""
    pa = require_pyarrow()
    with open_input(path, options) as source:
        records = csv_records(source.stream)
        header = next(records, None)
        if header is None or isinstance(header, str):
            raise TableError(f"{path}: no CSV header")
        names = list(keep) if keep else list(header)
        missing = [n for n in names if n not in header]
        if missing:
            raise TableError(f"--keep-columns: no column {', '.join(map(repr, missing))} in {path}")
        positions = [header.index(n) for n in names]
        sample = list(itertools.islice(records, CSV_SAMPLE_ROWS))
        numeric = []
        for p in positions:
            seen = [r[p] for r in sample if not isinstance(r, str) and p < len(r) and r[p].strip()]
            numeric.append(bool(seen) and 2 * sum(map(looks_numeric, seen)) > len(seen))
        rows = itertools.chain(sample, records)
        while True:
            chunk = list(itertools.islice(rows, PARQUET_BATCH_ROWS))
            if not chunk:
                return
            arrays = []
            for p, is_number in zip(positions, numeric, strict=True):
                cells: list[str | None] = [None if isinstance(r, str) or p >= len(r) else r[p] for r in chunk]
                if is_number:
                    arrays.append(pa.array([_float(c) for c in cells], pa.float64()))
                else:
                    arrays.append(pa.array(cells, pa.string()))
            yield pa.RecordBatch.from_arrays(arrays, names=names), len(chunk)


def _float(cell: str | None) -> float | None:
    try:
        return float(cell) if cell is not None else None
    except ValueError:
        return None


def _parquet_batches(path: str, keep: Sequence[str] | None,
                     options: dict[str, Any] | None) -> Iterator[tuple[Any, int]]:
    dataset = parquet_dataset(path, options)
    if keep:
        missing = [n for n in keep if n not in dataset.schema.names]
        if missing:
            raise TableError(f"--keep-columns: no column {', '.join(map(repr, missing))} in {path}")
    for batch in dataset.batches(list(keep) if keep else None):
        yield batch, batch.num_rows


def _unique(names: Sequence[str], taken: set[str]) -> list[str]:
    out = []
    for name in names:
        new, n = name, 1
        while new in taken:
            new, n = f"{name}_{n}", n + 1
        taken.add(new)
        out.append(new)
    return out


def write_table(records_path: str, out_path: str, fmt: str, input_path: str, input_format: str, *,
                keep: Sequence[str] | None = None, options: dict[str, Any] | None = None) -> int:
    """Write the joined table; the number of rows written. TableError (one line) when it cannot be."""
    pa = require_pyarrow()
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    sample = first_prediction(records_path)
    pred_names = [n for n, _ in sample]
    pred_types = [pa.float64() if isinstance(v, (int, float)) and not isinstance(v, bool) else pa.string()
                  for _, v in sample]
    batches = (_parquet_batches if input_format == "parquet" else _csv_batches)(input_path, keep, options)
    records = ordered_records(records_path)
    pending = next(records, None)
    tmp = f"{out_path}.writing"
    writer: Any = None
    rows = 0
    try:
        for batch, count in batches:
            columns: list[list[Any]] = [[] for _ in range(len(pred_names) + len(STATUS_COLUMNS))]
            for index in range(rows, rows + count):
                while pending is not None and pending[0] < index:
                    pending = next(records, None)
                record = pending[1] if pending is not None and pending[0] == index else None
                values = dict(prediction(record)) if record is not None else {}
                for i, (name, kind) in enumerate(zip(pred_names, pred_types, strict=True)):
                    columns[i].append(_cell(values.get(name), kind, pa))
                status = status_of(record)
                for j, value in enumerate((*status, index)):
                    columns[len(pred_names) + j].append(value)
            types = [*pred_types, pa.string(), pa.string(), pa.string(), pa.int64()]
            taken = set(batch.schema.names)
            names = [*batch.schema.names, *_unique([*pred_names, *STATUS_COLUMNS], taken)]
            arrays = [*batch.columns, *(pa.array(c, t) for c, t in zip(columns, types, strict=True))]
            table_batch = pa.RecordBatch.from_arrays(arrays, names=names)
            if writer is None:
                writer = (pq.ParquetWriter(tmp, table_batch.schema) if fmt == "parquet"
                          else pcsv.CSVWriter(tmp, table_batch.schema))
            writer.write_batch(table_batch)
            rows += count
        if writer is None:
            raise TableError(f"{input_path}: the input has no rows, no table written")
        writer.close()
        writer = None
        os.replace(tmp, out_path)
    except OSError as e:
        raise TableError(f"cannot write {out_path}: {e.strerror or e}") from None
    finally:
        if writer is not None:
            writer.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
    return rows


def _cell(value: Any, kind: Any, pa: Any) -> Any:
    if value is None:
        return None
    if kind == pa.float64():
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return value if isinstance(value, str) else str(value)
