"""Table inputs from object storage: a CSV object and a prefix of Parquet objects (moto's S3 server on
loopback, authentication on) scored by the real scikit-learn iris model in the real Seldon microservice, with a
local Parquet table out; and --resume of a CSV from S3 (it counts the rows first)."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.iris_sklearn import IrisModels
from tests.s3_server import S3Server
from tests.servers import SeldonServer
from tests.test_tables_real import BIN, CLASSES, FEATURES, ROWS, check_table, expected, read_table, write_inputs


def parquet_bytes(records: list[dict[str, object]]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), sink)
    return sink.getvalue()


def test_csv_object_and_parquet_prefix_from_s3(iris_seldon: SeldonServer, iris_models: IrisModels,
                                               tmp_path: Path) -> None:
    csv_path, _ = write_inputs(tmp_path)
    records = [dict(zip([*FEATURES, "species"], r, strict=True)) for r in ROWS]
    records.insert(40, {**records[0], FEATURES[3]: None})  # as tests/test_tables_real.py's Parquet input
    with S3Server(tmp_path / "moto.log") as s3:
        s3.make_bucket("tables")
        s3.put("s3://tables/in/iris.csv", csv_path.read_bytes())
        s3.put("s3://tables/parts/part-000.parquet", parquet_bytes(records[:100]))
        s3.put("s3://tables/parts/part-001.parquet", parquet_bytes(records[100:]))
        s3.put("s3://tables/parts/_SUCCESS", b"")  # a marker file is not a part
        base = [str(BIN / "seldon-batch-processor"), "-d", "iris", "-g", "seldon", "-h", iris_seldon.rest_host,
                "-s", "4"]
        for args, fmt in ((["-i", "s3://tables/in/iris.csv", "-o", "from-csv.parquet"], "csv"),
                          (["-i", "s3://tables/parts/", "--input-format", "parquet", "-o", "from-parts.parquet"],
                           "parquet")):
            proc = subprocess.run([*base, *args], cwd=tmp_path, env=s3.env(), capture_output=True, text=True,
                                  timeout=180)
            assert proc.returncode == 1, proc.stderr[-3000:]  # the bad rows
            check_table(read_table(tmp_path / args[-1]), fmt, CLASSES, iris_models.seldon_proba)
        (tmp_path / "from-csv.parquet").unlink()
        proc = subprocess.run([*base, "-i", "s3://tables/in/iris.csv", "-o", "from-csv.parquet", "--resume"],
                              cwd=tmp_path, env=s3.env(), capture_output=True, text=True, timeout=180)
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert f"({len(expected('csv'))} from an earlier run)" in proc.stdout + proc.stderr
        check_table(read_table(tmp_path / "from-csv.parquet"), "csv", CLASSES, iris_models.seldon_proba)
