"""Review attack: a raw V2 line whose BYTES element is a number, sent with ``--binary-data``.

``bytes(n)`` is n zero bytes: a 90-byte line holding 200000000 made the client build (and send) a
200 MB request, and one holding 10**13 a MemoryError that failed every line of its mini-batch as
``internal_error``. A BYTES element must be text (or a list of byte values): anything else is
that line's ``input_error``, and the other lines of its mini-batch get their answers.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from seldon_batch_tx.protocols.v2_binary import pack
from tests.loopback import loopback_env
from tests.triton_servers import TritonServer, ensure_triton_venv
from tests.v2_runs import PROCESSOR


@pytest.mark.parametrize("element", [200_000_000, 10**13, True, 1.5, None, {"a": 1}])
def test_a_bytes_element_that_is_not_text_is_refused(element: object) -> None:
    with pytest.raises(ValueError, match="a BYTES element must be text"):
        pack("BYTES", ["fine", element])


def test_text_and_byte_values_still_pack() -> None:
    assert pack("BYTES", ["hi", [104, 105]]) == b"\x02\x00\x00\x00hi\x02\x00\x00\x00hi"


def test_real_triton_bomb_line_fails_alone(tmp_path: Path) -> None:
    ensure_triton_venv()

    def line(data: object) -> str:
        return json.dumps({"inputs": [{"name": "INPUT", "datatype": "BYTES", "shape": [1, 1], "data": [data]}]})

    src, out = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text("\n".join([line("hello"), line(200_000_000), line("world"), line(10**13)]) + "\n")
    with TritonServer(["upper_bytes"]) as server:
        proc = subprocess.run(["/usr/bin/time", "-f", "maxrss_kb=%M", PROCESSOR, "--protocol", "v2", "-d",
                               "upper_bytes", "-g", "seldon", "-t", "rest", "-h", server.rest_host, "--data-type",
                               "raw", "--binary-data", "-s", "4", "-i", str(src), "-o", str(out)],
                              capture_output=True, text=True, timeout=120, env=loopback_env())
    records = sorted((json.loads(x) for x in out.read_text().splitlines()),
                     key=lambda r: r["meta"]["tags"]["batch_index"])
    assert len(records) == 4, proc.stderr[-2000:]
    assert [r["outputs"][0]["data"] for r in (records[0], records[2])] == [["HELLO!"], ["WORLD!"]]
    for bad in (records[1], records[3]):
        assert bad["status"]["info"] == "input_error"
        assert "a BYTES element must be text, not int" in bad["status"]["reason"]
    rss_kb = int(proc.stderr.rsplit("maxrss_kb=", 1)[1].split()[0])
    assert rss_kb < 150_000  # no 200 MB request was built
