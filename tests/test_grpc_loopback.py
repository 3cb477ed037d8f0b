"""GrpcTransport against a loopback gRPC server (127.0.0.1) that records what it receives: metadata,
the spread over channels, deadlines that never block the reactor, status code mapping, stop and
cancel.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from seldon_batch_tx.core.failures import RequestFailed
from seldon_batch_tx.transports.grpc_client import MODES, GrpcTransport
from tests.grpc_transport_helpers import LoopbackServer, deferLater, failure_of, make_config, send_once, the_reactor
from tests.targets import grpc_transport, target_of


@pytest.fixture
def loopback() -> Iterator[LoopbackServer]:
    server = LoopbackServer()
    yield server
    server.stop()


@pytest_twisted.ensureDeferred
async def test_gateway_metadata(loopback: LoopbackServer) -> None:
    """Through istio/ambassador each call carries seldon, namespace, seldon-puid and the token."""
    for gateway in ("istio", "ambassador"):
        config = make_config(loopback.host, gateway_type=gateway, call_credentials_token="s3cret")
        await send_once(config, {"strData": "hi"})
    for seen in loopback.recorder.metadata:
        assert seen["seldon"] == "mymodel"
        assert seen["namespace"] == "models"
        assert seen["seldon-puid"] == "puid-1"
        assert seen["x-auth-token"] == "s3cret"


@pytest_twisted.ensureDeferred
async def test_direct_metadata_has_only_puid(loopback: LoopbackServer) -> None:
    """With gateway seldon (the service itself) only seldon-puid is sent: no routing headers, no token."""
    await send_once(make_config(loopback.host, gateway_type="seldon"), {"strData": "hi"}, mode="threads")
    (seen,) = loopback.recorder.metadata
    assert seen["seldon-puid"] == "puid-1"
    assert "seldon" not in seen and "namespace" not in seen and "x-auth-token" not in seen


@pytest_twisted.ensureDeferred
async def test_feedback_metadata(loopback: LoopbackServer) -> None:
    """SendFeedback carries the same metadata as Predict."""
    config = make_config(loopback.host, gateway_type="istio", method="feedback")
    response = await send_once(config, {"request": {"strData": "x"}, "reward": 1.0})
    assert response == {"strData": "feedback received"}
    assert loopback.recorder.metadata[0]["seldon"] == "mymodel"


@pytest.mark.parametrize(("mode", "channels", "expected"), [(m, None, 16) for m in MODES] + [("aio", 3, 3)])
@pytest_twisted.ensureDeferred
async def test_calls_spread_over_the_channels(loopback: LoopbackServer, mode: str, channels: int | None,
                                              expected: int) -> None:
    """Calls go over ``--grpc-channels`` connections (default: twice the workers, at least 8), each
    its own: the server sees that many client peers (grpcio's global subchannel pool would merge them)."""
    config = make_config(loopback.host, workers=8, grpc_channels=channels, connection_max_age=None)
    transport = GrpcTransport(config, the_reactor(), mode=mode, target=target_of(config))
    transport.start()
    try:
        ds = [transport.send({"strData": f"n{i}"}, f"p{i}") for i in range(60)]
        for d in ds:
            await d
    finally:
        await transport.stop()
    assert len(loopback.recorder.peers) == expected


@pytest.mark.parametrize("mode", MODES)
@pytest_twisted.ensureDeferred
async def test_deadline_exceeded_without_blocking_the_reactor(loopback: LoopbackServer, mode: str) -> None:
    """A stalled server hits the deadline (config.timeout): DEADLINE_EXCEEDED, retryable;
    meanwhile the reactor keeps running."""
    reactor = the_reactor()
    ticks: list[float] = []
    start = time.monotonic()
    ticker = reactor.callLater(0.05, lambda: ticks.append(time.monotonic() - start))
    config = make_config(loopback.host, timeout=0.5)
    exc = await failure_of(Deferred.fromCoroutine(send_once(config, {"strData": "stall:5"}, mode=mode)))
    elapsed = time.monotonic() - start
    assert isinstance(exc, RequestFailed)
    assert (exc.kind, exc.code, exc.retryable, exc.info) == ("grpc_DEADLINE_EXCEEDED", 4, True, "DEADLINE_EXCEEDED")
    assert 0.4 < elapsed < 3
    assert ticks and ticks[0] < 0.4, "the reactor was blocked during the call"
    assert not ticker.active()


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        (grpc.StatusCode.UNAVAILABLE, True),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, True),
        (grpc.StatusCode.INVALID_ARGUMENT, False),
        (grpc.StatusCode.NOT_FOUND, False),
        (grpc.StatusCode.UNAUTHENTICATED, False),
        (grpc.StatusCode.INTERNAL, False),
    ],
)
@pytest_twisted.ensureDeferred
async def test_status_code_mapping(loopback: LoopbackServer, code: grpc.StatusCode, retryable: bool) -> None:
    """Each gRPC status becomes RequestFailed(kind grpc_<NAME>, numeric code, retryable as documented)."""
    body = {"strData": f"abort:{code.name}"}
    exc = await failure_of(Deferred.fromCoroutine(send_once(make_config(loopback.host), body)))
    assert isinstance(exc, RequestFailed)
    assert exc.kind == f"grpc_{code.name}"
    assert exc.code == code.value[0]
    assert exc.retryable is retryable
    assert exc.info == code.name
    assert exc.reason == f"gRPC {code.name}: told to fail"


@pytest_twisted.ensureDeferred
async def test_failure_status_is_model_failure(loopback: LoopbackServer) -> None:
    """A SeldonMessage with status FAILURE fails the request with its code, info and reason."""
    exc = await failure_of(Deferred.fromCoroutine(send_once(make_config(loopback.host), {"strData": "failure"})))
    assert isinstance(exc, RequestFailed)
    assert (exc.kind, exc.code, exc.retryable) == ("model_failure", 500, False)
    assert (exc.info, exc.reason) == ("model exploded", "MICROSERVICE_INTERNAL_ERROR")


@pytest_twisted.ensureDeferred
async def test_malformed_body_is_a_non_retryable_input_error(loopback: LoopbackServer) -> None:
    """A body gRPC cannot encode never reaches the server; it fails as that line's input error."""
    exc = await failure_of(Deferred.fromCoroutine(send_once(make_config(loopback.host), {"data": {"ndarry": [[1]]}})))
    assert isinstance(exc, RequestFailed) and "ndarry" in exc.reason
    assert (exc.kind, exc.retryable) == ("input_error", False)
    assert loopback.recorder.metadata == []


@pytest.mark.parametrize("mode", MODES)
@pytest_twisted.ensureDeferred
async def test_stop_cancels_calls_in_flight(loopback: LoopbackServer, mode: str) -> None:
    """stop() closes the channel: a call in flight fails (CANCELLED, not retried) and stop() fires."""
    transport = grpc_transport(make_config(loopback.host, timeout=10.0), the_reactor(), mode=mode)
    transport.start()
    d = transport.send({"strData": "stall:5"}, "p")
    while not loopback.recorder.metadata:  # wait until the call reached the server
        await deferLater(0.02)
    start = time.monotonic()
    await transport.stop()
    exc = await failure_of(d)
    assert time.monotonic() - start < 3
    assert isinstance(exc, RequestFailed) and exc.kind == "grpc_CANCELLED" and not exc.retryable


@pytest_twisted.ensureDeferred
async def test_cancelling_the_deferred_cancels_the_call(loopback: LoopbackServer) -> None:
    """In futures mode, cancelling the Deferred cancels the gRPC call at once."""
    from twisted.internet.defer import CancelledError

    transport = grpc_transport(make_config(loopback.host), the_reactor())
    transport.start()
    try:
        d = transport.send({"strData": "stall:5"}, "p")
        while not loopback.recorder.metadata:
            await deferLater(0.02)
        d.cancel()
        exc = await failure_of(d)
        assert isinstance(exc, CancelledError)
        # the transport still works afterwards
        assert await transport.send({"strData": "again"}, "p") == {"strData": "again"}
    finally:
        await transport.stop()
