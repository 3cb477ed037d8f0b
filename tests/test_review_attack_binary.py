"""Review attack: binary V2 answers whose tensor bytes happen to be JSON whitespace.

Bytes 9, 10, 13 and 32 after a JSON header make the whole body valid JSON; the answer must still
be read as a header plus binary outputs (each line its values), never as a JSON answer whose
outputs have no data (which was written as a result line without ``data``, counted as success).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seldon_batch_tx.core.failures import RequestFailed
from seldon_batch_tx.protocols.v2_binary import decode_answer
from tests.loopback import loopback_env
from tests.triton_servers import TritonServer, ensure_triton_venv
from tests.v2_runs import PROCESSOR

WHITESPACE = b" \t\n\r"


def header(datatype: str, size: int, count: int) -> bytes:
    return json.dumps({"model_name": "m", "outputs": [
        {"name": "OUT", "datatype": datatype, "shape": [1, count], "parameters": {"binary_data_size": size}}]}).encode()


@given(st.binary(min_size=1, max_size=64).map(lambda b: bytes(WHITESPACE[x % 4] for x in b)))
def test_whitespace_bytes_are_values(raw: bytes) -> None:
    """UINT8 values that are all JSON whitespace are read as the values they are."""
    answer, _ = decode_answer(header("UINT8", len(raw), len(raw)) + raw)
    assert answer["outputs"] == [{"name": "OUT", "datatype": "UINT8", "shape": [1, len(raw)], "data": list(raw)}]


def test_fp16_of_spaces() -> None:
    """FP16 0x2020 (0.008056640625) twice: the bytes are four spaces."""
    answer, _ = decode_answer(header("FP16", 4, 2) + b"    ")
    assert answer["outputs"][0]["data"] == [0.008056640625, 0.008056640625]


def test_binary_size_without_bytes_is_bad_response() -> None:
    """A JSON answer whose output claims binary data it does not carry is not a result without data."""
    with pytest.raises(RequestFailed) as caught:
        decode_answer(header("FP32", 8, 2))
    assert caught.value.kind == "bad_response"


def test_json_answer_unchanged() -> None:
    body = json.dumps({"outputs": [{"name": "OUT", "datatype": "FP32", "shape": [1], "data": [1.5]}]}).encode()
    assert decode_answer(body) == (json.loads(body), body)


def test_real_triton_fp16_answer_of_spaces(tmp_path: Path) -> None:
    """The real Triton's half_fp16 (OUTPUT = 2 X) answering 0.008056640625: every line has its data."""
    ensure_triton_venv()
    src, out = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text("[0.0040283203125, 0.0040283203125]\n[1.0, 2.0]\n")
    with TritonServer(["half_fp16"]) as server:
        proc = subprocess.run([PROCESSOR, "--protocol", "v2", "-d", "half_fp16", "-g", "seldon", "-t", "rest",
                               "-h", server.rest_host, "-i", str(src), "-o", str(out), "--binary-data", "-s", "1"],
                              capture_output=True, text=True, timeout=120, env=loopback_env())
    records: list[dict[str, Any]] = sorted((json.loads(x) for x in out.read_text().splitlines()),
                                           key=lambda r: r["meta"]["tags"]["batch_index"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r["outputs"][0]["data"] for r in records] == [[0.008056640625] * 2, [2.0, 4.0]]
