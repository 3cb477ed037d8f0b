"""Table rows to items and back: each row is one item at its own index, a bad row is that row's error.

Unit level (no server): the CSV and Parquet readers, the row renderer, the table codec (errors, names),
the external sort of an output by batch_index and the prediction columns; a Hypothesis property
that random tables with random bad cells give exactly one item per row, an error exactly where a
cell is bad.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.core.items import Item
from seldon_batch_tx.pipeline.reader import instance_id, instance_ids
from seldon_batch_tx.protocols.base import InputError
from seldon_batch_tx.protocols.choose import make_codec
from seldon_batch_tx.tables import ordered
from seldon_batch_tx.tables.errors import TableError
from seldon_batch_tx.tables.formats import format_of
from seldon_batch_tx.tables.predictions import prediction, status_of
from seldon_batch_tx.tables.reader import csv_rows, parquet_dataset, parquet_rows, table_items
from seldon_batch_tx.tables.rows import ERROR_MARK, RowError, RowRenderer, number


def items_of(csv_text: str, columns: tuple[str, ...] = ()) -> tuple[list[str], list[Item]]:
    names, rows = csv_rows(io.BytesIO(csv_text.encode()), columns)
    return names, list(table_items(rows, RowRenderer(names), instance_ids("B")))


def test_csv_rows_become_one_ndarray_row_each_with_bad_rows_as_their_own_errors() -> None:
    text = "a,b,label\n1,2.5,x\n3,,y\n4,abc,z\n5,6,w,extra\n\n7,8,v\n9,nan,u\n"
    names, items = items_of(text)
    assert names == ["a", "b"]  # the text column is not a feature; a stray word does not demote b
    assert [i.index for i in items] == list(range(6))  # the blank line is not a row
    assert [i.instance_id for i in items] == [instance_id("B", n) for n in range(6)]
    assert items[0].line == b"[[1,2.5]]" and items[4].line == b"[[7,8]]"
    errors = {i.index: i.line[1:].decode() for i in items if i.line.startswith(ERROR_MARK)}
    assert errors == {1: "row 1: column 'b' is empty", 2: "row 2: column 'b' holds 'abc', not a number",
                      3: "row 3: the row has 4 fields, the header 3",
                      5: "row 5: column 'b' is 'nan', not a finite number"}


def test_a_csv_row_the_parser_refuses_is_its_own_error_and_later_rows_are_kept() -> None:
    """A quote not followed by a comma, an unterminated quote at the end: each is that row's error; an
    unterminated quote no longer swallows the rows after it as text of one cell."""
    names, items = items_of('a,b\n1,"2"x\n3,4\n5,"6\n7,8\n')
    assert names == ["a", "b"]
    assert [i.line for i in items if not i.line.startswith(ERROR_MARK)] == [b"[[3,4]]"]
    errors = [i.line[1:].decode() for i in items if i.line.startswith(ERROR_MARK)]
    assert len(errors) == 2 and "not a readable CSV row" in errors[0] and "unexpected end of data" in errors[1]


def test_csv_columns_option_chooses_and_orders_features_and_names_unknown_ones() -> None:
    names, items = items_of("a,b,c\n1,2,3\n", ("c", "a"))
    assert names == ["c", "a"] and items[0].line == b"[[3,1]]"
    with pytest.raises(TableError, match="no column 'z'"):
        items_of("a,b\n1,2\n", ("z",))
    with pytest.raises(TableError, match="no numeric column"):
        items_of("a,b\nx,y\n")
    with pytest.raises(TableError, match="no header"):
        items_of("")


def test_parquet_rows_stream_numeric_columns_and_nulls_are_row_errors(tmp_path: Path) -> None:
    table = pa.table({"x": [1.5, None, 3.0], "n": pa.array([1, 2, 3], pa.int32()), "s": ["a", "b", "c"]})
    pq.write_table(table, tmp_path / "part-0.parquet")
    pq.write_table(table, tmp_path / "part-1.parquet")  # a directory of files is one table
    names, rows = parquet_rows(parquet_dataset(str(tmp_path)), ())
    items = list(table_items(rows, RowRenderer(names), instance_ids("B"), wanted=lambda i: i != 2))
    assert names == ["x", "n"]
    assert [i.index for i in items] == [0, 1, 3, 4, 5]
    assert items[0].line == b"[[1.5,1]]" and items[1].line == ERROR_MARK + b"row 1: column 'x' is empty"
    with pytest.raises(TableError, match="no column 'q'"):
        parquet_rows(parquet_dataset(str(tmp_path)), ("q",))
    with pytest.raises(TableError, match="no Parquet file"):
        parquet_dataset(str(tmp_path / "absent.parquet"))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(TableError, match="cannot read the Parquet input"):
        parquet_dataset(str(tmp_path / "junk.parquet"))


def test_number_and_renderer() -> None:
    assert number("7", "c") == 7 and number(" 2.5 ", "c") == 2.5 and number(True, "c") == 1
    for bad in ("", None, "inf", float("nan"), "1,5"):
        with pytest.raises(RowError):
            number(bad, "c")
    assert RowRenderer(["a", "b"], per_column=True).line([1, 2.0]) == b'{"a":[1],"b":[2.0]}'
    assert format_of("s3://b/x.PARQUET", None) == "parquet" and format_of("x.csv", "jsonl") == "jsonl"


def codec_for(protocol: str = "seldon", **kw: Any) -> Any:
    return make_codec(BatchConfig(deployment_name="d", input_data_path="i.csv", output_data_path="o", batch_id="B",
                                  protocol=protocol, table_names=("a", "b"), **kw))


def test_table_codec_turns_error_items_into_input_errors_and_names_the_columns() -> None:
    codec = codec_for(batch_size=2)
    with pytest.raises(InputError, match="row 3: column 'b' is empty"):
        codec.parse(Item(3, "id", ERROR_MARK + b"row 3: column 'b' is empty"))
    parsed = [codec.parse(Item(i, instance_id("B", i), b"[[%d,%d]]" % (i, i))) for i in range(2)]
    body, members, rejected = codec.build(parsed)
    assert body["data"] == {"names": ["a", "b"], "ndarray": [[0, 0], [1, 1]]} and len(members) == 2 and not rejected
    v2 = codec_for("v2")
    body, _, _ = v2.build([v2.parse(Item(0, "id", b"[[1,2]]"))])
    assert "names" not in json.dumps(body)


def write_output(path: Path, indexes: list[int]) -> None:
    with open(path, "w") as f:
        for i in indexes:
            f.write(json.dumps({"data": {"ndarray": [[i]]}, "meta": {"tags": {"batch_index": i}}}) + "\n")


def test_ordered_records_sorts_outside_memory_and_refuses_a_duplicate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ordered, "RUN_BYTES", 200)  # many spilled runs
    path = tmp_path / "out.jsonl"
    write_output(path, [5, 3, 9, 0, 1, 8, 2, 7, 6, 4])
    got = list(ordered.ordered_records(str(path)))
    assert [i for i, _ in got] == list(range(10))
    assert all(r["data"]["ndarray"] == [[i]] for i, r in got)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("seldon-batch-sort-")]  # spilled runs removed
    write_output(path, [5, 3, 9, 0, 3, 1, 8, 2, 7, 6, 4])  # which line of row 3 would the table hold?
    with pytest.raises(TableError, match="batch_index 3 is there more than once"):
        list(ordered.ordered_records(str(path)))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("seldon-batch-sort-")]
    write_output(path, [0, 1, 2])
    assert ordered.in_order(str(path))
    with open(path, "a") as f:
        f.write('{"data": {"nd')  # a torn last line (a killed run): that row is missing, not an error
    assert [i for i, _ in ordered.ordered_records(str(path))] == [0, 1, 2]


def test_prediction_columns_are_named_from_the_answer() -> None:
    assert prediction({"data": {"names": ["p", "q"], "ndarray": [[0.1, 0.9]]}}) == [("p", 0.1), ("q", 0.9)]
    assert prediction({"data": {"ndarray": [[1, 2]]}}) == [("prediction_0", 1), ("prediction_1", 2)]
    assert prediction({"outputs": [{"name": "proba", "data": [0.2, 0.8]}, {"name": "label", "data": ["b"]}]}) == [
        ("proba_0", 0.2), ("proba_1", 0.8), ("label", "b")]
    assert prediction({"jsonData": {"k": 1}}) == [("prediction", '{"k":1}')]
    failure = {"status": {"status": "FAILURE", "info": "input_error", "reason": "bad"}}
    assert prediction(failure) == [] and status_of(failure) == ("failure", "input_error", "bad")
    assert status_of(None)[0] == "missing" and status_of({"data": {}}) == ("success", None, None)


CELLS = st.one_of(st.integers(-10**6, 10**6).map(str), st.floats(-1e6, 1e6, allow_nan=False).map(repr),
                  st.sampled_from(["", "x", "1e999", "  "]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(CELLS, min_size=3, max_size=3), min_size=1, max_size=30), st.data())
def test_every_row_is_one_item_and_an_error_exactly_where_a_cell_is_bad(rows: list[list[str]], data: Any) -> None:
    wide = data.draw(st.sets(st.integers(0, len(rows) - 1)))
    lines = ["a,b,c"] + [",".join(r + (["9"] if i in wide else [])) for i, r in enumerate(rows)]
    names, items = items_of("\n".join(lines) + "\n", ("a", "b", "c"))
    assert [i.index for i in items] == list(range(len(rows)))
    for item, row in zip(items, rows, strict=True):
        bad = item.index in wide or any(not _is_number(c) for c in row)
        assert item.line.startswith(ERROR_MARK) == bad, (row, item)
        if not bad:
            assert json.loads(item.line) == [[float(c) for c in row]]


def _is_number(cell: str) -> bool:
    try:
        return abs(float(cell)) < float("inf")
    except ValueError:
        return False


FINITE = st.floats(-1e300, 1e300)  # a sum past the float range takes the row path (checked below)
FINITE32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(FINITE, st.integers(-2**62, 2**62), FINITE32), min_size=1, max_size=20))
def test_arrow_rendered_lines_equal_the_row_by_row_lines(rows: list[tuple[float, int, float]]) -> None:
    """Parquet batches of plain numbers take the fast path: the same lines as the row path."""
    from seldon_batch_tx.tables.reader import ndarray_lines

    columns = [pa.array([r[0] for r in rows], pa.float64()), pa.array([r[1] for r in rows], pa.int64()),
               pa.array([r[2] for r in rows], pa.float32())]
    fast = ndarray_lines(columns)
    slow = [RowRenderer(["a", "b", "c"]).line(row) for row in zip(*(c.to_pylist() for c in columns), strict=True)]
    assert fast is not None
    assert fast == slow
    assert ndarray_lines([pa.array([1.0, None])]) is None and ndarray_lines([pa.array([float("inf")])]) is None
    assert ndarray_lines([pa.array([1e308, 1e308])]) is None  # the finite check's sum overflows: row path
    assert ndarray_lines([pa.array([float("nan"), 1.0])]) is None and ndarray_lines([pa.array(["1"])]) is None


def test_table_outputs_that_cannot_be_written_are_refused_before_anything_is_sent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from seldon_batch_tx.tables.formats import table_problem

    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.csv").write_text("a,b\n1,2\n")

    def problem(**kw: Any) -> str | None:
        fields = {"deployment_name": "d", "input_data_path": "in.csv", "output_data_path": "out.parquet", **kw}
        return table_problem(BatchConfig(**fields))

    assert problem() is None and problem(output_data_path="out.jsonl") is None
    assert "joins a table input" in (problem(input_data_path="in.jsonl") or "")
    assert "local path" in (problem(output_data_path="s3://b/out.parquet") or "")
    assert "seldon-batch export" in (problem(shard_count=2) or "")
    assert problem(input_data_path="in.jsonl", output_data_path="o.txt", output_format="csv") is not None
