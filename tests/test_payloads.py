"""Request bodies and output lines of the Seldon protocol, for every data and payload type."""

from __future__ import annotations

import json

import pytest

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.core.items import Item
from seldon_batch_tx.pipeline.reader import chunked, instance_id, read_items
from seldon_batch_tx.protocols.base import InputError, ResponseMismatch
from seldon_batch_tx.protocols.seldon import SeldonCodec


def codec(**kw: object) -> SeldonCodec:
    return SeldonCodec(BatchConfig(deployment_name="d", input_data_path="i", output_data_path="o",
                                   batch_id="B", **kw))  # type: ignore[arg-type]


def item(index: int, line: str) -> Item:
    return Item(index, instance_id("B", index), line.encode())


def body_for(c: SeldonCodec, *lines: str) -> dict:
    body, members, rejected = c.build([c.parse(item(i, line)) for i, line in enumerate(lines)])
    assert not rejected
    return body


TAGS0 = {"batch_id": "B", "batch_instance_id": instance_id("B", 0), "batch_index": 0}


@pytest.mark.parametrize(("kw", "line", "expected"), [
    ({}, "[[1, 2, 3]]", {"data": {"ndarray": [[1, 2, 3]]}}),
    ({"payload_type": "tensor"}, "[[1, 2, 3]]", {"data": {"tensor": {"shape": [1, 3], "values": [1, 2, 3]}}}),
    ({"payload_type": "tftensor"}, "[[1, 2, 3]]", {"data": {"tftensor": {
        "dtype": "DT_DOUBLE", "tensorShape": {"dim": [{"size": "1"}, {"size": "3"}]}, "doubleVal": [1, 2, 3]}}}),
    ({"data_type": "str"}, '"some text"', {"strData": "some text"}),
    ({"data_type": "str"}, "plain text line", {"strData": "plain text line"}),
    ({"data_type": "json"}, '{"a": [1, 2]}', {"jsonData": {"a": [1, 2]}}),
])
def test_request_bodies_match_the_reference(kw: dict, line: str, expected: dict) -> None:
    """Each data/payload type builds the reference body, and meta.tags always carries the three ids."""
    assert body_for(codec(**kw), line) == {**expected, "meta": {"tags": TAGS0}}


def test_raw_line_keeps_its_own_tags_and_gains_ours() -> None:
    """A raw SeldonMessage is sent as given with the batch tags merged into its own."""
    line = '{"data": {"names": ["a"], "ndarray": [[1]]}, "meta": {"tags": {"customer-id": 7}}}'
    body = body_for(codec(data_type="raw"), line)
    assert body == {"data": {"names": ["a"], "ndarray": [[1]]}, "meta": {"tags": {"customer-id": 7, **TAGS0}}}


def test_feedback_puts_tags_on_the_request() -> None:
    line = '{"request": {"data": {"ndarray": [[1]]}}, "response": {"data": {"ndarray": [[2]]}}, "reward": 1}'
    body = body_for(codec(data_type="raw", method="feedback"), line)
    assert body["reward"] == 1 and body["request"]["meta"]["tags"] == TAGS0


@pytest.mark.parametrize(("kw", "line", "needle"), [
    ({}, "", "blank line"),
    ({}, "not json", "not valid JSON"),
    ({}, '{"a": 1}', "expected a JSON array"),
    ({"payload_type": "tensor"}, "[[1, 2], [3]]", "ragged"),
    ({"payload_type": "tensor"}, '[["a"]]', "expected numbers"),
    ({"data_type": "raw"}, "[1]", "SeldonMessage object"),
    ({"data_type": "raw"}, '{"meta": {}}', "needs one of"),
    ({"data_type": "raw", "method": "feedback"}, '{"x": 1}', "Feedback object"),
])
def test_bad_lines_give_readable_errors(kw: dict, line: str, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        codec(**kw).parse(item(0, line))


def test_integer_data_and_batch_index_stay_integers() -> None:
    """ints in the data and batch_index are ints in the output, never 1.0."""
    c = codec()
    p = c.parse(item(3, "[[1, 2]]"))
    out = c.results({"data": {"ndarray": [[1, 2]]}, "meta": {"tags": {"batch_index": 3.0}}}, [p])[0]
    assert out["meta"]["tags"]["batch_index"] == 3 and isinstance(out["meta"]["tags"]["batch_index"], int)
    assert json.dumps(out["data"]) == '{"ndarray": [[1, 2]]}'


@pytest.mark.parametrize("payload_type", ["ndarray", "tensor", "tftensor"])
def test_mini_batch_is_split_back_one_line_per_input(payload_type: str) -> None:
    """N lines go in one request; each output line gets its own rows and its own tags."""
    c = codec(payload_type=payload_type, batch_size=3)
    parsed = [c.parse(item(i, line)) for i, line in enumerate(["[[1, 2]]", "[3, 4]", "[[5, 6], [7, 8]]"])]
    body, members, rejected = c.build(parsed)
    assert not rejected and len(members) == 3
    outputs = c.results(body, members)  # an echo model returns the request
    assert [o["meta"]["tags"]["batch_index"] for o in outputs] == [0, 1, 2]
    rows = []
    for o in outputs:
        data = o["data"]
        if payload_type == "ndarray":
            rows.append(data["ndarray"])
        elif payload_type == "tensor":
            rows.append((data["tensor"]["shape"], data["tensor"]["values"]))
        else:
            rows.append(([d["size"] for d in data["tftensor"]["tensorShape"]["dim"]], data["tftensor"]["doubleVal"]))
    if payload_type == "ndarray":
        assert rows == [[[1, 2]], [[3, 4]], [[5, 6], [7, 8]]]
    elif payload_type == "tensor":
        assert rows == [([1, 2], [1, 2]), ([1, 2], [3, 4]), ([2, 2], [5, 6, 7, 8])]
    else:
        assert rows == [(["1", "2"], [1, 2]), (["1", "2"], [3, 4]), (["2", "2"], [5, 6, 7, 8])]


def test_wrong_row_count_never_shifts_results() -> None:
    c = codec(batch_size=2)
    parsed = [c.parse(item(0, "[[1]]")), c.parse(item(1, "[[2]]"))]
    with pytest.raises(ResponseMismatch, match="1 rows for 2"):
        c.results({"data": {"ndarray": [[1]]}}, parsed)


def test_tensor_rows_of_another_shape_fail_alone() -> None:
    """In a mini-batch, a line whose row shape differs fails; the others are still sent."""
    c = codec(payload_type="tensor", batch_size=3)
    parsed = [c.parse(item(i, line)) for i, line in enumerate(["[[1, 2]]", "[[1, 2, 3]]", "[[5, 6]]"])]
    body, members, rejected = c.build(parsed)
    assert [m.item.index for m in members] == [0, 2]
    assert [p.item.index for p, _ in rejected] == [1]
    assert body["data"]["tensor"] == {"shape": [2, 2], "values": [1, 2, 5, 6]}


def test_error_line_nests_tags_and_keeps_custom_tags() -> None:
    err = codec().error(item(0, "x"), "HTTP 503: busy", info="http_503", code=503, own_tags={"customer": 1})
    assert err == {"status": {"code": 503, "info": "http_503", "reason": "HTTP 503: busy", "status": "FAILURE"},
                   "meta": {"tags": {"customer": 1, **TAGS0}}}


def test_reader_streams_and_chunks(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "in.txt"
    path.write_bytes(b"[1]\r\n[2]\n[3]")
    with open(path, "rb") as f:
        items = list(read_items(f, "B", wanted=lambda i: i != 1))
    assert [(i.index, i.line) for i in items] == [(0, b"[1]"), (2, b"[3]")]
    assert instance_id("B", 0) == items[0].instance_id != instance_id("B", 2)
    assert [len(c) for c in chunked(iter(items * 3), 4)] == [4, 2]
