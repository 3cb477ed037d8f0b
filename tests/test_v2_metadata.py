"""Model-aware V2 without a server: metadata parsing, shape fitting, and the codec's use of them.

The real servers (tests/test_v2_triton.py, tests/test_v2_kserve.py) show the same end to end.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.core.items import Item
from seldon_batch_tx.pipeline.reader import instance_id
from seldon_batch_tx.protocols.base import InputError
from seldon_batch_tx.protocols.choose import make_codec
from seldon_batch_tx.protocols.v2 import V2Codec
from seldon_batch_tx.protocols.v2_metadata import (
    ModelMetadata,
    TensorSpec,
    fit_shape,
    from_grpc,
    from_rest,
    max_batch_size_from_config,
)
from seldon_batch_tx.protos import v2_metadata_pb2

TRITON_FP32 = {"name": "m", "versions": ["1"], "platform": "python",
               "inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [-1, 3]}],
               "outputs": [{"name": "OUTPUT", "datatype": "FP32", "shape": [-1, 3]}]}


def codec(metadata: ModelMetadata | None, **kw: Any) -> V2Codec:
    config = BatchConfig(deployment_name="m", input_data_path="i", output_data_path="o", batch_id="B",
                         protocol="v2", v2_model=metadata, **kw)
    c = make_codec(config)
    assert isinstance(c, V2Codec)
    return c


def parse(c: V2Codec, line: str, index: int = 0) -> Any:
    return c.parse(Item(index, instance_id("B", index), line.encode()))


def test_rest_metadata_and_triton_config() -> None:
    metadata = from_rest(TRITON_FP32)
    assert metadata.inputs == (TensorSpec("INPUT", "FP32", (-1, 3)),)
    assert metadata.batching  # a leading -1 without /config
    assert max_batch_size_from_config({"max_batch_size": 0}) == 0
    assert max_batch_size_from_config({"max_batch_size": "8"}) is None
    assert max_batch_size_from_config([]) is None
    no_batch = ModelMetadata("m", (TensorSpec("T", "BYTES", (-1,)),), max_batch_size=0)
    assert not no_batch.batching  # /config says no batching, whatever the shape
    assert "max_batch_size 0" in no_batch.describe() and "T BYTES[-1]" in no_batch.describe()


@pytest.mark.parametrize("doc", [[], {"inputs": []}, {"name": "m", "inputs": [{"name": "x"}]},
                                 {"name": "m", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-2]}]},
                                 {"name": "m", "inputs": [{"name": "x", "datatype": "FP32", "shape": "3"}]},
                                 {"name": "m", "inputs": {"x": 1}}])
def test_answers_that_are_not_metadata(doc: Any) -> None:
    with pytest.raises(ValueError):
        from_rest(doc)


def test_grpc_metadata() -> None:
    message = v2_metadata_pb2.ModelMetadataResponse(name="m", platform="p")
    message.inputs.add(name="INPUT", datatype="fp16", shape=[-1, 2])
    assert from_grpc(message) == ModelMetadata("m", (TensorSpec("INPUT", "FP16", (-1, 2)),), (), "p")


@pytest.mark.parametrize(("shape", "spec", "batching", "fitted"), [
    ((3,), (-1, 3), True, ([1, 3], 1)),
    ((2, 3), (-1, 3), True, ([2, 3], 2)),
    ((), (-1, 1), True, ([1, 1], 1)),  # a text for a batching BYTES model
    ((), (-1,), True, ([1], 1)),
    ((4,), (-1,), True, ([4], 4)),
    ((), (1,), False, ([1], 1)),  # a text for a model without batching
    ((5, 7), (-1, -1), False, ([5, 7], 1)),
    ((2, 2), (1, -1, 2), False, ([1, 2, 2], 1)),
])
def test_fit_shape(shape: tuple[int, ...], spec: tuple[int, ...], batching: bool, fitted: Any) -> None:
    assert fit_shape(shape, TensorSpec("x", "FP32", spec), batching) == fitted


@pytest.mark.parametrize(("shape", "spec", "batching"), [
    ((2,), (-1, 3), True), ((2, 2, 3), (-1, 3), True), ((0, 3), (-1, 3), True), ((2,), (1,), False),
    ((3, 1), (1,), False),
])
def test_shapes_that_do_not_fit(shape: tuple[int, ...], spec: tuple[int, ...], batching: bool) -> None:
    with pytest.raises(ValueError, match="does not fit the model's x FP32"):
        fit_shape(shape, TensorSpec("x", "FP32", spec), batching)


dims = st.integers(min_value=1, max_value=4)


@given(row=st.lists(dims, max_size=3), rows=dims, wild=st.lists(st.booleans(), min_size=3, max_size=3))
def test_fitted_shapes_have_the_models_row_shape(row: list[int], rows: int, wild: list[bool]) -> None:
    """Whatever fits: one row or ``rows`` rows, each of the spec's row shape (-1 matching any size)."""
    spec = TensorSpec("x", "FP32", (-1, *(-1 if w else d for d, w in zip(row, wild, strict=False))))
    assert fit_shape(tuple(row), spec, True) == ([1, *row], 1)
    assert fit_shape((rows, *row), spec, True) == ([rows, *row], rows)


def test_codec_takes_names_types_and_shapes_from_the_metadata() -> None:
    c = codec(from_rest(TRITON_FP32), batch_size=4)
    one, two = parse(c, "[1, 2, 3]"), parse(c, "[[1, 2, 3], [4, 5, 6]]", 1)
    assert one.value["inputs"] == [{"name": "INPUT", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]
    assert (one.rows, two.rows) == (1, 2)
    body, members, rejected = c.build([one, two])
    assert body["inputs"][0]["shape"] == [3, 3] and len(members) == 2 and not rejected
    with pytest.raises(InputError, match="not a valid FP32 element"):
        parse(c, '["a", "b", "c"]')


def test_a_line_past_max_batch_size_is_an_input_error() -> None:
    c = codec(ModelMetadata("m", (TensorSpec("X", "INT32", (-1, 1)),), max_batch_size=2))
    assert parse(c, "[[1], [2]]").rows == 2
    with pytest.raises(InputError, match="holds 3 rows; the model takes at most 2 per request"):
        parse(c, "[[1], [2], [3]]")


def test_options_given_win() -> None:
    c = codec(from_rest(TRITON_FP32), payload_type="FP64")
    assert parse(c, "[1, 2, 3]").value["inputs"][0]["datatype"] == "FP64"
    other = codec(from_rest(TRITON_FP32), input_name="OTHER")  # not declared: the line's own shape, inferred type
    assert parse(other, "[1, 2]").value["inputs"] == [{"name": "OTHER", "shape": [2], "datatype": "INT64",
                                                       "data": [1, 2]}]


def test_model_without_batching_gets_one_line_per_request() -> None:
    metadata = ModelMetadata("m", (TensorSpec("TEXT", "BYTES", (1,)),), max_batch_size=0)
    c = codec(metadata, batch_size=8, data_type="str")
    assert c.batch_size == 1
    assert parse(c, "héllo").value["inputs"] == [{"name": "TEXT", "shape": [1], "datatype": "BYTES",
                                                  "data": ["héllo"]}]


def test_without_metadata_or_for_raw_lines_nothing_changes() -> None:
    assert codec(None).model_inputs is None
    assert codec(ModelMetadata("m", ()), batch_size=3).model_inputs is None  # declares nothing (MLServer's echo)
    raw = codec(from_rest(TRITON_FP32), data_type="raw")
    request = {"inputs": [{"name": "A", "shape": [1], "datatype": "INT64", "data": [1]}]}
    assert parse(raw, json.dumps(request)).value == request


leaves = st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=3), st.booleans())
nested = st.recursive(st.lists(leaves, max_size=3), lambda inner: st.lists(inner, max_size=3), max_leaves=20)


@given(nested)
def test_shape_and_flat_agrees_with_the_plain_reading(value: Any) -> None:
    """The level-at-a-time reading gives the same shape and elements as tensor_shape + flatten, or refuses alike."""
    from seldon_batch_tx.protocols import base
    from seldon_batch_tx.protocols.v2 import tensor_shape
    from seldon_batch_tx.protocols.v2_inputs import shape_and_flat

    try:
        expected: Any = (tensor_shape(value), base.flatten(value))
    except InputError:
        expected = InputError
    try:
        got: Any = shape_and_flat(value, "x")[:2]
    except InputError:
        got = InputError
    assert got == expected


@pytest.mark.parametrize(("datatype", "line", "bad"), [("FP32", "[1, 1e39]", "1e+39"), ("FP16", "[70000]", "70000"),
                                                       ("INT8", "[127, 128]", "128"), ("UINT8", "[256]", "256")])
def test_values_out_of_the_datatypes_range_are_input_errors(datatype: str, line: str, bad: str) -> None:
    """Only that line fails (in binary form the whole mini-batch could not be encoded)."""
    c = codec(ModelMetadata("m", (TensorSpec("X", datatype, (-1,)),)))
    with pytest.raises(InputError, match=re.escape(f"value {bad} is out of {datatype}'s range")):
        parse(c, line)
    plain = codec(None, payload_type=datatype)
    with pytest.raises(InputError, match="range"):
        parse(plain, line)
