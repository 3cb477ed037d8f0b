"""Triton's binary tensor extension (``--binary-data``) without a server: the bytes, and bad answers.

tests/test_v2_triton.py shows the same against the real Triton (same lines as JSON mode).
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seldon_batch_tx.core.failures import RequestFailed
from seldon_batch_tx.protocols.v2_binary import HEADER, decode_answer, encode_request, pack, unpack
from seldon_batch_tx.transports.http import classify

INTS = {"INT8": 8, "INT16": 16, "INT32": 32, "INT64": 64}


@given(st.sampled_from(sorted(INTS)).flatmap(
    lambda t: st.tuples(st.just(t), st.lists(st.integers(-(2 ** (INTS[t] - 1)), 2 ** (INTS[t] - 1) - 1)))))
def test_integers_round_trip(case: tuple[str, list[int]]) -> None:
    datatype, values = case
    assert unpack(datatype, pack(datatype, values)) == values


@given(st.lists(st.text()))
def test_bytes_round_trip(values: list[str]) -> None:
    assert unpack("BYTES", pack("BYTES", values)) == values


@given(st.lists(st.floats(width=16, allow_nan=False)))
def test_fp16_round_trip(values: list[float]) -> None:
    assert unpack("FP16", pack("FP16", values)) == values


def test_bf16_is_the_upper_half_of_fp32() -> None:
    assert pack("BF16", [1.0, -2.5]) == struct.pack("<f", 1.0)[2:] + struct.pack("<f", -2.5)[2:]
    assert unpack("BF16", pack("BF16", [1.0, -2.5, 3.140625])) == [1.0, -2.5, 3.140625]


def test_request_is_a_json_header_then_each_inputs_bytes() -> None:
    body = {"id": "x", "parameters": {"batch_index": 3},
            "inputs": [{"name": "A", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2]},
                       {"name": "B", "datatype": "BYTES", "shape": [1], "data": ["hé"]}]}
    payload, headers = encode_request(body)
    (name, length), = headers
    assert name == HEADER
    header = json.loads(payload[:int(length)])
    assert header["parameters"] == {"batch_index": 3, "binary_data_output": True}
    assert header["inputs"][0] == {"name": "A", "datatype": "FP32", "shape": [1, 2],
                                   "parameters": {"binary_data_size": 8}}
    assert header["inputs"][1]["parameters"] == {"binary_data_size": 7}
    assert payload[int(length):] == struct.pack("<2f", 1.5, 2) + struct.pack("<I", 3) + "hé".encode()


def answer(outputs: list[dict[str, Any]], blobs: bytes) -> bytes:
    return json.dumps({"model_name": "m", "outputs": outputs}).encode() + blobs


def test_binary_outputs_become_json_data() -> None:
    body = answer([{"name": "O", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}},
                   {"name": "J", "datatype": "INT64", "shape": [1], "data": [7]}], struct.pack("<2f", 1, 2))
    decoded = classify(200, body, decode=decode_answer)
    assert decoded["outputs"] == [{"name": "O", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]},
                                  {"name": "J", "datatype": "INT64", "shape": [1], "data": [7]}]
    plain = json.dumps({"model_name": "m", "outputs": []}).encode()
    assert decode_answer(plain) == ({"model_name": "m", "outputs": []}, plain)


@pytest.mark.parametrize(("outputs", "blobs", "why"), [
    ([{"name": "O", "datatype": "FP32", "shape": [3], "parameters": {"binary_data_size": 8}}],
     struct.pack("<2f", 1, 2), "2 FP32 elements do not fill its shape [3]"),
    ([{"name": "O", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 12}}],
     struct.pack("<2f", 1, 2), "binary_data_size 12 does not fit the 8 bytes left"),
    ([{"name": "O", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}],
     struct.pack("<2f", 1, 2), "4 bytes after the last binary output"),
    ([{"name": "O", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 3}}],
     b"\xff\xfe\x00", "not a whole number of FP32 elements"),
    ([{"name": "O", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}],
     struct.pack("<I", 9) + b"\x80\x81", "runs past its tensor's bytes"),
    ([{"name": "O", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}],
     struct.pack("<f", math.nan), "NaN or Infinity"),
])
def test_answers_that_do_not_add_up_are_bad_responses(outputs: list[dict[str, Any]], blobs: bytes,
                                                      why: str) -> None:
    """Not retried (the same answer would come again), and the reason quotes no binary bytes."""
    with pytest.raises(RequestFailed) as e:
        classify(200, answer(outputs, blobs), decode=decode_answer)
    assert e.value.kind == "bad_response" and not e.value.retryable
    assert why in e.value.reason
    assert e.value.reason.isprintable()


def test_json_answers_are_read_as_before() -> None:
    with pytest.raises(RequestFailed) as e:
        classify(200, b"<html>", decode=decode_answer)
    assert e.value.kind == "bad_response" and "not JSON" in e.value.reason


def test_bf16_over_grpc_travels_as_raw_contents() -> None:
    from seldon_batch_tx.protocols.v2_pb import request_from_dict, response_to_dict
    from seldon_batch_tx.protos import grpc_service_pb2

    request = request_from_dict({"inputs": [{"name": "X", "datatype": "BF16", "shape": [2], "data": [1.0, -2.5]},
                                            {"name": "Y", "datatype": "INT32", "shape": [1], "data": [3]}]}, "m")
    assert list(request.raw_input_contents) == [pack("BF16", [1.0, -2.5]), struct.pack("<i", 3)]
    response = grpc_service_pb2.ModelInferResponse(model_name="m")
    response.outputs.add(name="O", datatype="BF16", shape=[2])
    response.raw_output_contents.append(pack("BF16", [0.5, 4.0]))
    assert response_to_dict(response)["outputs"][0]["data"] == [0.5, 4.0]
