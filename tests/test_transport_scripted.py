"""Both REST clients against answers whose exact bytes matter (small servers in the test's reactor):
classification bugs, deep answers, unframed bodies, redirects, interim 1xx answers, two answers in
one read, a Content-Length just at the limit.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet.protocol import Factory, Protocol

from seldon_batch_tx.core.failures import RequestFailed
from seldon_batch_tx.core.strict_json import MAX_ANSWER_DEPTH
from seldon_batch_tx.transports import fast_connection as transport_http
from seldon_batch_tx.transports import treq_client as transport_rest
from tests import transport_hostile_helpers
from tests.targets import fast_transport
from tests.transport_hostile_helpers import (
    REQUEST,
    SLACK,
    TIMEOUT,
    config,
    make,
    no_connections_to,
    one_call,
    outcome,
    reactor,
    stop_within,
)

client = transport_hostile_helpers.client  # a fixture shared with this topic's other files


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
    transport = fast_transport(config(f"127.0.0.1:{port.getHost().port}", "x"), reactor)
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
