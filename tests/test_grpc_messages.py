"""Unit tests for the REST-JSON <-> protobuf conversion used by the gRPC transport (no network)."""

from __future__ import annotations

import base64
import math
from typing import Any

import pytest
from google.protobuf import json_format

from seldon_batch_tx.protocols.seldon_pb import (
    feedback_from_dict,
    message_from_dict,
    message_to_dict,
)
from seldon_batch_tx.protos import prediction_pb2
from seldon_batch_tx.protos.tensorflow.core.framework import tensor_pb2
from tests.servers import tftensor_request

TAGS = {"batch_id": "b-1", "batch_instance_id": "i-1", "batch_index": 7}


def round_trip(body: dict[str, Any]) -> dict[str, Any]:
    """Through the binary wire format and back, as a real call would go."""
    wire = message_from_dict(body).SerializeToString()
    return message_to_dict(prediction_pb2.SeldonMessage.FromString(wire))


def test_ndarray_of_ints_round_trips_as_ints() -> None:
    """An all-integral ndarray and int tags come back as ints, not 1.0."""
    body = {"data": {"names": ["a", "b"], "ndarray": [[1, 2], [3, -4]]}, "meta": {"tags": TAGS}}
    out = round_trip(body)
    assert out == body
    assert all(type(v) is int for row in out["data"]["ndarray"] for v in row)
    assert type(out["meta"]["tags"]["batch_index"]) is int


def test_ndarray_with_one_fraction_stays_all_floats() -> None:
    """An ndarray is one homogeneous array: no mix of ints and floats."""
    out = round_trip({"data": {"ndarray": [[1, 0.5], [2, 3]]}})
    assert out["data"]["ndarray"] == [[1.0, 0.5], [2.0, 3.0]]
    assert all(type(v) is float for row in out["data"]["ndarray"] for v in row)


def test_ndarray_mixed_kinds_and_huge_ints() -> None:
    """Strings, bools and nulls keep their kind; ints beyond 2**53 stay (imprecise) floats."""
    out = round_trip({"data": {"ndarray": [["x", True, None, 1]]}})
    assert out["data"]["ndarray"] == [["x", True, None, 1]]
    out = round_trip({"data": {"ndarray": [[2**60, 1]]}})
    assert out["data"]["ndarray"] == [[float(2**60), 1.0]]
    assert type(out["data"]["ndarray"][0][1]) is float


def test_ndarray_nan_and_infinity_survive() -> None:
    """json_format refuses NaN in a Value; our conversion keeps it (and keeps the array float)."""
    out = round_trip({"data": {"ndarray": [[1, math.nan, math.inf]]}})
    row = out["data"]["ndarray"][0]
    assert row[0] == 1.0 and type(row[0]) is float
    assert math.isnan(row[1]) and row[2] == math.inf


def test_tensor_round_trip_values_are_doubles() -> None:
    """Tensor values are repeated double by definition; shape stays ints."""
    body = {"data": {"tensor": {"shape": [1, 3], "values": [1, 2.5, 3]}}, "meta": {"tags": TAGS}}
    out = round_trip(body)
    assert out["data"]["tensor"] == {"shape": [1, 3], "values": [1.0, 2.5, 3.0]}
    assert out["meta"]["tags"] == TAGS


def test_tftensor_round_trip_uses_proto3_json_names() -> None:
    """The REST body of reference section 2 for tftensor comes back in the same spelling."""
    body = tftensor_request(TAGS)
    msg = message_from_dict(body)
    assert msg.data.tftensor.dtype == tensor_pb2.DT_DOUBLE
    assert [d.size for d in msg.data.tftensor.tensor_shape.dim] == [1, 3]
    out = round_trip(body)
    assert out["data"]["tftensor"] == {
        "dtype": "DT_DOUBLE",
        "tensorShape": {"dim": [{"size": "1"}, {"size": "3"}]},
        "doubleVal": [1.0, 2.0, 3.0],
    }


@pytest.mark.parametrize(
    ("dtype", "field", "values", "expected"),
    [
        ("DT_FLOAT", "floatVal", [0.5, 2], [0.5, 2.0]),
        ("DT_INT32", "intVal", [1, -2], [1, -2]),
        ("DT_INT64", "int64Val", [2**62, 3], [str(2**62), "3"]),
        ("DT_BOOL", "boolVal", [True, False], [True, False]),
        ("DT_STRING", "stringVal", ["aGk=", "eA=="], ["aGk=", "eA=="]),
    ],
)
def test_tftensor_dtypes(dtype: str, field: str, values: list[Any], expected: list[Any]) -> None:
    """Each TensorProto value field has TensorFlow's field number and survives the wire."""
    body = {"data": {"tftensor": {"dtype": dtype, "tensorShape": {"dim": [{"size": 2}]}, field: values}}}
    out = round_trip(body)["data"]["tftensor"]
    assert out["dtype"] == dtype
    assert out[field] == expected


def test_tensorflow_field_numbers() -> None:
    """Field numbers and enum values are TensorFlow's, so the wire format matches real TF."""
    fields = {f.name: f.number for f in tensor_pb2.TensorProto.DESCRIPTOR.fields}
    assert fields["dtype"] == 1 and fields["tensor_shape"] == 2
    assert (fields["float_val"], fields["double_val"], fields["int_val"]) == (5, 6, 7)
    assert (fields["string_val"], fields["int64_val"], fields["bool_val"]) == (8, 10, 11)
    shape = {f.name: f.number for f in tensor_pb2.TensorShapeProto.DESCRIPTOR.fields}
    assert shape == {"dim": 2, "unknown_rank": 3}
    dim = {f.name: f.number for f in tensor_pb2.TensorShapeProto.Dim.DESCRIPTOR.fields}
    assert dim == {"size": 1, "name": 2}
    assert (tensor_pb2.DT_FLOAT, tensor_pb2.DT_DOUBLE, tensor_pb2.DT_INT32) == (1, 2, 3)
    assert (tensor_pb2.DT_STRING, tensor_pb2.DT_INT64, tensor_pb2.DT_BOOL) == (7, 9, 10)
    seldon = {f.name: f.number for f in prediction_pb2.SeldonMessage.DESCRIPTOR.fields}
    assert seldon == {
        "status": 1, "meta": 2, "data": 3, "binData": 4, "strData": 5, "jsonData": 6, "customData": 7,
    }


def test_str_data_round_trip() -> None:
    """strData goes as a string and comes back unchanged, tags included."""
    body = {"strData": "some text \u00e9", "meta": {"tags": TAGS}}
    assert round_trip(body) == body


def test_json_data_round_trip_restores_ints_per_value() -> None:
    """jsonData is JSON: each integral number comes back as int, fractions stay floats."""
    body = {"jsonData": {"a": [1, 2.5, None, True, "s"], "b": {"c": -3}, "d": 4.0}, "meta": {"tags": TAGS}}
    out = round_trip(body)
    assert out == {"jsonData": {"a": [1, 2.5, None, True, "s"], "b": {"c": -3}, "d": 4}, "meta": {"tags": TAGS}}
    assert type(out["jsonData"]["a"][0]) is int and type(out["jsonData"]["d"]) is int


@pytest.mark.parametrize("value", [None, 5, "text", [1, 2], True])
def test_json_data_scalar_and_list(value: Any) -> None:
    """Any JSON value can be jsonData, including null and scalars."""
    assert round_trip({"jsonData": value}) == {"jsonData": value}


def test_bin_data_round_trip_is_base64() -> None:
    """binData is base64 in JSON and raw bytes on the wire."""
    raw = bytes(range(256))
    encoded = base64.b64encode(raw).decode()
    msg = message_from_dict({"binData": encoded})
    assert msg.binData == raw
    assert round_trip({"binData": encoded}) == {"binData": encoded}


def test_custom_tags_and_nested_tags() -> None:
    """Tags of any JSON shape travel; integral numbers inside them become ints again."""
    tags = {**TAGS, "customer-id": 7, "score": 0.25, "nested": {"k": [1, 2]}, "flag": False}
    out = round_trip({"data": {"ndarray": [[1]]}, "meta": {"tags": tags}})
    assert out["meta"]["tags"] == tags


def test_feedback_round_trip() -> None:
    """Feedback carries request, response, truth and a float32 reward."""
    body = {
        "request": {"data": {"ndarray": [[1, 2]]}, "meta": {"tags": TAGS}},
        "response": {"data": {"ndarray": [[0.25]]}},
        "reward": 0.5,
        "truth": {"data": {"ndarray": [[1]]}},
    }
    fb = prediction_pb2.Feedback.FromString(feedback_from_dict(body).SerializeToString())
    assert fb.reward == 0.5
    assert message_to_dict(fb.request) == body["request"]
    assert message_to_dict(fb.response) == body["response"]
    assert message_to_dict(fb.truth) == body["truth"]
    assert feedback_from_dict({"reward": 0.1}).reward == pytest.approx(0.1, rel=1e-7)


def test_response_status_and_meta_fields() -> None:
    """Status, requestPath, routing and metrics keep their REST JSON spelling."""
    response = prediction_pb2.SeldonMessage()
    response.status.code = 200
    response.status.info = "ok"
    response.meta.puid = "p"
    response.meta.requestPath["model"] = "img:1"
    response.meta.routing["router"] = 1
    metric = response.meta.metrics.add()
    metric.key, metric.type, metric.value = "m", prediction_pb2.Metric.GAUGE, 2.0
    response.strData = "x"
    out = message_to_dict(response)
    assert out == {
        "status": {"code": 200, "info": "ok"},
        "meta": {
            "puid": "p",
            "requestPath": {"model": "img:1"},
            "routing": {"router": 1},
            "metrics": [{"key": "m", "type": "GAUGE", "value": 2.0}],
        },
        "strData": "x",
    }


def test_custom_data_of_unknown_type() -> None:
    """An Any whose type is unknown here becomes {"@type", "value"} instead of failing."""
    response = prediction_pb2.SeldonMessage()
    response.customData.type_url = "type.googleapis.com/some.Unknown"
    response.customData.value = b"\x01\x02"
    assert message_to_dict(response) == {
        "customData": {"@type": "type.googleapis.com/some.Unknown", "value": "AQI="}
    }


def test_empty_message() -> None:
    """An empty body is a legal (empty) SeldonMessage; the server decides what it means."""
    assert round_trip({}) == {}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ([[1, 2]], "must be a JSON object"),
        ("text", "must be a JSON object"),
        ({"data": {"ndarry": [[1]]}}, "ndarry"),
        ({"data": {"ndarray": [[1]], "tensor": {"shape": [1], "values": [1]}}}, "oneof"),
        ({"data": {"ndarray": [[1]]}, "strData": "x"}, "oneof"),
        ({"data": {"ndarray": 5}}, "ListValue"),
        ({"data": {"tensor": {"shape": [1], "values": ["a"]}}}, "values"),
        ({"data": {"tftensor": {"dtype": "DT_BOGUS"}}}, "DT_BOGUS"),
        ({"binData": "not base64!!"}, "binData"),
        ({"strData": 5}, "strData"),
        ({"meta": {"tags": "x"}}, "tags"),
        ({"meta": {"tags": {}, "extra": 1}}, "extra"),
        ({"data": {"names": "a", "ndarray": [[1]]}}, "names"),
    ],
)
def test_malformed_requests_raise_value_error(body: Any, fragment: str) -> None:
    """Every malformed body raises ValueError naming the problem (the engine writes an error line)."""
    with pytest.raises(ValueError, match="invalid SeldonMessage|must be a JSON object") as info:
        message_from_dict(body)
    assert fragment in str(info.value)
    assert not isinstance(info.value, json_format.ParseError)


def test_malformed_feedback_raises_value_error() -> None:
    """Feedback is parsed as strictly as a SeldonMessage."""
    with pytest.raises(ValueError, match="invalid Feedback"):
        feedback_from_dict({"reward": "high"})
    with pytest.raises(ValueError, match="invalid Feedback"):
        feedback_from_dict({"request": {"data": {"bogus": 1}}})


# --- the direct builder agrees with ParseDict ----------------------------------------------------

SAME_AS_PARSEDICT = [
    {"data": {"ndarray": [[1, 2.5, -3]]}, "meta": {"tags": {"batch_id": "b", "batch_index": 7, "x": None}}},
    {"data": {"names": ["a", "b"], "ndarray": [[1, 2], [3, 4]]}},
    {"data": {"ndarray": []}},
    {"data": {"ndarray": [["a", True, None, {"k": [1, {}]}, []]]}},
    {"data": {"tensor": {"shape": [1, 3], "values": [1, 2.5, 3]}}, "meta": {"tags": {}}},
    {"data": {"tensor": {}}},
    {"data": {}},
    {"strData": "text", "meta": {"puid": "p-1", "tags": {"cust": {"nested": [1, "x"]}}}},
    {"strData": ""},
    {"jsonData": {"a": 1, "b": [2.5, None, True, "x"]}},
    {"jsonData": []},
    {"jsonData": None},
    {"meta": {}},
    {},
]


@pytest.mark.parametrize("body", SAME_AS_PARSEDICT)
def test_direct_builder_equals_parse_dict(body: dict[str, Any]) -> None:
    """The fast field-by-field builder makes exactly the message ParseDict makes (byte for byte)."""
    from seldon_batch_tx.protocols.seldon_pb import _build_message

    expected = json_format.ParseDict(body, prediction_pb2.SeldonMessage())
    built = _build_message(body)
    assert built == expected
    assert built.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)


@pytest.mark.parametrize("body", [
    {"data": {"ndarry": [[1]]}},
    {"data": {"ndarray": [[1]]}, "strData": "x"},
    {"data": {"tensor": {"shape": [1.5], "values": [1]}}},
    {"data": {"names": "a", "ndarray": [[1]]}},
    {"meta": {"tags": []}},
    {"strData": 5},
    {"jsonData": {"a": 1}, "strData": "x"},
])
def test_unusual_bodies_still_fail_like_parse_dict(body: dict[str, Any]) -> None:
    """Bodies outside the direct builder's shapes fall back to ParseDict and its ValueError."""
    with pytest.raises(ValueError, match="invalid SeldonMessage"):
        message_from_dict(body)


def test_non_finite_and_huge_numbers_fall_back() -> None:
    """NaN, Infinity and ints beyond 2**53 take the ParseDict path, whatever it decides."""
    for body in ({"jsonData": 2**60}, {"data": {"ndarray": [[float("nan")]]}}):
        try:
            expected: Any = json_format.ParseDict(body, prediction_pb2.SeldonMessage())
        except json_format.ParseError:
            expected = ValueError
        if expected is ValueError:
            with pytest.raises(ValueError):
                message_from_dict(body)
        else:
            assert message_from_dict(body) == expected
