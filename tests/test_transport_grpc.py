"""GrpcTransport against the real Seldon microservice.

The real seldon-core 1.18.2 microservice (tests/servers.py) proves the wire format and every
data type. Small in-test gRPC servers on 127.0.0.1 prove metadata, deadlines and the mapping of
gRPC status codes, which the real server cannot be made to produce on demand
(test_grpc_loopback.py); TLS is in test_grpc_tls.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from seldon_batch_tx.core.failures import RequestFailed
from seldon_batch_tx.transports.grpc_client import MODES
from tests.grpc_transport_helpers import failure_of, make_config, send_once, the_reactor
from tests.loopback import free_port
from tests.servers import SeldonServer, tftensor_request
from tests.targets import grpc_transport

TAGS = {"batch_id": "b-1", "batch_instance_id": "i-1", "batch_index": 3}


REAL_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "ndarray-ints",
        {"data": {"names": ["a", "b"], "ndarray": [[1, 2], [3, 4]]}, "meta": {"tags": TAGS}},
        {"data": {"names": ["t:0", "t:1"], "ndarray": [[1, 2], [3, 4]]}, "meta": {"tags": TAGS}},
    ),
    (
        "ndarray-floats",
        {"data": {"ndarray": [[1.5, 2]]}, "meta": {"tags": TAGS}},
        {"data": {"names": ["t:0", "t:1"], "ndarray": [[1.5, 2.0]]}, "meta": {"tags": TAGS}},
    ),
    (
        "tensor",
        {"data": {"tensor": {"shape": [1, 3], "values": [1, 2, 3]}}, "meta": {"tags": TAGS}},
        {
            "data": {"names": ["t:0", "t:1", "t:2"], "tensor": {"shape": [1, 3], "values": [1.0, 2.0, 3.0]}},
            "meta": {"tags": TAGS},
        },
    ),
    ("strData", {"strData": "some text", "meta": {"tags": TAGS}}, {"strData": "some text", "meta": {"tags": TAGS}}),
    (
        "jsonData",
        {"jsonData": {"a": 1, "b": [2.5, None, True, "x"]}, "meta": {"tags": TAGS}},
        {"jsonData": {"a": 1, "b": [2.5, None, True, "x"]}, "meta": {"tags": TAGS}},
    ),
    ("binData", {"binData": "aGVsbG8=", "meta": {"tags": TAGS}}, {"binData": "aGVsbG8=", "meta": {"tags": TAGS}}),
    (
        "raw-custom-tags",
        {"data": {"names": ["a"], "ndarray": [[1]]}, "meta": {"tags": {**TAGS, "customer-id": 7, "score": 0.5}}},
        {"data": {"names": ["t:0"], "ndarray": [[1]]}, "meta": {"tags": {**TAGS, "customer-id": 7, "score": 0.5}}},
    ),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("case", "body", "expected"), REAL_CASES, ids=[c[0] for c in REAL_CASES])
@pytest_twisted.ensureDeferred
async def test_real_server_echoes_every_data_type(
    seldon_server: SeldonServer, mode: str, case: str, body: dict[str, Any], expected: dict[str, Any]
) -> None:
    """The real microservice answers each data type; ints in ndarray and tags come back as ints."""
    response = await send_once(make_config(seldon_server.grpc_host), body, mode=mode)
    assert response == expected
    assert type(response["meta"]["tags"]["batch_index"]) is int


@pytest.mark.parametrize("service", ["Seldon", "Model"])
@pytest_twisted.ensureDeferred
async def test_real_server_serves_both_services(seldon_server: SeldonServer, service: str) -> None:
    """The Python microservice answers on seldon.protos.Seldon and seldon.protos.Model alike."""
    body = {"data": {"ndarray": [[1, 2]]}, "meta": {"tags": TAGS}}
    response = await send_once(make_config(seldon_server.grpc_host), body, service=service)
    assert response["data"]["ndarray"] == [[1, 2]]


@pytest.mark.parametrize("mode", MODES)
@pytest_twisted.ensureDeferred
async def test_real_server_feedback(seldon_server: SeldonServer, mode: str) -> None:
    """method=feedback calls SendFeedback; EchoModel answers with the reward it received."""
    config = make_config(seldon_server.grpc_host, method="feedback")
    body = {
        "request": {"data": {"ndarray": [[1, 2]]}, "meta": {"tags": TAGS}},
        "response": {"data": {"ndarray": [[3]]}},
        "reward": 0.5,
        "truth": {"data": {"ndarray": [[3]]}},
    }
    response = await send_once(config, body, mode=mode)
    assert response == {"data": {"ndarray": [0.5]}, "meta": {}}


@pytest_twisted.ensureDeferred
async def test_real_server_model_error_is_grpc_unknown(seldon_server: SeldonServer) -> None:
    """A model exception (shape mismatch) arrives as gRPC UNKNOWN: code 2, not retryable."""
    body = {"data": {"tensor": {"shape": [2, 3], "values": [1, 2, 3]}}}
    exc = await failure_of(Deferred.fromCoroutine(send_once(make_config(seldon_server.grpc_host), body)))
    assert isinstance(exc, RequestFailed)
    assert (exc.kind, exc.code, exc.retryable, exc.info) == ("grpc_UNKNOWN", 2, False, "UNKNOWN")
    assert exc.reason.startswith("gRPC UNKNOWN: Exception calling application:")


@pytest_twisted.ensureDeferred
async def test_real_server_without_tensorflow_rejects_tftensor(seldon_server: SeldonServer) -> None:
    """Without TensorFlow the real server cannot read a tftensor: an UNKNOWN error, not a hang."""
    body = {"data": {"tftensor": {"dtype": "DT_DOUBLE", "tensorShape": {"dim": [{"size": "1"}]}, "doubleVal": [1]}}}
    exc = await failure_of(Deferred.fromCoroutine(send_once(make_config(seldon_server.grpc_host), body)))
    assert isinstance(exc, RequestFailed) and exc.kind == "grpc_UNKNOWN"


@pytest.fixture(scope="module")
def tftensor_server() -> Iterator[SeldonServer]:
    """The real microservice with the launcher's numpy stand-in for TensorFlow."""
    with SeldonServer("EchoModel", tftensor_shim=True) as server:
        yield server


@pytest.mark.parametrize("mode", MODES)
@pytest_twisted.ensureDeferred
async def test_real_server_tftensor(tftensor_server: SeldonServer, mode: str) -> None:
    """A tftensor request is read by the server; the answer keeps dtype and shape (packed content)."""
    body = tftensor_request(TAGS)
    response = await send_once(make_config(tftensor_server.grpc_host), body, mode=mode)
    tensor = response["data"]["tftensor"]
    assert tensor["dtype"] == "DT_DOUBLE"
    assert tensor["tensorShape"] == {"dim": [{"size": "1"}, {"size": "3"}]}
    # 1.0, 2.0, 3.0 as little-endian float64, as TensorFlow packs more than one value
    assert tensor["tensorContent"] == "AAAAAAAA8D8AAAAAAAAAQAAAAAAAAAhA"
    assert response["meta"]["tags"] == TAGS


@pytest.mark.parametrize("mode", MODES)
@pytest_twisted.ensureDeferred
async def test_concurrent_calls_share_one_transport(seldon_server: SeldonServer, mode: str) -> None:
    """Many calls in flight at once on one transport all get their own answer."""
    transport = grpc_transport(make_config(seldon_server.grpc_host, workers=8), the_reactor(), mode=mode)
    transport.start()
    try:
        ds = [
            transport.send({"data": {"ndarray": [[i]]}, "meta": {"tags": {"batch_index": i}}}, f"p{i}")
            for i in range(40)
        ]
        responses = [await d for d in ds]
    finally:
        await transport.stop()
    assert [r["data"]["ndarray"] for r in responses] == [[[i]] for i in range(40)]
    assert [r["meta"]["tags"]["batch_index"] for r in responses] == list(range(40))


@pytest.mark.parametrize("mode", MODES)
@pytest_twisted.ensureDeferred
async def test_server_down_is_retryable_unavailable(mode: str) -> None:
    """Nothing listening: UNAVAILABLE, retryable (the engine retries later)."""
    config = make_config(f"127.0.0.1:{free_port()}", timeout=5.0)
    exc = await failure_of(Deferred.fromCoroutine(send_once(config, {"strData": "x"}, mode=mode)))
    assert isinstance(exc, RequestFailed)
    assert (exc.kind, exc.code, exc.retryable) == ("grpc_UNAVAILABLE", 14, True)
