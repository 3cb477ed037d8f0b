"""The gRPC transport against hostile answers (tests/hostile_server.py) in each of its modes: an
oversized answer, a deep answer, a stall, deep input protobuf cannot carry, a call gRPC never
ends, a non-finite answer, a --ca-cert file without certificates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from seldon_batch_tx.core.failures import RequestFailed
from seldon_batch_tx.transports.grpc_client import GUARD_SLACK, MODES
from tests import transport_hostile_helpers
from tests.hostile_server import HostileServer
from tests.targets import grpc_transport
from tests.transport_hostile_helpers import (
    REQUEST,
    SLACK,
    TIMEOUT,
    config,
    nested,
    one_call,
    outcome,
    reactor,
)

hostile = transport_hostile_helpers.hostile  # a fixture shared with this topic's other files


@pytest.mark.parametrize("mode", MODES)
@pytest_twisted.ensureDeferred
async def test_grpc_oversize_answer(hostile: HostileServer, mode: str) -> None:
    """An 8 MiB answer past --max-response-bytes (gRPC's receive limit follows it) is
    response_too_large, not retried; with a larger limit the same answer arrives."""
    transport = grpc_transport(config(hostile.grpc_host, "oversize_body", transport="grpc"), reactor, mode=mode)
    error, elapsed = await one_call(transport, REQUEST, TIMEOUT + SLACK)
    assert isinstance(error, RequestFailed), error
    assert (error.kind, error.info, error.retryable) == ("response_too_large", "response_too_large", False)
    assert elapsed < TIMEOUT
    roomy = grpc_transport(config(hostile.grpc_host, "oversize_body", transport="grpc", timeout=20.0,
                                 max_response_bytes=16 << 20), reactor, mode=mode)
    answer, _ = await one_call(roomy, REQUEST, 30.0)
    assert isinstance(answer, dict) and len(answer["strData"]) == 8 << 20


@pytest.mark.parametrize("mode", MODES)
@pytest_twisted.ensureDeferred
async def test_grpc_deep_answer_and_stall(hostile: HostileServer, mode: str) -> None:
    """A message too deep for protobuf to read fails the call at once; a stall ends at the deadline."""
    transport = grpc_transport(config(hostile.grpc_host, "deep", transport="grpc"), reactor, mode=mode)
    error, elapsed = await one_call(transport, REQUEST, TIMEOUT + SLACK)
    assert isinstance(error, RequestFailed), error
    assert elapsed < TIMEOUT
    stalled = grpc_transport(config(hostile.grpc_host, "stall", transport="grpc"), reactor, mode=mode)
    error, elapsed = await one_call(stalled, REQUEST, TIMEOUT + SLACK)
    assert isinstance(error, RequestFailed) and error.kind == "grpc_DEADLINE_EXCEEDED" and error.retryable
    assert elapsed > TIMEOUT * 0.8


DEEP_BODIES = {
    "ndarray-600": {"data": {"ndarray": nested(600)}, "meta": {"tags": {"batch_index": 0}}},
    "ndarray-60": {"data": {"ndarray": nested(60)}},
    "jsonData-100000": {"jsonData": nested(100_000)},
    "tags-deep": {"data": {"ndarray": [[1]]}, "meta": {"tags": {"x": nested(5000)}}},
}


@pytest.mark.parametrize("name", sorted(DEEP_BODIES))
@pytest_twisted.ensureDeferred
async def test_grpc_deep_input_is_input_error(hostile: HostileServer, name: str) -> None:
    """A body nested deeper than protobuf carries is that line's input_error; nothing is sent."""
    before = len(hostile.received())
    transport = grpc_transport(config(hostile.grpc_host, "echo", transport="grpc"), reactor)
    error, elapsed = await one_call(transport, DEEP_BODIES[name], 5.0)
    assert isinstance(error, RequestFailed), error
    assert (error.kind, error.info, error.retryable) == ("input_error", "input_error", False)
    assert len(hostile.received()) == before


@pytest_twisted.ensureDeferred
async def test_grpc_guard_fails_a_call_grpc_never_ends() -> None:
    """Should gRPC never end a call (its deadline is the first line of defence), the guard timer
    fails it as a timeout a little after --timeout and cancels it."""
    clock = Clock()
    transport = grpc_transport(config("127.0.0.1:1", "x", transport="grpc", timeout=2.0), clock)
    cancelled: list[bool] = []
    inner: Deferred[Any] = Deferred(lambda _: cancelled.append(True))
    d = transport._guarded(inner)
    clock.advance(2.0 + GUARD_SLACK - 0.01)
    assert not d.called
    clock.advance(0.02)
    error, _ = await outcome(d, 1.0)
    assert isinstance(error, RequestFailed) and (error.kind, error.retryable) == ("timeout", True)
    assert cancelled == [True]
    assert not clock.getDelayedCalls()
    # an answer in time cancels the guard
    inner = Deferred()
    d = transport._guarded(inner)
    inner.callback({"ok": 1})
    assert (await outcome(d, 1.0))[0] == {"ok": 1}
    assert not clock.getDelayedCalls()


def test_grpc_refuses_a_ca_cert_without_certificates(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN NOTHING-----\n")
    transport = grpc_transport(config("127.0.0.1:1", "x", transport="grpc", use_ssl=True, ca_cert=str(garbage)),
                              reactor)
    with pytest.raises(ValueError, match="--ca-cert"):
        transport.start()


@pytest.mark.parametrize("mode", MODES)
@pytest_twisted.ensureDeferred
async def test_grpc_non_finite_answer(hostile: HostileServer, mode: str) -> None:
    """An infinity in a gRPC answer is bad_response, as over REST."""
    transport = grpc_transport(config(hostile.grpc_host, "huge_float", transport="grpc"), reactor, mode=mode)
    error, _ = await one_call(transport, REQUEST, TIMEOUT + SLACK)
    assert isinstance(error, RequestFailed) and (error.kind, error.retryable) == ("bad_response", False), error
