"""Tables through the real scikit-learn iris model: the 150 rows of ``load_iris()`` (the real column
names) as CSV and Parquet, scored by LogisticRegression models trained in each model venv
(tests/iris_sklearn.py) in the real Seldon microservice (REST and gRPC) and in MLServer's sklearn runtime
(V2, model metadata discovered), written back as Parquet and CSV tables.

Each output table has every input row once, in input order, with the input's columns, the model's
own probabilities (compared, value by value, with the same saved model called on the same rows in the
same venv) and a status; bad rows (an empty cell, text in a numeric column, a wider CSV row, a null) are
their own error rows.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from tests.iris_sklearn import IrisModels, iris
from tests.mlserver_servers import MLServerServer
from tests.servers import SeldonServer, loopback_env

BIN = Path(sys.executable).parent
FEATURES: list[str] = iris()["features"]
CLASSES: list[str] = iris()["classes"]
ROWS: list[list[Any]] = iris()["rows"]
#: Bad CSV rows appended after the iris rows: (cells, why).
BAD_CSV = [(["5.0", "", "1.4", "0.2", "setosa"], f"column '{FEATURES[1]}' is empty"),
           (["5.0", "3.1", "wide", "0.2", "setosa"], f"column '{FEATURES[2]}' holds 'wide', not a number"),
           (["5.0", "3.1", "1.4", "0.2", "setosa", "extra"], "the row has 6 fields, the header 5")]


def write_inputs(directory: Path) -> tuple[Path, Path]:
    """The iris rows with the bad ones in the middle (CSV) and with a null (Parquet)."""
    cells = [[str(v) for v in r] for r in ROWS]
    csv_rows = cells[:75] + [c for c, _ in BAD_CSV] + cells[75:]
    with open(directory / "iris.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*FEATURES, "species"])
        writer.writerows(csv_rows)
    records = [dict(zip([*FEATURES, "species"], r, strict=True)) for r in ROWS]
    records.insert(40, {**records[0], FEATURES[3]: None})
    pq.write_table(pa.Table.from_pylist(records), directory / "iris.parquet", row_group_size=64)
    return directory / "iris.csv", directory / "iris.parquet"


def expected(fmt: str) -> list[int | str]:
    """Per input row: the iris row it is (its index in ROWS), or the error's reason for a bad row."""
    good: list[int | str] = list(range(len(ROWS)))
    if fmt == "csv":
        return good[:75] + [why for _, why in BAD_CSV] + good[75:]
    return good[:40] + [f"column '{FEATURES[3]}' is empty"] + good[40:]


def read_table(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    return pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(strings_can_be_null=True)).to_pylist()


def check_table(table: list[dict[str, Any]], fmt: str, prediction_columns: list[str],
                proba: list[list[float]]) -> None:
    """Every row once, in order, the input's columns, the model's own answers (``proba``: the model called
    on ROWS), errors where rows were bad."""
    want = expected(fmt)
    assert [r["batch_index"] for r in table] == list(range(len(want)))
    for row, which in zip(table, want, strict=True):
        if isinstance(which, str):
            why = which
            assert row["status"] == "failure" and row["error_kind"] == "input_error", row
            assert row["error_reason"] == f"row {row['batch_index']}: {why}"
            assert all(row[c] is None for c in prediction_columns)
            continue
        assert row["status"] == "success" and row["error_reason"] is None, row
        assert [row[c] for c in FEATURES] == ROWS[which][:4]
        assert row["species"] == ROWS[which][4]
        assert [row[c] for c in prediction_columns] == pytest.approx(proba[which], rel=1e-9, abs=0)


def run(cwd: Path, *args: str, code: int = 1) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(BIN / "seldon-batch-processor"), "-d", "iris", *args], cwd=cwd, env=loopback_env(),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == code, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("transport", ["rest", "grpc"])
@pytest.mark.parametrize(("source", "out"), [("csv", "parquet"), ("parquet", "csv")])
def test_iris_table_through_the_seldon_microservice(iris_seldon: SeldonServer, iris_models: IrisModels,
                                                    tmp_path: Path, transport: str, source: str, out: str) -> None:
    write_inputs(tmp_path)
    host = iris_seldon.rest_host if transport == "rest" else iris_seldon.grpc_host
    proc = run(tmp_path, "-g", "seldon", "-h", host, "-t", transport, "-i", f"iris.{source}",
               "-o", f"scored.{out}", "-s", "8", "-w", "3")
    assert f"rows written to scored.{out}" in proc.stderr
    check_table(read_table(tmp_path / f"scored.{out}"), source, CLASSES, iris_models.seldon_proba)
    assert (tmp_path / f"scored.{out}.jsonl").exists()  # the working file stays: what --resume continues


def test_keep_columns_and_columns_choose_what_is_sent_and_repeated(iris_seldon: SeldonServer, tmp_path: Path) -> None:
    _, parquet = write_inputs(tmp_path)
    (tmp_path / "parts").mkdir()
    parquet.rename(tmp_path / "parts" / "part-0.parquet")  # a local directory of Parquet files
    run(tmp_path, "-g", "seldon", "-h", iris_seldon.rest_host, "-i", "parts", "--input-format", "parquet",
        "-o", "scored.parquet", "--columns", ",".join(FEATURES), "--keep-columns", "species", code=1)
    table = pq.read_table(tmp_path / "scored.parquet")
    assert table.column_names == ["species", *CLASSES, "status", "error_kind", "error_reason", "batch_index"]
    assert table.num_rows == len(ROWS) + 1


def test_export_writes_the_same_table_from_an_earlier_output(iris_seldon: SeldonServer, tmp_path: Path) -> None:
    write_inputs(tmp_path)
    run(tmp_path, "-g", "seldon", "-h", iris_seldon.rest_host, "-i", "iris.csv", "-o", "plain.jsonl", "-w", "4")
    run(tmp_path, "-g", "seldon", "-h", iris_seldon.rest_host, "-i", "iris.csv", "-o", "scored.parquet", "-w", "4")
    proc = subprocess.run([str(BIN / "seldon-batch"), "export", "plain.jsonl", "--join", "iris.csv", "--to",
                           "exported.parquet"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr  # some rows failed
    summary = f"{len(ROWS) + 3} rows to exported.parquet: {len(ROWS)} succeeded, 3 failed, 0 missing"
    assert proc.stdout.strip() == summary
    assert pq.read_table(tmp_path / "exported.parquet").equals(pq.read_table(tmp_path / "scored.parquet"))


def test_iris_table_through_mlserver_v2(iris_models: IrisModels, tmp_path: Path) -> None:
    """One [rows, 4] tensor (model iris), and one input per column where the metadata names them (iris-columns)."""
    write_inputs(tmp_path)
    with MLServerServer(iris_models.mlserver_dirs) as server:
        for model, transport, host in (("iris", "rest", server.rest_host), ("iris", "grpc", server.grpc_host),
                                       ("iris-columns", "rest", server.rest_host),
                                       ("iris-columns", "grpc", server.grpc_host)):
            out = f"scored-{model}-{transport}.parquet"
            run(tmp_path, "--protocol", "v2", "--model-name", model, "-g", "seldon", "-h", host, "-t", transport,
                "-i", "iris.csv", "-o", out, "-s", "8", "-w", "2")
            check_table(read_table(tmp_path / out), "csv", [f"predict_proba_{i}" for i in range(3)],
                        iris_models.mlserver_proba[model])


def test_without_pyarrow_a_table_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    write_inputs(tmp_path)
    code = ("import sys; sys.modules['pyarrow'] = None; from seldon_batch_tx.cli import main; "
            "main(['-d', 'm', '-g', 'seldon', '-h', '127.0.0.1:9', '-i', 'iris.parquet', '-o', 'o.jsonl'])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "seldon-batch-processor: error: tables need pyarrow: pip install 'seldon-batch-tx[tables]'"]
