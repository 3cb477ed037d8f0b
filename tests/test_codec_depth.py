"""Codecs against JSON of any depth and answers of the wrong structure.

Input lines nested past :data:`MAX_JSON_DEPTH` (up to 100,000 deep) are InputError with a
readable reason in both protocols and every data type that reads JSON; answers a codec cannot
split raise ResponseMismatch or BadResponse with a reason naming what was wrong, never a bare
TypeError from deep inside.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.core.items import Item
from seldon_batch_tx.core.strict_json import json_depth
from seldon_batch_tx.pipeline.reader import instance_id
from seldon_batch_tx.protocols.base import (
    MAX_JSON_DEPTH,
    BadResponse,
    InputError,
    ResponseMismatch,
    load_json_line,
)
from seldon_batch_tx.protocols.choose import make_codec


def codec(**kw: Any) -> Any:
    return make_codec(BatchConfig(deployment_name="m", input_data_path="i", output_data_path="o", batch_id="B", **kw))


def item(index: int, line: bytes) -> Item:
    return Item(index, instance_id("B", index), line)


def deep(depth: int, open_: bytes = b"[", close: bytes = b"]") -> bytes:
    return open_ * depth + b"1" + close * depth


DEEP_LINES = {
    "arrays-100000": deep(100_000),
    "objects-100000": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "arrays-990": deep(990),  # decodes in some stacks, not in others: refused either way
    "arrays-just-over": deep(MAX_JSON_DEPTH + 1),
    "raw-just-over": b'{"data": {"ndarray": ' + deep(MAX_JSON_DEPTH) + b"}}",
    "unclosed-100000": b"[" * 100_000,
}

CONFIGS = [
    {"protocol": "seldon", "data_type": "data"},
    {"protocol": "seldon", "data_type": "data", "payload_type": "tensor", "batch_size": 4},
    {"protocol": "seldon", "data_type": "json"},
    {"protocol": "seldon", "data_type": "raw"},
    {"protocol": "seldon", "data_type": "raw", "method": "feedback"},
    {"protocol": "v2", "data_type": "data"},
    {"protocol": "v2", "data_type": "data", "batch_size": 4},
    {"protocol": "v2", "data_type": "raw"},
]


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: "-".join(str(v) for v in kw.values()))
@pytest.mark.parametrize("name", list(DEEP_LINES))
def test_deep_lines_are_input_errors(kw: dict[str, Any], name: str) -> None:
    line = DEEP_LINES[name]
    with pytest.raises(InputError) as e:
        codec(**kw).parse(item(0, line))
    message = str(e.value)
    if name == "unclosed-100000":
        assert "nested too deeply" in message or "not valid JSON" in message
    else:
        assert "JSON nested too deeply" in message, message


@pytest.mark.parametrize("protocol", ["seldon", "v2"])
def test_a_deep_text_line_is_just_text(protocol: str) -> None:
    """``-a str`` does not read JSON structure: a bracket-heavy line is a string like any other."""
    line = deep(100_000)
    parsed = codec(protocol=protocol, data_type="str").parse(item(0, line))
    assert line.decode() in json.dumps(parsed.value)


@pytest.mark.parametrize("kw", CONFIGS[:2] + CONFIGS[5:6], ids=["ndarray", "tensor", "v2"])
def test_depth_at_the_limit_and_brackets_in_strings_are_accepted(kw: dict[str, Any]) -> None:
    c = codec(**kw)
    c.parse(item(0, deep(MAX_JSON_DEPTH)))
    c.parse(item(1, b"[" + b",".join([b"[1]"] * (3 * MAX_JSON_DEPTH)) + b"]"))  # many brackets, depth 2
    assert load_json_line(b'["' + b"[" * 5000 + b'", 1]') == ["[" * 5000, 1]


def depth_of(value: Any) -> int:
    """The reference: nesting depth by recursion (fine for the small values generated here)."""
    if isinstance(value, list):
        return 1 + max((depth_of(x) for x in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(x) for x in value.values()), default=0)
    return 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(alphabet='[]{}"\\ab,:'),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(alphabet='[]{}"\\a'), children,
                                                                       max_size=4),
    max_leaves=40,
)


@settings(max_examples=120, deadline=None)
@given(json_values)
def test_json_depth_matches_a_recursive_walk(value: Any) -> None:
    """The C-speed depth (strings dropped, brackets summed) agrees with a recursive walk, strings
    full of brackets and escaped quotes included."""
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False, separators=(",", ":"))):
        assert json_depth(text.encode()) == depth_of(value)


# -- answers ---------------------------------------------------------------------------


def two(c: Any, lines: tuple[bytes, bytes] = (b"[1]", b"[2]")) -> list[Any]:
    body, members, rejected = c.build([c.parse(item(i, line)) for i, line in enumerate(lines)])
    assert not rejected
    return members


@pytest.mark.parametrize(("payload_type", "data", "error", "needle"), [
    ("tensor", {"tensor": {"shape": [2], "values": 5}}, BadResponse, "tensor.values is a JSON number"),
    ("tensor", {"tensor": {"shape": "2", "values": [1, 2]}}, BadResponse, "tensor.shape"),
    ("tensor", {"tensor": {"shape": [2, -1], "values": [1, 2]}}, BadResponse, "non-negative"),
    ("tensor", {"tensor": {"shape": [2, 2], "values": [1, 2]}}, ResponseMismatch, "2 values for its shape [2, 2]"),
    ("tftensor", {"tftensor": {"tensorShape": {"dim": [{"size": "x"}]}, "doubleVal": [1, 2]}}, BadResponse, "dim"),
    ("tftensor", {"tftensor": {"tensorShape": {"dim": 3}, "doubleVal": [1, 2]}}, BadResponse, "dims"),
    ("tftensor", {"tftensor": {"tensorShape": {"dim": [{"size": "2"}]}, "doubleVal": {"a": 1}}}, BadResponse,
     "doubleVal is a JSON object"),
    ("tftensor", {"tftensor": {"dtype": "DT_FLOAT", "tensorShape": {"dim": [{"size": "2"}]}, "tensorContent": "%%"}},
     BadResponse, "not valid base64"),
    ("tftensor", {"tftensor": {"dtype": "DT_FLOAT", "tensorShape": {"dim": [{"size": "2"}]},
                               "tensorContent": base64.b64encode(b"\0" * 6).decode()}},
     ResponseMismatch, "6 bytes of content"),
])
def test_unsplittable_seldon_answers_say_what_is_wrong(payload_type: str, data: Any, error: type, needle: str) -> None:
    c = codec(payload_type=payload_type, batch_size=2)
    with pytest.raises(error) as e:
        c.results({"data": data}, two(c))
    assert needle in str(e.value)


def test_a_well_formed_packed_tftensor_still_splits() -> None:
    c = codec(payload_type="tftensor", batch_size=2)
    content = base64.b64encode(b"\1\0\0\0\2\0\0\0").decode()
    out = c.results({"data": {"tftensor": {"dtype": "DT_FLOAT", "tensorShape": {"dim": [{"size": "2"}]},
                                           "tensorContent": content}}}, two(c))
    assert [base64.b64decode(o["data"]["tftensor"]["tensorContent"]) for o in out] == [b"\1\0\0\0", b"\2\0\0\0"]


@pytest.mark.parametrize("protocol", ["seldon", "v2"])
@pytest.mark.parametrize("batch_size", [1, 2])
@pytest.mark.parametrize("answer", [[1, 2], "text", 5, None], ids=["list", "string", "number", "null"])
def test_an_answer_that_is_not_an_object_is_bad_response(protocol: str, batch_size: int, answer: Any) -> None:
    c = codec(protocol=protocol, batch_size=batch_size)
    members = two(c) if batch_size == 2 else [c.parse(item(0, b"[1]"))]
    with pytest.raises(BadResponse, match="not a"):
        c.results(answer, members)


@pytest.mark.parametrize(("output", "error", "needle"), [
    ({"name": "o", "shape": [2], "datatype": "INT64", "data": 5}, BadResponse, "data is a JSON number"),
    ({"name": "o", "shape": [2, 1], "datatype": "INT64", "data": [[1], 2]}, BadResponse, "ragged"),
    ({"name": "o", "shape": [2], "datatype": "INT64", "data": [1]}, ResponseMismatch, "do not fill"),
])
def test_unsplittable_v2_answers_say_what_is_wrong(output: Any, error: type, needle: str) -> None:
    c = codec(protocol="v2", batch_size=2)
    with pytest.raises(error, match=needle):
        c.results({"outputs": [output]}, two(c))


@pytest.mark.parametrize("protocol", ["seldon", "v2"])
@pytest.mark.parametrize(("line", "needle"), [
    (b"[1e999, 2]", "beyond the range"),
    (b'{"a": [[-1E+0400]]}', "beyond the range"),
    (b"[1" + b"0" * 400 + b".5]", "beyond the range"),
    (b"[NaN, 1]", "NaN is not a JSON number"),
    (b"[-Infinity]", "-Infinity is not a JSON number"),
    (b"[[" + b"9" * 100_000 + b"]]", "not valid JSON"),
])
def test_numbers_strict_json_cannot_carry_are_input_errors(protocol: str, line: bytes, needle: str) -> None:
    """Their answers could only be written as invalid JSON (NaN, Infinity): refused at the input."""
    for data_type in ("data", "raw") if protocol == "v2" else ("data", "json"):
        with pytest.raises(InputError, match=needle):
            codec(protocol=protocol, data_type=data_type).parse(item(0, line))


def test_large_but_finite_numbers_and_exponent_text_pass() -> None:
    assert load_json_line(b'[1e308, 1.5e-300, "e999", 1' + b"0" * 400 + b"]")[:3] == [1e308, 1.5e-300, "e999"]
