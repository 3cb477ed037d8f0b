"""Every REST client against hostile answers: each call ends within --timeout with the right kind,
answers stay within --max-response-bytes, and stop() leaves no connection open.

The server is tests/hostile_server.py, a real server in its own process with one mode per hostile
answer of issue 11 (deep JSON, an 8 GiB Content-Length, an endless chunked body, headers that
never end, a body trickled a byte at a time...). Both REST clients (``fast`` and ``treq``) meet
every REST mode. Leaks are checked from the kernel's side: after ``stop()`` no socket of this
process is connected to the server any more (/proc/net/tcp). gRPC: test_grpc_hostile.py; exact
bytes: test_transport_scripted.py; TLS bundles: test_ca_bundles.py; limits: test_answer_limits.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from seldon_batch_tx.core.failures import RequestFailed
from seldon_batch_tx.pipeline.batch import Batch
from seldon_batch_tx.transports.base import MAX_HEADER_BYTES
from tests import transport_hostile_helpers
from tests.hostile_server import HostileServer
from tests.transport_hostile_helpers import (
    LIMIT,
    REQUEST,
    SLACK,
    TIMEOUT,
    config,
    make,
    nested,
    no_connections_to,
    one_call,
    outcome,
    reactor,
    stop_within,
)

client = transport_hostile_helpers.client  # a fixture shared with this topic's other files
hostile = transport_hostile_helpers.hostile  # a fixture shared with this topic's other files


#: mode -> (kind, retryable, whether it must fail before the timeout rather than at it)
REST_CASES: dict[str, tuple[str, bool, bool]] = {
    "deep": ("bad_response", False, True),
    "oversize_length": ("response_too_large", False, True),
    "oversize_chunked": ("response_too_large", False, True),
    "oversize_body": ("response_too_large", False, True),
    "flood_headers": ("response_too_large", False, True),
    "trickle": ("timeout", True, False),
    "trickle_headers": ("timeout", True, False),
    "stall": ("timeout", True, False),
    "not_json": ("bad_response", True, True),
    "non_utf8": ("bad_response", True, True),
    "not_object": ("bad_response", True, True),
    "huge_int": ("bad_response", True, True),
    "status_204": ("bad_response", True, True),
    "truncated": ("connection", True, True),
    "reset": ("connection", True, True),
    "close": ("connection", True, True),
    "status_418": ("http_418", False, True),
    "failure": ("model_failure", False, True),
}


@pytest.mark.parametrize("mode", sorted(REST_CASES))
@pytest_twisted.ensureDeferred
async def test_rest_hostile_answer(client: str, hostile: HostileServer, mode: str) -> None:
    """Each hostile answer ends the call with its kind within --timeout (before it, when the answer
    itself says enough), and stop() leaves no connection to the server open."""
    kind, retryable, early = REST_CASES[mode]
    transport = make(client, config(hostile.rest_host, mode))
    error, elapsed = await one_call(transport, REQUEST, TIMEOUT + SLACK)
    assert isinstance(error, RequestFailed), error
    assert (error.kind, error.info, error.retryable) == (kind, kind, retryable), error.reason
    if early:
        assert elapsed < TIMEOUT, f"{mode} took {elapsed:.2f} s: it waited for the timeout"
    else:
        assert elapsed > TIMEOUT * 0.8
    if kind == "response_too_large":
        assert error.reason in (f"answer larger than --max-response-bytes {LIMIT}",
                                f"answer headers larger than {MAX_HEADER_BYTES} bytes")
    if mode == "deep":
        assert error.reason == "answer nested too deeply"
    await no_connections_to(hostile.port)


@pytest_twisted.ensureDeferred
async def test_rest_garbage_is_not_http(client: str, hostile: HostileServer) -> None:
    """Bytes that are not HTTP fail the call at once, retryable (a proxy hiccup), never hang it."""
    transport = make(client, config(hostile.rest_host, "garbage"))
    error, elapsed = await one_call(transport, REQUEST, TIMEOUT + SLACK)
    assert isinstance(error, RequestFailed) and error.kind in ("bad_response", "connection") and error.retryable
    assert elapsed < TIMEOUT
    await no_connections_to(hostile.port)


@pytest_twisted.ensureDeferred
async def test_rest_limit_follows_the_option(client: str, hostile: HostileServer) -> None:
    """The same 8 MiB answer is accepted once --max-response-bytes allows it, on a kept connection."""
    transport = make(client, config(hostile.rest_host, "oversize_body", max_response_bytes=16 << 20, timeout=20.0))
    transport.start()
    try:
        for _ in range(2):
            answer, _ = await outcome(transport.send(REQUEST, "p"), 30.0)
            assert isinstance(answer, dict) and len(answer["strData"]) > 8_000_000
    finally:
        await stop_within(transport)
    await no_connections_to(hostile.port)


@pytest_twisted.ensureDeferred
async def test_rest_calls_in_a_row_after_hostile_answers(client: str, hostile: HostileServer) -> None:
    """Hostile answers one after another on one transport: each call ends, and a good answer after
    them still succeeds (no connection left in a bad state is reused)."""
    transport = make(client, config(hostile.rest_host, "echo"))
    transport.start()
    try:
        for mode in ("deep", "oversize_chunked", "flood_headers", "truncated", "echo"):
            other = make(client, config(hostile.rest_host, mode))
            result, _ = await one_call(other, REQUEST, TIMEOUT + SLACK)
            assert isinstance(result, RequestFailed) == (mode != "echo")
            answer, _ = await outcome(transport.send(REQUEST, "p"), TIMEOUT + SLACK)
            assert isinstance(answer, dict) and answer["data"]["ndarray"] == [[1, 2, 3]]
    finally:
        await stop_within(transport)
    await no_connections_to(hostile.port)


@pytest.mark.parametrize("mode", ["deep", "oversize_chunked", "flood_headers"])
@pytest_twisted.ensureDeferred
async def test_whole_batch_against_hostile_answers(client: str, hostile: HostileServer, tmp_path: Path,
                                                   mode: str) -> None:
    """Issue 11 item 2 end to end: a batch whose every answer is hostile ends promptly with one error
    line per input line (it used to never end with the fast client on deep JSON)."""
    lines = 6
    source = tmp_path / "in.txt"
    source.write_text("".join(f"[[{i}]]\n" for i in range(lines)))
    cfg = config(hostile.rest_host, mode, workers=3, input_data_path=str(source),
                 output_data_path=str(tmp_path / "out.txt"), retries=0)
    batch = Batch(cfg, reactor, transport=make(client, cfg))
    summary, elapsed = await outcome(Deferred.fromCoroutine(batch.run()), 4 * TIMEOUT + SLACK)
    assert not isinstance(summary, BaseException), summary
    out = [json.loads(line) for line in (tmp_path / "out.txt").read_text().splitlines()]
    assert sorted(o["meta"]["tags"]["batch_index"] for o in out) == list(range(lines))
    kind = REST_CASES[mode][0]
    assert {o["status"]["info"] for o in out} == {kind}
    assert summary.failed == lines
    assert elapsed < 2 * TIMEOUT
    await no_connections_to(hostile.port)


@pytest_twisted.ensureDeferred
async def test_unencodable_request_is_input_error(client: str) -> None:
    """A body too deep to encode never reaches the network: that line's input_error."""
    transport = make(client, config("127.0.0.1:1", "x"))
    error, _ = await one_call(transport, {"jsonData": nested(100_000)}, 2.0)
    assert isinstance(error, RequestFailed) and (error.kind, error.retryable) == ("input_error", False)
