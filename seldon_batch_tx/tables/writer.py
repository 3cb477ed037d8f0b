"""A scored table from an output's JSON lines joined with the input it answers, streamed.

Columns: the input's (or ``--keep-columns``), then the prediction (:mod:`.predictions`), then
``status``, ``error_kind``, ``error_reason`` and ``batch_index``. These keep their names: kept input
columns named like the last four are refused (:func:`.reader.kept_problem`, before the run), one named
like a prediction column is written as ``input_NAME``. One row per input row, in input order (the
output's records in index order, :mod:`.ordered`; an output that is not one run's over this input, with
an index twice or past the input's rows, writes no table). A record batch at a time is held; the table
is written beside its name and renamed into place, so a reader never sees half of it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from typing import Any

from ..storage.paths import display
from ..storage.reading import open_input
from .errors import TableError, require_pyarrow
from .ordered import _indexed, ordered_records
from .predictions import prediction, status_of
from .reader import (
    CSV_SAMPLE_ROWS,
    PARQUET_BATCH_ROWS,
    STATUS_COLUMNS,
    csv_header,
    kept_problem,
    parquet_dataset,
    unique_names,
)
from .rows import looks_numeric

#: What an input column named like a prediction column is renamed to (then ``_1``, ``_2``... if taken).
INPUT_PREFIX = "input_"


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
        header, records = csv_header(source.stream, display(path))
        _check_kept(header, path, keep)
        names = list(keep) if keep else list(header)
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
    unique_names(dataset.schema.names, display(path))
    _check_kept(dataset.schema.names, path, keep)
    for batch in dataset.batches(list(keep) if keep else None):
        yield batch, batch.num_rows


def _free(name: str, taken: set[str]) -> str:
    new, n = name, 1
    while new in taken:
        new, n = f"{name}_{n}", n + 1
    taken.add(new)
    return new


def output_names(kept: Sequence[str], predictions: Sequence[str]) -> list[str]:
    """The written table's column names: the kept input columns, the prediction's, then :data:`STATUS_COLUMNS`.

    The status columns and the prediction's keep their names (a prediction named twice, or like a status
    column, gets ``_1``...); an input column named like a prediction column becomes ``input_NAME``."""
    taken = set(STATUS_COLUMNS)
    pred = [_free(n, taken) for n in predictions]
    taken |= set(kept)
    inputs = [_free(INPUT_PREFIX + n, taken) if n in pred else n for n in kept]
    return [*inputs, *pred, *STATUS_COLUMNS]


def _check_kept(names: list[str], path: str, keep: Sequence[str] | None) -> None:
    problem = kept_problem(names, display(path), keep)
    if problem is not None:
        raise TableError(problem)


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
    tmp = f"{out_path}.writing"
    writer: Any = None
    names: list[str] = []
    rows = 0
    try:
        pending = next(records, None)
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
            names = names or output_names(batch.schema.names, pred_names)
            arrays = [*batch.columns, *(pa.array(c, t) for c, t in zip(columns, types, strict=True))]
            table_batch = pa.RecordBatch.from_arrays(arrays, names=names)
            if writer is None:
                writer = (pq.ParquetWriter(tmp, table_batch.schema) if fmt == "parquet"
                          else pcsv.CSVWriter(tmp, table_batch.schema))
            writer.write_batch(table_batch)
            rows += count
        if writer is None:
            raise TableError(f"{display(input_path)}: the input has no rows, no table written")
        while pending is not None and pending[0] < rows:
            pending = next(records, None)
        if pending is not None:  # an output of another input, or edited: verify lists every such index
            raise TableError(f"{records_path}: batch_index {pending[0]} is past the last row of "
                             f"{display(input_path)} ({rows} rows); no table written")
        writer.close()
        writer = None
        os.replace(tmp, out_path)
    except OSError as e:
        raise TableError(f"cannot write {out_path}: {e.strerror or e}") from None
    finally:
        records.close()  # its spilled runs are removed even when the table is not written
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
