"""Tables after a hostile review: the real command against the real Seldon EchoModel microservice.

- An input column named like a table output's own column (``status``...) is refused before anything is
  sent (exit 2, one line naming it and ``--keep-columns``), by the run and by ``seldon-batch export``; an
  input column named like a prediction column is repeated as ``input_NAME`` (the prediction keeps its name).
- Column names that repeat (CSV header, Parquet schema) are refused the same way.
- ``seldon-batch verify`` counts a table input's rows as the run does (CSV: BOM, blank lines, quoted line
  breaks; a Parquet file or directory), not its lines or bytes.
- ``seldon-batch export`` refuses an output that is not one run's over its input (an index twice, past the
  input, several batch ids): exit 2, one line, no table.
- A table run refused for its input (no header, header only, no numeric column...) creates nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from tests.servers import SeldonServer, loopback_env

BIN = Path(sys.executable).parent
OWN = ["status", "error_kind", "error_reason", "batch_index"]


def command(cwd: Path, name: str, *args: str, code: int) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(BIN / name), *args], cwd=cwd, env=loopback_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == code, (proc.stdout[-2000:], proc.stderr[-3000:])
    return proc


def score(cwd: Path, server: SeldonServer, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    return command(cwd, "seldon-batch-processor", "-d", "echo", "-g", "seldon", "-h", server.rest_host, *args,
                   code=code)


def tool(cwd: Path, *args: str, code: int) -> subprocess.CompletedProcess[str]:
    return command(cwd, "seldon-batch", *args, code=code)


def refusal(proc: subprocess.CompletedProcess[str], prog: str) -> str:
    """The one line of a refusal (the run's lines before it: none, nothing was started)."""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), proc.stderr
    return lines[0]


def read_table(path: Path) -> pa.Table:
    if path.suffix == ".parquet":
        return pq.read_table(path)
    return pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(strings_can_be_null=True))


@pytest.mark.parametrize("out", ["csv", "parquet"])
def test_input_columns_named_like_the_outputs_own_are_refused_and_predictions_keep_their_names(
        seldon_server: SeldonServer, tmp_path: Path, out: str) -> None:
    (tmp_path / "c.csv").write_text("a,status,batch_index,error_kind,t:0\n1,2,3,4,5\n")
    line = refusal(score(tmp_path, seldon_server, "-i", "c.csv", "-o", f"c.out.{out}", code=2),
                   "seldon-batch-processor")
    assert "'status', 'batch_index', 'error_kind'" in line and "--keep-columns" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.csv"]  # nothing created, nothing sent

    score(tmp_path, seldon_server, "-i", "c.csv", "-o", f"c.out.{out}", "--keep-columns", "a,t:0")
    table = read_table(tmp_path / f"c.out.{out}")
    # the echo model names its values t:0, t:1...: the prediction keeps t:0, the input's t:0 is input_t:0
    assert table.column_names == ["a", "input_t:0", *(f"t:{i}" for i in range(5)), *OWN]
    assert table.to_pylist() == [{"a": 1, "input_t:0": 5, "t:0": 1, "t:1": 2, "t:2": 3, "t:3": 4, "t:4": 5,
                                  "status": "success", "error_kind": None, "error_reason": None, "batch_index": 0}]

    proc = tool(tmp_path, "export", f"c.out.{out}.jsonl", "--join", "c.csv", "--to", "e.parquet", code=2)
    assert "'status', 'batch_index', 'error_kind'" in refusal(proc, "seldon-batch export")
    assert not (tmp_path / "e.parquet").exists()
    tool(tmp_path, "export", f"c.out.{out}.jsonl", "--join", "c.csv", "--to", "e.parquet", "--keep-columns", "a,t:0",
         code=0)
    assert pq.read_table(tmp_path / "e.parquet").to_pylist() == table.to_pylist()


def test_column_names_that_repeat_are_refused_before_anything_is_sent(seldon_server: SeldonServer,
                                                                      tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("a,a,b\n1,2,3\n")
    pq.write_table(pa.Table.from_arrays([pa.array([1.0]), pa.array([2.0]), pa.array([3.0])], names=["x", "y", "x"]),
                   tmp_path / "d.parquet")
    before = sorted(p.name for p in tmp_path.iterdir())
    for source, name in (("d.csv", "'a'"), ("d.parquet", "'x'")):
        for out in ("o.csv", "o.parquet", "o.jsonl"):
            line = refusal(score(tmp_path, seldon_server, "-i", source, "-o", out, code=2), "seldon-batch-processor")
            assert f"the column name {name} appears more than once" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    (tmp_path / "o.jsonl").write_text(json.dumps({"data": {"ndarray": [[1]]},
                                                  "meta": {"tags": {"batch_id": "b", "batch_index": 0}}}) + "\n")
    for source, name in (("d.csv", "'a'"), ("d.parquet", "'x'")):
        proc = tool(tmp_path, "export", "o.jsonl", "--join", source, "--to", "t.parquet", code=2)
        assert f"the column name {name} appears more than once" in refusal(proc, "seldon-batch export")
        assert not (tmp_path / "t.parquet").exists()


def test_verify_counts_a_table_inputs_rows_as_the_run_does(seldon_server: SeldonServer, tmp_path: Path) -> None:
    # a BOM, a blank line, a quoted line break, a row wider than the header (that row's input_error)
    (tmp_path / "bom.csv").write_bytes("\ufeffa,b,note\n1,2,x\n\n3,4,\"two\nlines\"\n5,6,y,wide\n".encode())
    score(tmp_path, seldon_server, "-i", "bom.csv", "-o", "bom.out.csv", code=1)
    proc = tool(tmp_path, "verify", "bom.csv", "bom.out.csv.jsonl", "--allow-failed", code=0)
    assert proc.stdout.splitlines()[0] == "complete: 3 output lines for 3 input lines"
    proc = tool(tmp_path, "verify", "bom.csv", "bom.out.csv.jsonl", "--json", code=1)
    assert json.loads(proc.stdout)["failed_ranges"] == "2"

    (tmp_path / "parts").mkdir()
    for i, rows in enumerate((700, 5)):
        pq.write_table(pa.table({"x": [float(r) for r in range(rows)]}), tmp_path / "parts" / f"p{i}.parquet",
                       row_group_size=100)
    (tmp_path / "parts" / "_SUCCESS").write_text("")
    pq.write_table(pa.table({"x": [1.0, 2.0]}), tmp_path / "parts" / ".hidden.parquet")
    score(tmp_path, seldon_server, "-i", "parts", "--input-format", "parquet", "-o", "parts.jsonl", "-s", "50")
    proc = tool(tmp_path, "verify", "parts", "parts.jsonl", "--input-format", "parquet", code=0)
    assert proc.stdout.splitlines() == ["complete: 705 output lines for 705 input lines"]
    proc = tool(tmp_path, "verify", "parts/p1.parquet", "parts.jsonl", code=1)  # a file: its rows, 5
    assert proc.stdout.splitlines()[0] == "INCOMPLETE: 705 output lines for 5 input lines"


def test_export_refuses_an_output_that_is_not_one_runs_over_its_input(seldon_server: SeldonServer,
                                                                     tmp_path: Path) -> None:
    (tmp_path / "g.csv").write_text("a,b\n1,2\n3,4\n5,6\n")
    score(tmp_path, seldon_server, "-i", "g.csv", "-o", "g.jsonl", "-w", "3")
    lines = (tmp_path / "g.jsonl").read_text().splitlines(keepends=True)
    other = json.loads(lines[1])
    other["meta"]["tags"]["batch_id"] = "another-run"
    past = json.loads(lines[2])
    past["meta"]["tags"]["batch_index"] = 3
    cases = {"twice": (lines + lines[:1], "batch_index 0 is there more than once"),
             "past": (lines[:2] + [json.dumps(past) + "\n"], "batch_index 3 is past the last row of g.csv (3 rows)"),
             "ids": ([lines[0], json.dumps(other) + "\n", lines[2]], "lines of several batch ids")}
    for name, (content, why) in cases.items():
        (tmp_path / f"{name}.jsonl").write_text("".join(content[::-1]))  # out of order: sorted, spilled
        for to in ("t.csv", "t.parquet"):
            proc = tool(tmp_path, "export", f"{name}.jsonl", "--join", "g.csv", "--to", to, code=2)
            line = refusal(proc, "seldon-batch export")
            assert why in line and line.endswith("no table written"), line
        tool(tmp_path, "verify", "g.csv", f"{name}.jsonl", code=1)  # verify says INCOMPLETE for each
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(("t.", "seldon-batch-sort-"))]
    assert leftovers == []
    proc = tool(tmp_path, "export", "g.jsonl", "--join", "g.csv", "--to", "t.csv", code=0)
    assert proc.stdout.strip() == "3 rows to t.csv: 3 succeeded, 0 failed, 0 missing"


@pytest.mark.parametrize(("text", "why"), [
    ("", "the CSV has no header row"),
    ("a,b\n", "the CSV has no numeric column to send"),
    ("a,b\nx,y\n", "the CSV has no numeric column to send"),
])
def test_a_refused_table_run_creates_nothing(seldon_server: SeldonServer, tmp_path: Path, text: str,
                                            why: str) -> None:
    (tmp_path / "in.csv").write_text(text)
    for out in ("x.out.csv", "x.out.parquet", "x.out.jsonl"):
        line = refusal(score(tmp_path, seldon_server, "-i", "in.csv", "-o", out, code=2), "seldon-batch-processor")
        assert why in line
    for args in (("--columns", "zz"), ("--columns", "a", "--keep-columns", "zz")):
        score(tmp_path, seldon_server, "-i", "in.csv", "-o", "x.out.csv", *args, code=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_a_header_only_table_to_a_table_is_refused_and_to_lines_runs_empty(seldon_server: SeldonServer,
                                                                          tmp_path: Path) -> None:
    (tmp_path / "h.csv").write_text("a,b\n")
    line = refusal(score(tmp_path, seldon_server, "-i", "h.csv", "-o", "h.parquet", "--columns", "a,b", code=2),
                   "seldon-batch-processor")
    assert line.endswith("h.csv has no rows: no table to write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.csv"]
    score(tmp_path, seldon_server, "-i", "h.csv", "-o", "h.jsonl", "--columns", "a,b")
    assert (tmp_path / "h.jsonl").read_text() == ""


def test_a_misspelt_column_leaves_an_earlier_output_as_it_was(seldon_server: SeldonServer, tmp_path: Path) -> None:
    """A new user's case: ``--columns a,zz`` against an output of an earlier run emptied it, then said exit 2."""
    (tmp_path / "in.csv").write_text("a,b\n1,2\n3,4\n")
    (tmp_path / "keep.txt").write_text("an earlier run's line\n")
    line = refusal(score(tmp_path, seldon_server, "-i", "in.csv", "-o", "keep.txt", "--columns", "a,zz", code=2),
                   "seldon-batch-processor")
    assert "'zz'" in line
    assert (tmp_path / "keep.txt").read_text() == "an earlier run's line\n"


def test_export_of_a_json_lines_input_says_there_is_no_table_to_join(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("[1]\n")
    (tmp_path / "out.jsonl").write_text("")
    line = refusal(tool(tmp_path, "export", "out.jsonl", "--join", "in.txt", "--to", "x.csv", code=2),
                   "seldon-batch export")
    assert "--join: the input must be a CSV or Parquet table" in line and "no table to join" in line
