"""A line holding a lone surrogate is that line's ``input_error``, never sent (issue 25, low).

``"\\ud800"`` with ``-a str`` (and inside ``-a json`` or V2 lines) used to be sent, then its echoed answer
could not be written and the line was recorded as ``bad_response``: the model was blamed for the input.
Through the real command against tests/hostile_server.py (REST and gRPC), whose request log proves
the line never left; a Hypothesis property over any string for the codecs' text reading.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seldon_batch_tx.protocols.base import InputError, load_json_line, parse_str
from tests.hostile_server import HostileServer
from tests.loopback import loopback_env

CLI = str(Path(sys.executable).parent / "seldon-batch-processor")
LINES = {
    "str": b'"\\ud800"\n"fine"\n"x\\udfffy"\n',
    "json": b'{"x": "\\ud800"}\n{"x": 1}\n["a", "\\udc80"]\n',
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileServer]:
    server = HostileServer(tmp_path_factory.mktemp("hostile") / "requests.jsonl", grpc=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


CASES = [("rest", "seldon", "str"), ("rest", "seldon", "json"), ("grpc", "seldon", "str"),
         ("rest", "v2", "str")]


@pytest.mark.parametrize(("transport", "protocol", "data_type"), CASES, ids=["-".join(c) for c in CASES])
def test_a_lone_surrogate_is_the_lines_input_error(tmp_path: Path, hostile: HostileServer, transport: str,
                                                   protocol: str, data_type: str) -> None:
    batch_id = f"surrogate-{transport}-{protocol}-{data_type}"
    (tmp_path / "in.txt").write_bytes(LINES[data_type])
    host = hostile.grpc_host if transport == "grpc" else hostile.rest_host
    proc = subprocess.run([CLI, "-d", "echo", "-g", "seldon", "-h", host, "-t", transport, "--protocol", protocol,
                           "-a", data_type, "-u", batch_id, "-r", "0", "-i", str(tmp_path / "in.txt"),
                           "-o", str(tmp_path / "out.txt")], capture_output=True, text=True, timeout=120,
                          env=loopback_env())
    assert proc.returncode == 1, proc.stderr
    records = {r["meta"]["tags"]["batch_index"]: r for r in
               (json.loads(line) for line in (tmp_path / "out.txt").read_text("utf-8").splitlines())}
    assert sorted(records) == [0, 1, 2]
    for index in (0, 2):
        status = records[index]["status"]
        assert status["info"] == "input_error" and "lone surrogate" in status["reason"], status
    assert "status" not in records[1] or records[1]["status"].get("status") != "FAILURE"
    sent = sorted(r.get("batch_index") for r in hostile.received() if r.get("batch_id") == batch_id)
    assert sent == [1]  # only the good line left the process


@given(st.text())
def test_text_lines_are_sent_only_as_valid_unicode(text: str) -> None:
    """Any string as a JSON literal (surrogates included, escaped by json.dumps): the codec's reading is
    text that encodes as UTF-8, or an InputError naming the lone surrogate."""
    line = json.dumps(text).encode()
    for read in (parse_str, load_json_line):
        try:
            value = read(line)
        except InputError as e:
            assert "lone surrogate" in str(e)
            with pytest.raises(UnicodeEncodeError):
                text.encode("utf-8")
        else:
            assert value == text
            value.encode("utf-8")
