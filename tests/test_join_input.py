"""--join-input: each output line (result or error) carries the input line it answers, as ``"input"``.

Through both codecs, one line per request and mini-batches (each line gets ITS input back, never a
neighbour's), error lines, text that is not JSON; then end to end against the real Seldon model
microservice, where the scored file alone pairs every answer with its input.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.core.items import Item
from seldon_batch_tx.pipeline.reader import instance_id
from seldon_batch_tx.protocols.base import Codec
from seldon_batch_tx.protocols.choose import make_codec
from tests.loopback import loopback_env
from tests.servers import SeldonServer

LINES = ["[[1, 2]]", "[3, 4]", "[[5, 6], [7, 8]]"]


def codec(**kw: Any) -> Codec:
    return make_codec(BatchConfig(deployment_name="d", input_data_path="i", output_data_path="o", batch_id="B",
                                  join_input=True, **kw))


def item(index: int, line: str) -> Item:
    return Item(index, instance_id("B", index), line.encode())


def echo(body: dict[str, Any], protocol: str) -> dict[str, Any]:
    """What an echo model answers: the request's data (V2: its inputs as outputs)."""
    if protocol == "v2":
        return {"model_name": "d", "outputs": body["inputs"]}
    return body


@pytest.mark.parametrize("protocol", ["seldon", "v2"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_each_result_carries_its_own_input(protocol: str, batch_size: int) -> None:
    c = codec(protocol=protocol, batch_size=batch_size)
    parsed = [c.parse(item(i, line)) for i, line in enumerate(LINES)]
    outputs = []
    for group in ([parsed] if batch_size > 1 else [[p] for p in parsed]):
        body, members, rejected = c.build(group)
        assert not rejected and len(members) == len(group)
        outputs += c.results(echo(body, protocol), members)
    assert [o["input"] for o in outputs] == [json.loads(line) for line in LINES]
    assert [o["meta"]["tags"]["batch_index"] for o in outputs] == [0, 1, 2]


@pytest.mark.parametrize("protocol", ["seldon", "v2"])
def test_error_lines_carry_the_input_as_parsed_or_as_text(protocol: str) -> None:
    c = codec(protocol=protocol)
    line = c.error(item(0, '{"a": [1, 2]}'), "HTTP 503", info="http_503", code=503)
    assert line["input"] == {"a": [1, 2]} and line["status"]["status"] == "FAILURE"
    assert c.error(item(1, "not json {"), "bad", info="input_error")["input"] == "not json {"
    oversize = Item(2, instance_id("B", 2), b"", oversize=10**9)
    assert c.error(oversize, "too long", info="input_too_large")["input"] is None


def test_without_the_option_no_input_is_added() -> None:
    c = make_codec(BatchConfig(deployment_name="d", input_data_path="i", output_data_path="o", batch_id="B"))
    body, members, _ = c.build([c.parse(item(0, "[[1]]"))])
    assert "input" not in c.results(body, members)[0]
    assert "input" not in c.error(item(0, "[[1]]"), "x", info="connection")


def test_real_run_pairs_every_answer_with_its_input(tmp_path: Path) -> None:
    """The real microservice, mini-batches of 2, one bad line: each output line holds its own input."""
    lines = [f"[[{i}, {i + 0.5}]]" for i in range(9)] + ["oops"]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    with SeldonServer() as server:
        proc = subprocess.run([str(Path(sys.executable).parent / "seldon-batch-processor"), "-d", "m", "-g", "seldon",
                               "-h", server.rest_host, "-i", "in.txt", "-s", "2", "-w", "2", "--join-input"],
                              cwd=tmp_path, env=loopback_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]  # the bad line is an error line
    out = [json.loads(line) for line in (tmp_path / "in.out.txt").read_text().splitlines()]
    by_index = {o["meta"]["tags"]["batch_index"]: o for o in out}
    assert sorted(by_index) == list(range(10))
    for i in range(9):
        assert by_index[i]["input"] == json.loads(lines[i])
        assert by_index[i]["data"]["ndarray"] == json.loads(lines[i])  # the echo model's answer: its own row
    assert by_index[9]["input"] == "oops" and by_index[9]["status"]["info"] == "input_error"


@pytest.mark.parametrize("raw", [b"[[1e999]]", b'"\\ud800"', b"NaN", b"\xff\xfe", b"[" * 5000 + b"]" * 5000])
def test_joined_input_is_always_writable(raw: bytes) -> None:
    """A line the output cannot carry as JSON (1e999, a lone surrogate, NaN, not UTF-8, too deep) is joined as its
    text, so its error line is written like any other and never stops the run."""
    from seldon_batch_tx.core.strict_json import compact_encoder
    from seldon_batch_tx.protocols.base import input_value

    value = input_value(Item(0, instance_id("B", 0), raw))
    assert isinstance(value, str)
    compact_encoder(ensure_ascii=False)({"input": value}).encode("utf-8")
