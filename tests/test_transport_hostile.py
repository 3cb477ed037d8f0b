"""Every transport against hostile answers: each call ends within --timeout with the right kind,
answers stay within --max-response-bytes, and stop() leaves no connection open.

The server is tests/hostile_server.py, a real server in its own process with one mode per hostile
answer of issue 11 (deep JSON, an 8 GiB Content-Length, an endless chunked body, headers that
never end, a body trickled a byte at a time...). Both REST clients (``fast`` and ``treq``) meet
every REST mode; the gRPC transport meets an oversized answer, a deep answer and a stall in each
of its modes, and bodies protobuf cannot carry. Leaks are checked from the kernel's side: after
``stop()`` no socket of this process is connected to the server any more (/proc/net/tcp).
A few cases need exact control of the bytes or of the code and use small in-test servers.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor as _reactor
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.web.resource import Resource
from twisted.web.server import Site

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.pipeline.batch import Batch
from seldon_batch_tx.protocols.seldon_pb import feedback_from_dict, message_from_dict
from seldon_batch_tx.protocols.v2_pb import request_from_dict
from seldon_batch_tx.protos import prediction_pb2, prediction_pb2_grpc
from seldon_batch_tx.strict_json import MAX_ANSWER_DEPTH
from seldon_batch_tx.strict_json import too_deep as text_too_deep
from seldon_batch_tx.transports import fast_connection as transport_http
from seldon_batch_tx.transports import treq_client as transport_rest
from seldon_batch_tx.transports.base import MAX_HEADER_BYTES, RequestFailed, Transport
from seldon_batch_tx.transports.fast import FastHttpTransport
from seldon_batch_tx.transports.grpc_client import GUARD_SLACK, MODES, GrpcTransport
from seldon_batch_tx.transports.http import ca_bundle, classify
from seldon_batch_tx.transports.treq_client import RestTransport
from tests.hostile_server import HostileServer

reactor: Any = _reactor
CLIENTS = ("fast", "treq")
TIMEOUT = 1.5
LIMIT = 1 << 20  # --max-response-bytes for these tests: the 8 MiB answers are past it
SLACK = 1.5  # seconds a call may take past its deadline on a loaded 2-core machine
REQUEST = {"data": {"ndarray": [[1, 2, 3]]}, "meta": {"tags": {"batch_id": "b", "batch_index": 0}}}


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def too_deep(value: Any, body: bytes) -> bool:
    """Whether an answer (``body``, decoding to ``value``) is past the answers' depth limit."""
    return text_too_deep(body, MAX_ANSWER_DEPTH)


def config(host: str, mode: str, **changes: Any) -> BatchConfig:
    """Istio-style routing: the deployment name is the hostile server's mode (path or gRPC metadata)."""
    values: dict[str, Any] = dict(deployment_name=mode, input_data_path="-", output_data_path="-",
                                  gateway_type="istio", namespace="ns", host=host, workers=2, timeout=TIMEOUT,
                                  max_response_bytes=LIMIT)
    values.update(changes)
    return BatchConfig(**values)


def make(client: str, cfg: BatchConfig) -> Transport:
    return FastHttpTransport(cfg, reactor) if client == "fast" else RestTransport(cfg, reactor)


async def outcome(d: Deferred[Any], bound: float) -> tuple[Any, float]:
    """What ``d`` fires with (a result or the exception) and after how long; fails past ``bound`` s."""
    started = time.monotonic()
    fired: list[Any] = []
    d.addBoth(fired.append)
    while not fired:
        if time.monotonic() - started > bound:
            raise AssertionError(f"the call did not end within {bound} s")
        await deferLater(reactor, 0.01)
    result = fired[0]
    value = result.value if hasattr(result, "value") and hasattr(result, "getTraceback") else result
    return value, time.monotonic() - started


async def stop_within(transport: Any, bound: float = 5.0) -> None:
    """stop() must complete, and promptly."""
    await outcome(transport.stop(), bound)


async def one_call(transport: Any, body: Any, bound: float, *, puid: str = "p") -> tuple[Any, float]:
    """Start ``transport``, send ``body`` once (ending within ``bound`` s), then stop it promptly."""
    transport.start()
    try:
        return await outcome(transport.send(body, puid), bound)
    finally:
        await stop_within(transport)


def connections_to(port: int) -> int:
    """Sockets of this process connected to 127.0.0.1:``port``, as the kernel sees them."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    wanted = f"0100007F:{port:04X}"
    count = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for row in table:
            fields = row.split()
            if fields[2] == wanted and fields[9] in inodes:
                count += 1
    return count


async def no_connections_to(port: int, bound: float = 5.0) -> None:
    deadline = time.monotonic() + bound
    while connections_to(port):
        if time.monotonic() > deadline:
            raise AssertionError(f"{connections_to(port)} connection(s) to port {port} still open after stop()")
        await deferLater(reactor, 0.02)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileServer]:
    log = tmp_path_factory.mktemp("hostile") / "requests.jsonl"
    with HostileServer(log, grpc=True, stall_seconds=30) as server:
        yield server


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- both REST clients against every hostile answer ----------------------------------------------

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


# -- exact bytes: small servers in the test's reactor ---------------------------------------------


class Scripted(Protocol):
    """Answers each request (read up to its blank line; the test's requests have small bodies) with
    ``factory.answer`` bytes, optionally followed by closing the connection."""

    def connectionMade(self) -> None:
        self.factory.made += 1  # type: ignore[attr-defined]
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        head, sep, rest = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            return
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        if len(rest) < length:
            return
        self.buffer = rest[length:]
        self.transport.write(self.factory.answer)  # type: ignore[attr-defined, union-attr]
        if self.factory.close:  # type: ignore[attr-defined]
            self.transport.loseConnection()  # type: ignore[union-attr]


def scripted_server(answer: bytes, close: bool = False) -> tuple[Any, Any]:
    factory = Factory.forProtocol(Scripted)
    factory.noisy = False
    factory.answer, factory.close, factory.made = answer, close, 0  # type: ignore[attr-defined]
    return reactor.listenTCP(0, factory, interface="127.0.0.1"), factory


def http_answer(body: bytes, *headers: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\n" + b"".join(h + b"\r\n" for h in headers) + b"Content-Length: %d\r\n\r\n%b" % (
        len(body), body)


@pytest_twisted.ensureDeferred
async def test_classification_bug_fails_the_call_not_the_run(client: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any exception while handling an answer (here a bug in classify) fails that call with
    internal_error at once, and its connection is dropped, never left unanswered."""
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr(transport_http, "classify", broken)
    monkeypatch.setattr(transport_rest, "classify", broken)
    port, _ = scripted_server(http_answer(b'{"data": {"ndarray": [[1]]}}'))
    number = port.getHost().port
    transport = make(client, config(f"127.0.0.1:{number}", "x", timeout=10.0))
    try:
        error, elapsed = await one_call(transport, REQUEST, 5.0)
    finally:
        await port.stopListening()
    assert isinstance(error, RequestFailed)
    assert (error.kind, error.info, error.retryable) == ("internal_error", "internal_error", False)
    assert error.reason == "KeyError: 'a bug'"
    assert elapsed < 5.0
    await no_connections_to(number)


@pytest.mark.parametrize("depth", [MAX_ANSWER_DEPTH + 10, 5_000, 100_000])
@pytest_twisted.ensureDeferred
async def test_deep_answer_at_several_depths(client: str, depth: int) -> None:
    """Past the depth limit, past Python's recursion limit, far past it: bad_response every time."""
    body = b'{"data":{"ndarray":' + b"[" * depth + b"1" + b"]" * depth + b"}}"
    port, _ = scripted_server(http_answer(body))
    transport = make(client, config(f"127.0.0.1:{port.getHost().port}", "x", timeout=10.0))
    try:
        error, elapsed = await one_call(transport, REQUEST, 5.0)
    finally:
        await port.stopListening()
    assert isinstance(error, RequestFailed) and (error.kind, error.code) == ("bad_response", 200)
    assert error.reason == "answer nested too deeply"


@pytest_twisted.ensureDeferred
async def test_truncated_body_without_framing_is_bad_response(client: str) -> None:
    """A body delimited by the connection's end and cut short is not JSON: bad_response, not a hang."""
    port, _ = scripted_server(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"data\": {\"nda",
                              close=True)
    transport = make(client, config(f"127.0.0.1:{port.getHost().port}", "x"))
    try:
        error, _ = await one_call(transport, REQUEST, TIMEOUT + SLACK)
    finally:
        await port.stopListening()
    assert isinstance(error, RequestFailed) and (error.kind, error.retryable) == ("bad_response", True)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest_twisted.ensureDeferred
async def test_redirects_are_not_followed(client: str, status: int) -> None:
    """A redirect is an http_3xx failure: nothing, and no token, goes to the host it names."""
    elsewhere, seen = scripted_server(http_answer(b'{"data": {"ndarray": [[1]]}}'))
    target = f"http://127.0.0.1:{elsewhere.getHost().port}/api/v1.0/predictions".encode()
    port, _ = scripted_server(b"HTTP/1.1 %d Moved\r\nLocation: %b\r\nContent-Length: 2\r\n\r\n{}" % (status, target))
    transport = make(client, config(f"127.0.0.1:{port.getHost().port}", "x", call_credentials_token="s3cret"))
    try:
        error, _ = await one_call(transport, REQUEST, TIMEOUT + SLACK)
    finally:
        await port.stopListening()
        await elsewhere.stopListening()
    assert isinstance(error, RequestFailed) and (error.kind, error.code) == (f"http_{status}", status)
    assert seen.made == 0


@pytest_twisted.ensureDeferred
async def test_interim_answers_are_skipped(client: str) -> None:
    """1xx interim answers (100 Continue, 103 Early Hints) before the real one are passed over."""
    one = http_answer(b'{"data": {"ndarray": [[1]]}}')
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
    port, factory = scripted_server(interim + one)
    transport = make(client, config(f"127.0.0.1:{port.getHost().port}", "x"))
    transport.start()
    try:
        for _ in range(2):
            answer, _ = await outcome(transport.send(REQUEST, "p"), TIMEOUT + SLACK)
            assert answer == {"data": {"ndarray": [[1]]}}
        assert factory.made == 1
    finally:
        await stop_within(transport)
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_fast_two_answers_in_one_read() -> None:
    """A server that sends a second answer right behind the first: the first is the answer, and the
    connection, whose next bytes are not ours, is closed rather than reused."""
    one = http_answer(b'{"data": {"ndarray": [[1]]}}')
    port, factory = scripted_server(one + one)
    transport = FastHttpTransport(config(f"127.0.0.1:{port.getHost().port}", "x"), reactor)
    transport.start()
    try:
        for _ in range(2):
            answer, _ = await outcome(transport.send(REQUEST, "p"), TIMEOUT + SLACK)
            assert answer == {"data": {"ndarray": [[1]]}}
        assert factory.made == 2  # type: ignore[attr-defined]
    finally:
        await stop_within(transport)
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_fast_content_length_just_at_the_limit(client: str) -> None:
    """An answer of exactly --max-response-bytes is accepted; one byte more is not."""
    for extra, ok in ((0, True), (1, False)):
        filler = 1000 - len(b'{"strData": ""}') + extra
        body = b'{"strData": "' + b"x" * filler + b'"}'
        port, _ = scripted_server(http_answer(body))
        transport = make(client, config(f"127.0.0.1:{port.getHost().port}", "x", max_response_bytes=1000))
        try:
            result, _ = await one_call(transport, REQUEST, TIMEOUT + SLACK)
        finally:
            await port.stopListening()
        if ok:
            assert result == {"strData": "x" * filler}
        else:
            assert isinstance(result, RequestFailed) and result.kind == "response_too_large"


@pytest_twisted.ensureDeferred
async def test_unencodable_request_is_input_error(client: str) -> None:
    """A body too deep to encode never reaches the network: that line's input_error."""
    transport = make(client, config("127.0.0.1:1", "x"))
    error, _ = await one_call(transport, {"jsonData": nested(100_000)}, 2.0)
    assert isinstance(error, RequestFailed) and (error.kind, error.retryable) == ("input_error", False)


# -- classify and the depth bound -----------------------------------------------------------------


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


# -- gRPC -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest_twisted.ensureDeferred
async def test_grpc_oversize_answer(hostile: HostileServer, mode: str) -> None:
    """An 8 MiB answer past --max-response-bytes (gRPC's receive limit follows it) is
    response_too_large, not retried; with a larger limit the same answer arrives."""
    transport = GrpcTransport(config(hostile.grpc_host, "oversize_body", transport="grpc"), reactor, mode=mode)
    error, elapsed = await one_call(transport, REQUEST, TIMEOUT + SLACK)
    assert isinstance(error, RequestFailed), error
    assert (error.kind, error.info, error.retryable) == ("response_too_large", "response_too_large", False)
    assert elapsed < TIMEOUT
    roomy = GrpcTransport(config(hostile.grpc_host, "oversize_body", transport="grpc", timeout=20.0,
                                 max_response_bytes=16 << 20), reactor, mode=mode)
    answer, _ = await one_call(roomy, REQUEST, 30.0)
    assert isinstance(answer, dict) and len(answer["strData"]) == 8 << 20


@pytest.mark.parametrize("mode", MODES)
@pytest_twisted.ensureDeferred
async def test_grpc_deep_answer_and_stall(hostile: HostileServer, mode: str) -> None:
    """A message too deep for protobuf to read fails the call at once; a stall ends at the deadline."""
    transport = GrpcTransport(config(hostile.grpc_host, "deep", transport="grpc"), reactor, mode=mode)
    error, elapsed = await one_call(transport, REQUEST, TIMEOUT + SLACK)
    assert isinstance(error, RequestFailed), error
    assert elapsed < TIMEOUT
    stalled = GrpcTransport(config(hostile.grpc_host, "stall", transport="grpc"), reactor, mode=mode)
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
    transport = GrpcTransport(config(hostile.grpc_host, "echo", transport="grpc"), reactor)
    error, elapsed = await one_call(transport, DEEP_BODIES[name], 5.0)
    assert isinstance(error, RequestFailed), error
    assert (error.kind, error.info, error.retryable) == ("input_error", "input_error", False)
    assert len(hostile.received()) == before


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


@pytest_twisted.ensureDeferred
async def test_grpc_guard_fails_a_call_grpc_never_ends() -> None:
    """Should gRPC never end a call (its deadline is the first line of defence), the guard timer
    fails it as a timeout a little after --timeout and cancels it."""
    clock = Clock()
    transport = GrpcTransport(config("127.0.0.1:1", "x", transport="grpc", timeout=2.0), clock)
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


# -- TLS: every certificate of a --ca-cert bundle is trusted --------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _cert(subject: str, key: Any, issuer: str, issuer_key: Any, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                      content_commitment=False, key_encipherment=False,
                                                      data_encipherment=False, key_agreement=False,
                                                      encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class Chain:
    """Two CAs; the server certificate is signed by the SECOND. Bundles: both CAs, or the first only."""

    def __init__(self, tmp_path: Path) -> None:
        first_key, second_key, self.server_key = _key(), _key(), _key()
        first = _cert("Unrelated CA", first_key, "Unrelated CA", first_key, ca=True)
        second = _cert("Signing CA", second_key, "Signing CA", second_key, ca=True)
        self.server_cert = _pem(_cert("localhost", self.server_key, "Signing CA", second_key, ca=False))
        self.key_pem = self.server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption())
        self.bundle = tmp_path / "bundle.pem"
        self.bundle.write_bytes(_pem(first) + b"\n" + _pem(second))
        self.first_only = tmp_path / "first.pem"
        self.first_only.write_bytes(_pem(first))


class Ok(Resource):
    isLeaf = True

    def render_POST(self, request: Any) -> bytes:  # noqa: N802 - twisted.web's name
        return b'{"data": {"ndarray": [[1]]}}'


@pytest_twisted.ensureDeferred
async def test_rest_ca_bundle_second_certificate(client: str, tmp_path: Path) -> None:
    """--ca-cert with a bundle whose second certificate signed the server's: trusted (both REST
    clients); a bundle without that CA is refused."""
    chain = Chain(tmp_path)
    options = ssl.PrivateCertificate.loadPEM(chain.server_cert + chain.key_pem).options()
    site = Site(Ok())
    site.noisy = False
    port = reactor.listenSSL(0, site, options, interface="127.0.0.1")
    host = f"127.0.0.1:{port.getHost().port}"
    try:
        for ca, works in ((chain.bundle, True), (chain.first_only, False)):
            transport = make(client, config(host, "x", use_ssl=True, ca_cert=str(ca), timeout=5.0))
            result, _ = await one_call(transport, REQUEST, 8.0)
            if works:
                assert result == {"data": {"ndarray": [[1]]}}
            else:
                assert isinstance(result, RequestFailed) and result.kind == "connection"
    finally:
        await port.stopListening()


class Echo(prediction_pb2_grpc.SeldonServicer):  # type: ignore[misc]
    def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC's name
        return request


@pytest.mark.parametrize("mode", MODES)
@pytest_twisted.ensureDeferred
async def test_grpc_ca_bundle_second_certificate(tmp_path: Path, mode: str) -> None:
    """gRPC trusts every certificate of the --ca-cert bundle too."""
    chain = Chain(tmp_path)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    prediction_pb2_grpc.add_SeldonServicer_to_server(Echo(), server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(chain.key_pem, chain.server_cert)]))
    server.start()
    try:
        for ca, works in ((chain.bundle, True), (chain.first_only, False)):
            cfg = config(f"127.0.0.1:{port}", "x", transport="grpc", gateway_type="seldon", use_ssl=True,
                         ca_cert=str(ca), timeout=3.0)
            transport = GrpcTransport(cfg, reactor, mode=mode)
            result, _ = await one_call(transport, {"strData": "tls"}, 3.0 + SLACK + GUARD_SLACK)
            if works:
                assert result == {"strData": "tls"}
            else:
                assert isinstance(result, RequestFailed) and result.kind == "grpc_UNAVAILABLE"
    finally:
        server.stop(grace=None)


def test_ca_bundle_reads_every_certificate_and_refuses_garbage(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    assert len(ca_bundle(str(chain.bundle))) == 2
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a certificate\n")
    with pytest.raises(ValueError, match="--ca-cert"):
        ca_bundle(str(garbage))




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


def test_grpc_refuses_a_ca_cert_without_certificates(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN NOTHING-----\n")
    transport = GrpcTransport(config("127.0.0.1:1", "x", transport="grpc", use_ssl=True, ca_cert=str(garbage)),
                              reactor)
    with pytest.raises(ValueError, match="--ca-cert"):
        transport.start()


# -- numbers no strict JSON line can carry --------------------------------------------------------


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


@pytest.mark.parametrize("mode", MODES)
@pytest_twisted.ensureDeferred
async def test_grpc_non_finite_answer(hostile: HostileServer, mode: str) -> None:
    """An infinity in a gRPC answer is bad_response, as over REST."""
    transport = GrpcTransport(config(hostile.grpc_host, "huge_float", transport="grpc"), reactor, mode=mode)
    error, _ = await one_call(transport, REQUEST, TIMEOUT + SLACK)
    assert isinstance(error, RequestFailed) and (error.kind, error.retryable) == ("bad_response", False), error


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
