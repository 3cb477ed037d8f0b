"""CSV and Parquet inputs as a stream of items, one per row, never the whole table in memory.

CSV is read with the standard ``csv`` module over the storage layer's byte stream (any URL it reads),
so a row wider or narrower than the header is seen at its own place and becomes that row's error.
Parquet (a file, a directory or a prefix of files) is read in record batches through
``pyarrow.parquet``; a URL goes through fsspec. Row numbers are the items' indexes (``batch_index``).
Before anything is sent, :func:`input_problem` reads the header (a schema) and the first rows: a table
without a header or whose column names repeat, and for a table output kept columns named like its own
columns, are refused in one line (exit 2), before the output is created.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, BinaryIO, NamedTuple

from ..core.items import Item
from ..storage.paths import display, is_remote
from ..storage.reading import open_input
from .errors import TableError, require_pyarrow
from .rows import RowError, RowRenderer, error_line, looks_numeric

#: Rows read ahead from a CSV to decide which columns are numeric (without ``--columns``).
CSV_SAMPLE_ROWS = 1000
#: Rows per Parquet record batch: the most held at once.
PARQUET_BATCH_ROWS = 8192
#: Largest CSV field (bytes): a longer one is that row's error, not held.
CSV_FIELD_LIMIT = 1 << 20
#: The table output's own columns, after the prediction.
STATUS_COLUMNS = ("status", "error_kind", "error_reason", "batch_index")


def csv_records(stream: BinaryIO) -> Iterator[list[str] | str]:
    """The CSV's records (the header first); a record the parser refuses is its reason (a str)."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
    csv.field_size_limit(CSV_FIELD_LIMIT)
    reader = csv.reader(text, strict=True)  # an unterminated quote is an error row, never later rows swallowed
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield f"not a readable CSV row ({e})"
            continue
        if record:  # a blank line is not a row
            yield record


def csv_features(header: Sequence[str], sample: Sequence[list[str] | str], wanted: Sequence[str]) -> list[int]:
    """Positions of the feature columns: ``wanted`` (``--columns``), else each column whose sampled
    non-empty cells are mostly numbers (a stray word in one row makes that row an error, not the column text)."""
    if wanted:
        missing = [c for c in wanted if c not in header]
        if missing:
            raise TableError(f"--columns: no column {', '.join(map(repr, missing))} in the CSV header")
        return [header.index(c) for c in wanted]
    positions = []
    for i in range(len(header)):
        cells = [r[i] for r in sample if not isinstance(r, str) and i < len(r) and r[i].strip()]
        if cells and 2 * sum(map(looks_numeric, cells)) > len(cells):
            positions.append(i)
    if not positions:
        raise TableError("the CSV has no numeric column to send (name them with --columns)")
    return positions


def unique_names(names: Sequence[str], where: str) -> None:
    """TableError naming the column names that appear more than once (one line)."""
    twice = [name for name, count in Counter(names).items() if count > 1]
    if twice:
        raise TableError(f"{where}: the column name{'s' if len(twice) > 1 else ''} {', '.join(map(repr, twice))} "
                         f"appear{'' if len(twice) > 1 else 's'} more than once: give each column its own name")


class CsvHeader(NamedTuple):
    """A CSV's header (checked: present, readable, each name once) and the records after it."""

    header: list[str]
    rest: Iterator[list[str] | str]


def csv_header(stream: BinaryIO, where: str = "the CSV header") -> CsvHeader:
    """The CSV's header and its other records; TableError when it has none or its names repeat."""
    records = csv_records(stream)
    header = next(records, None)
    if header is None or isinstance(header, str):
        raise TableError("the CSV has no header row" if header is None else f"the CSV header: {header}")
    unique_names(header, where)
    return CsvHeader(header, records)


def csv_rows(stream: BinaryIO, wanted: Sequence[str]) -> tuple[list[str], Iterator[Sequence[Any] | str]]:
    """The feature column names and, per row, its feature values or its error reason."""
    header, records = csv_header(stream)
    sample = list(itertools.islice(records, CSV_SAMPLE_ROWS))
    positions = csv_features(header, sample, wanted)
    width = len(header)

    def rows() -> Iterator[Sequence[Any] | str]:
        for record in itertools.chain(sample, records):
            if isinstance(record, str):
                yield record
            elif len(record) != width:
                yield f"the row has {len(record)} fields, the header {width}"
            else:
                yield [record[i] for i in positions]

    return [header[i] for i in positions], rows()


class ParquetInput:
    """A Parquet file, or the ``.parquet``/``.pq`` files of a directory or prefix in name order, read a
    record batch at a time with ``pyarrow.parquet`` (no pre-buffered row groups: memory stays flat)."""

    def __init__(self, path: str, storage_options: dict[str, Any] | None = None) -> None:
        require_pyarrow()
        import pyarrow.parquet as pq

        self._pq = pq
        try:
            if is_remote(path):
                import fsspec

                self._fs, inner = fsspec.core.url_to_fs(path, **(storage_options or {}))
                self.files = [inner] if self._fs.isfile(inner) else _parquet_names(self._fs.find(inner))
            else:
                self._fs = None
                local = os.path.abspath(path)
                self.files = [local] if os.path.isfile(local) else _parquet_names(
                    os.path.join(root, name) for root, _, names in os.walk(local) for name in names)
            if not self.files:
                raise TableError(f"no Parquet file (.parquet, .pq) under {path}")
            self.schema = self._open(self.files[0]).schema_arrow
        except (OSError, ValueError) as e:
            raise TableError(f"cannot read the Parquet input: {str(e).splitlines()[0][:300]}") from None

    def _open(self, name: str) -> Any:
        source = self._fs.open(name, "rb") if self._fs is not None else name
        return self._pq.ParquetFile(source, pre_buffer=False, buffer_size=1 << 20)

    def count_rows(self) -> int:
        """Rows of every file, from their footers."""
        return sum(self._open(name).metadata.num_rows for name in self.files)

    def batches(self, columns: Sequence[str] | None) -> Iterator[Any]:
        """Record batches of ``columns`` (None: all), file after file."""
        for name in self.files:
            try:
                yield from self._open(name).iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns,
                                                         use_threads=False)
            except (OSError, ValueError) as e:
                raise TableError(f"cannot read {name}: {str(e).splitlines()[0][:300]}") from None


def _parquet_names(names: Iterable[str]) -> list[str]:
    return sorted(n for n in names if n.lower().endswith((".parquet", ".pq"))
                  and not os.path.basename(n).startswith(("_", ".")))


def parquet_dataset(path: str, storage_options: dict[str, Any] | None = None) -> ParquetInput:
    """The Parquet input at ``path`` (TableError, one line, when it cannot be read)."""
    return ParquetInput(path, storage_options)


def parquet_features(schema: Any, wanted: Sequence[str]) -> list[str]:
    """``wanted`` (``--columns``, checked against the schema), else every integer or float column."""
    import pyarrow.types as pt

    if wanted:
        missing = [c for c in wanted if c not in schema.names]
        if missing:
            raise TableError(f"--columns: no column {', '.join(map(repr, missing))} in the Parquet schema")
        return list(wanted)
    names = [f.name for f in schema if pt.is_integer(f.type) or pt.is_floating(f.type)]
    if not names:
        raise TableError("the Parquet input has no numeric column to send (name them with --columns)")
    return names


def parquet_rows(dataset: Any, wanted: Sequence[str],
                 rendered: bool = False) -> tuple[list[str], Iterator[Sequence[Any] | bytes]]:
    """The feature column names and their values row by row, a record batch at a time; with
    ``rendered``, a batch of finite numbers without nulls comes as its rows' lines (:func:`ndarray_lines`)."""
    unique_names(dataset.schema.names, "the Parquet schema")
    names = parquet_features(dataset.schema, wanted)

    def rows() -> Iterator[Sequence[Any] | bytes]:
        for batch in dataset.batches(names):
            lines = ndarray_lines(batch.columns) if rendered else None
            if lines is not None:
                yield from lines
            else:
                yield from zip(*(column.to_pylist() for column in batch.columns), strict=True)

    return names, rows()


def ndarray_lines(columns: Sequence[Any]) -> list[bytes] | None:
    """Each row's ``[[v1,...,vn]]`` for a batch of plain numbers, without the per-value checks of the row
    path (they cost about a fifth of a run's rate); None when a value needs them (a null, NaN, infinity,
    a type other than integers and 32/64-bit floats). Written as the row path writes them (``repr``)."""
    import pyarrow.types as pt

    values = []
    for column in columns:
        kind = column.type
        if column.null_count or not (pt.is_integer(kind) or pt.is_float32(kind) or pt.is_float64(kind)):
            return None
        numbers = column.to_pylist()
        if pt.is_floating(kind) and not math.isfinite(sum(numbers)):  # NaN, inf (or a sum past the range)
            return None
        values.append(numbers)
    return [b"[[" + ",".join(map(repr, row)).encode() + b"]]" for row in zip(*values, strict=True)]


def table_items(rows: Iterator[Sequence[Any] | str | bytes], renderer: RowRenderer, make_id: Callable[[int], str],
                wanted: Callable[[int], bool] | None = None) -> Iterator[Item]:
    """One item per row: its JSON line, or an error item with the reason (the codec's input_error);
    ``make_id`` gives a row's instance id (the batch's, as for lines)."""
    line = renderer.line
    for index, row in enumerate(rows):
        if wanted is not None and not wanted(index):
            continue
        if isinstance(row, bytes):  # already rendered (a Parquet batch of plain numbers)
            yield Item(index, make_id(index), row)
            continue
        if isinstance(row, str):
            yield Item(index, make_id(index), error_line(f"row {index}: {row}"))
            continue
        try:
            yield Item(index, make_id(index), line(row))
        except RowError as e:
            yield Item(index, make_id(index), error_line(f"row {index}: {e}"))


def count_table_rows(path: str, fmt: str, options: dict[str, Any] | None = None) -> int:
    """A table input's data rows as the run numbers them, streamed (Parquet: from the footers)."""
    if fmt == "parquet":
        return parquet_dataset(path, options).count_rows()
    with open_input(path, options) as source:
        return sum(1 for _ in csv_header(source.stream, display(path)).rest)


def table_totals(path: str, fmt: str) -> dict[str, int]:
    """Rows of a written table by ``status`` (and ``rows``), read a column at a time."""
    require_pyarrow()
    if fmt == "parquet":
        import pyarrow.parquet as pq

        batches = pq.ParquetFile(path).iter_batches(columns=["status"])
    else:
        import pyarrow.csv as pcsv

        batches = pcsv.open_csv(path, convert_options=pcsv.ConvertOptions(include_columns=["status"]))
    counts = {"rows": 0, "success": 0, "failure": 0, "missing": 0}
    for batch in batches:
        for value in batch.column(0).to_pylist():
            counts["rows"] += 1
            counts[value] = counts.get(value, 0) + 1
    return counts


def _listed(names: Sequence[str]) -> str:
    return ", ".join(map(repr, names))


def kept_problem(names: Sequence[str], where: str, keep: Sequence[str] | None) -> str | None:
    """Why the input's columns cannot be repeated in a table output (``keep``: ``--keep-columns``), else None."""
    if keep:
        missing = [n for n in keep if n not in names]
        if missing:
            return f"--keep-columns: no column {_listed(missing)} in {where}"
    clash = [n for n in (keep or names) if n in STATUS_COLUMNS]
    if clash:
        return (f"{where}: the input column{'s' if len(clash) > 1 else ''} {_listed(clash)} "
                f"{'are' if len(clash) > 1 else 'is'} named like the table output's own columns "
                f"({', '.join(STATUS_COLUMNS)}): choose the input columns to repeat with --keep-columns")
    return None


def input_problem(path: str, fmt: str, options: dict[str, Any] | None, *, columns: Sequence[str],
                  features: bool, keep: Sequence[str] | None, table_output: bool) -> str | None:
    """Why the table input at ``path`` cannot be run (one line), read from its header (a Parquet schema) and
    first rows only, else None: no header, column names that repeat, ``--columns`` it lacks or no numeric
    column (``features``: the features are known before the model is asked), and for a ``table_output``
    the kept columns (:func:`kept_problem`) and at least one row."""
    where = display(path)
    try:
        if fmt == "parquet":
            dataset = parquet_dataset(path, options)
            names = list(dataset.schema.names)
            unique_names(names, where)
            if features:
                parquet_features(dataset.schema, columns)
            rows = bool(table_output and dataset.count_rows())
        else:
            with open_input(path, options) as source:
                records = csv_header(source.stream, where)
                names = records.header
                sample = list(itertools.islice(records.rest, CSV_SAMPLE_ROWS))
            if features:
                csv_features(names, sample, columns)
            rows = bool(sample)
    except TableError as e:
        return str(e)
    except OSError as e:
        return f"{where}: {e.strerror or e}"
    if table_output:
        problem = kept_problem(names, where, keep)
        if problem is not None:
            return problem
        if not rows:
            return f"{where} has no rows: no table to write"
    return None
