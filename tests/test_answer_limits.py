"""The answer checks every transport shares, without a server: the depth bound is exact, a model
FAILURE reads the same over REST and gRPC, numbers no strict JSON line can carry are refused,
protobuf builders never raise RecursionError, gRPC size limits are told apart.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from seldon_batch_tx.core.failures import RequestFailed
from seldon_batch_tx.core.strict_json import MAX_ANSWER_DEPTH
from seldon_batch_tx.core.strict_json import too_deep as text_too_deep
from seldon_batch_tx.protocols.seldon_pb import feedback_from_dict, message_from_dict
from seldon_batch_tx.protocols.v2_pb import request_from_dict
from seldon_batch_tx.protos import prediction_pb2
from seldon_batch_tx.transports.http import classify
from tests.transport_hostile_helpers import (
    nested,
)


def too_deep(value: Any, body: bytes) -> bool:
    """Whether an answer (``body``, decoding to ``value``) is past the answers' depth limit."""
    return text_too_deep(body, MAX_ANSWER_DEPTH)


def test_too_deep_is_exact() -> None:
    """The quick bound never rejects a shallow answer (brackets in strings included) and never
    accepts a deep one."""
    limit = MAX_ANSWER_DEPTH
    for depth in (limit - 1, limit):
        value = {"a": nested(depth - 1)}
        assert not too_deep(value, json.dumps(value).encode())
    value = {"a": nested(limit)}
    assert too_deep(value, json.dumps(value).encode())
    tricky = {"s": "[" * 5000, "t": "]" * 10 + "{" * 3000, "a": nested(3)}
    assert not too_deep(tricky, json.dumps(tricky).encode())
    wide = {"rows": [[i, i + 1] for i in range(20_000)]}
    assert not too_deep(wide, json.dumps(wide).encode())
    deep_in_wide = {"rows": [[i] for i in range(2000)] + [nested(limit + 5)]}
    assert too_deep(deep_in_wide, json.dumps(deep_in_wide).encode())


def test_classify_depth_and_model_codes() -> None:
    """Deep JSON is bad_response (not retried); a model failure's code is kept only when it is a number."""
    accepted = json.dumps({"data": {"ndarray": nested(MAX_ANSWER_DEPTH - 2)}}).encode()
    assert classify(200, accepted)["data"]
    for depth in (MAX_ANSWER_DEPTH + 1, 990, 100_000):
        with pytest.raises(RequestFailed) as caught:
            classify(200, b'{"a":' + b"[" * depth + b"]" * depth + b"}")
        assert (caught.value.kind, caught.value.retryable) == ("bad_response", False)
    for model_code, expected in ((503, 503), ("x", 200), ([1], 200), (None, 200), (True, 200)):
        body = json.dumps({"status": {"status": "FAILURE", "code": model_code}}).encode()
        with pytest.raises(RequestFailed) as caught:
            classify(200, body)
        assert (caught.value.kind, caught.value.code) == ("model_failure", expected)


def test_model_failure_reads_the_same_over_rest_and_grpc() -> None:
    """The fixed disagreement: a FAILURE status gave REST the reason "model reported failure: <body>"
    and gRPC the status's own reason. Both now go through the codec side's one check: the status's
    reason, else its info; its code, else the HTTP status (REST) or none (gRPC)."""
    from seldon_batch_tx.protocols.seldon_pb import answer_to_dict

    status = {"code": 500, "info": "model exploded", "reason": "MICROSERVICE_INTERNAL_ERROR", "status": "FAILURE"}
    message = prediction_pb2.SeldonMessage(status=prediction_pb2.Status(
        code=500, info="model exploded", reason="MICROSERVICE_INTERNAL_ERROR", status=prediction_pb2.Status.FAILURE))
    for kept in (status, {"info": "teapot", "status": "FAILURE"}, {"status": "FAILURE"}):
        with pytest.raises(RequestFailed) as rest:
            classify(200, json.dumps({"status": kept}).encode())
        if kept is status:
            with pytest.raises(RequestFailed) as grpc_:
                answer_to_dict(message)
            assert (grpc_.value.kind, grpc_.value.code, grpc_.value.reason) == ("model_failure", 500,
                                                                                 "MICROSERVICE_INTERNAL_ERROR")
        expected = kept.get("reason") or kept.get("info") or "the model answered with status FAILURE"
        assert (rest.value.kind, rest.value.code, rest.value.reason) == ("model_failure", kept.get("code", 200),
                                                                         expected)


def test_grpc_builders_never_raise_recursion_error() -> None:
    """Every gRPC request builder answers a deep body with ValueError (an input_error), never a
    RecursionError or a message a server could not decode."""
    deep = nested(100_000)
    for body in ({"jsonData": deep}, {"data": {"ndarray": deep}}, {"data": {"ndarray": nested(50)}},
                 {"strData": "x", "meta": {"tags": {"t": deep}}}):
        with pytest.raises(ValueError, match="too deep|nested too deeply"):
            message_from_dict(body)
    with pytest.raises(ValueError):
        feedback_from_dict({"request": {"jsonData": deep}, "reward": 1.0})
    v2 = {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [1]}], "parameters": {"p": deep}}
    with pytest.raises(ValueError, match="nested too deeply"):
        request_from_dict(v2, "m")
    # the deepest ndarray protobuf decodes still goes through, and decodes
    shallow = message_from_dict({"data": {"ndarray": nested(49)}})
    assert prediction_pb2.SeldonMessage.FromString(shallow.SerializeToString()) == shallow


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(("details", "kind", "retryable"), [
    ("CLIENT: Received message larger than max (5003 vs. 1000)", "response_too_large", False),
    ("Received message larger than max (5003 vs. 1000)", "response_too_large", False),  # older grpc wording
    ("SERVER: Received message larger than max (5000005 vs. 1000)", "grpc_RESOURCE_EXHAUSTED", False),
    ("Received message larger than max (5003 vs. 4194304)", "grpc_RESOURCE_EXHAUSTED", False),
    ("CLIENT: Sent message larger than max (5003 vs. 1000)", "input_too_large", False),
    ("quota exceeded, slow down", "grpc_RESOURCE_EXHAUSTED", True),
])
def test_grpc_size_limits_are_told_apart(details: str, kind: str, retryable: bool) -> None:
    """RESOURCE_EXHAUSTED for our receive limit is response_too_large; for a size limit elsewhere it
    is not retried (the same message would be refused again); a server shedding load is retried."""
    from seldon_batch_tx.transports.grpc_channel import rpc_failure

    error = rpc_failure(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, details), 1000)
    assert (error.kind, error.retryable) == (kind, retryable)


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1E+400", b"2e0308",
                                    b"1" + b"0" * 309 + b".5"])
def test_classify_refuses_non_finite_numbers(number: bytes) -> None:
    """NaN, the infinities and numbers beyond a double (which decode to infinity) are bad_response:
    no output line could carry them as strict JSON."""
    with pytest.raises(RequestFailed) as caught:
        classify(200, b'{"data": {"ndarray": [[1.5, ' + number + b']]}}')
    assert (caught.value.kind, caught.value.retryable, caught.value.code) == ("bad_response", False, 200)
    assert "NaN or Infinity" in caught.value.reason


@pytest.mark.parametrize(("number", "value"), [(b"1e-999", 0.0), (b"1e300", 1e300), (b"9" * 400, int("9" * 400)),
                                               (b"12345678901234567890.5e-5", 123456789012345.67890)])
def test_classify_keeps_finite_numbers(number: bytes, value: Any) -> None:
    """Tiny, large-but-finite and long integer numbers pass; so do strings that look like exponents."""
    answer = classify(200, b'{"data": {"ndarray": [[' + number + b']]}, "note": "e999 NaN 1e400"}')
    assert answer["data"]["ndarray"] == [[value]] and answer["note"] == "e999 NaN 1e400"


def test_grpc_conversions_refuse_non_finite_numbers() -> None:
    """Every place a gRPC answer carries a JSON number refuses NaN/infinity when asked (the transport
    asks); left alone, they survive as before."""
    from google.protobuf import json_format

    from seldon_batch_tx.protocols.seldon_pb import NonFiniteNumber, message_to_dict
    from seldon_batch_tx.protocols.v2_pb import response_to_dict as v2_response_to_dict
    from seldon_batch_tx.protos import grpc_service_pb2

    nan = float("nan")
    messages = []
    for body in ({"data": {"ndarray": [[1.5, 2.0]]}}, {"data": {"tensor": {"shape": [2], "values": [1.0, 2.0]}}},
                 {"jsonData": {"a": [1.0, 2.0]}}, {"strData": "x", "meta": {"tags": {"t": 2.0}}},
                 {"data": {"ndarray": [[1, {"k": 2.0}]]}}):
        message = prediction_pb2.SeldonMessage()
        json_format.ParseDict(body, message)
        messages.append(message)
    messages[0].data.ndarray.values[0].list_value.values[1].number_value = nan
    messages[1].data.tensor.values[1] = float("inf")
    messages[2].jsonData.struct_value.fields["a"].list_value.values[0].number_value = -float("inf")
    messages[3].meta.tags["t"].number_value = nan
    messages[4].data.ndarray.values[0].list_value.values[1].struct_value.fields["k"].number_value = nan
    for message in messages:
        message_to_dict(message)  # unchanged default
        with pytest.raises(NonFiniteNumber):
            message_to_dict(message, finite=True)
    response = grpc_service_pb2.ModelInferResponse(model_name="m")
    output = response.outputs.add(name="o", datatype="FP32", shape=[2])
    output.contents.fp32_contents.extend([1.0, float("inf")])
    with pytest.raises(RequestFailed, match="NaN or Infinity"):
        v2_response_to_dict(response)
