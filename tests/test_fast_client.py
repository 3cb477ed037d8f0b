"""What only the fast REST client does: its pool queues past --workers, resends once when a reused
connection was closed, refuses header injection, drops a cancelled request and a connection that
talks while idle.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater

from tests import http_transport_helpers
from tests.http_transport_helpers import (
    OK_BODY,
    OK_BYTES,
    REQUEST,
    RawConnection,
    WebServer,
    config_for,
    failure_of,
    reactor,
    response,
    wait_for,
)
from tests.targets import fast_transport

raw = http_transport_helpers.raw  # a fixture shared with this topic's other files
web = http_transport_helpers.web  # a fixture shared with this topic's other files


@pytest_twisted.ensureDeferred
async def test_fast_pool_queues_beyond_workers(web: WebServer) -> None:
    """Sent directly, more requests than workers wait for a connection instead of opening more."""
    transport = fast_transport(config_for(web.port, "hold", workers=3), reactor)
    transport.start()
    try:
        answers = gatherResults([transport.send(REQUEST, f"p{i}") for i in range(10)])
        for _ in range(10):
            await wait_for(lambda: bool(web.resource.held) or answers.called, what="held requests")
            await deferLater(reactor, 0.02)
            assert len(web.resource.held) <= 3
            web.resource.release_all()
            if answers.called:
                break
        assert await answers == [OK_BODY] * 10
    finally:
        await transport.stop()
    assert web.resource.max_held == 3
    assert web.stats["made"] == 3
    assert transport.connections_made == 3


@pytest_twisted.ensureDeferred
async def test_fast_resends_once_when_a_reused_connection_was_closed(raw: Any) -> None:
    """A keep-alive connection the server dropped without answering is retried once on a fresh one;
    a fresh connection dropped the same way is a ``connection`` failure."""
    count = 0

    def behave(conn: RawConnection, n: int) -> None:
        nonlocal count
        count += 1
        if count in (2, 4, 5):
            conn.transport.loseConnection()  # type: ignore[union-attr]
        else:
            conn.transport.write(response(OK_BYTES))  # type: ignore[union-attr]

    port, factory = raw(behave)
    transport = fast_transport(config_for(port, "x"), reactor)
    transport.start()
    try:
        assert await transport.send(REQUEST, "p") == OK_BODY  # 1: a fresh connection
        assert await transport.send(REQUEST, "p") == OK_BODY  # 2: reused, dropped; 3: resent on a fresh one
        assert factory.made == 2
        error = await failure_of(transport.send(REQUEST, "p"))  # 4: reused, dropped; 5: fresh, dropped
        assert error.kind == "connection"
        assert (count, factory.made) == (5, 3)
    finally:
        await transport.stop()


def test_fast_rejects_header_injection() -> None:
    """A token with a line break cannot smuggle headers into every request."""
    with pytest.raises(ValueError):
        fast_transport(config_for(1, "ok", call_credentials_token="a\r\nX-Evil: 1"), reactor)


@pytest_twisted.ensureDeferred
async def test_fast_cancel_drops_the_request(web: WebServer) -> None:
    """Cancelling a request in flight (the engine abandoning it) closes its connection."""
    transport = fast_transport(config_for(web.port, "hold", workers=2), reactor)
    transport.start()
    try:
        d = transport.send(REQUEST, "p")
        await wait_for(lambda: len(web.resource.held) == 1, what="the held request")
        d.cancel()
        d.addErrback(lambda f: None)
        await wait_for(lambda: web.stats["open"] == 0, what="the server to see the connection closed")
        assert transport.open_connections == 0
    finally:
        await transport.stop()


@pytest_twisted.ensureDeferred
async def test_fast_drops_a_connection_that_talks_while_idle(raw: Any) -> None:
    """A server that sends bytes on an idle keep-alive connection (a 408, say) gets that connection
    closed; the next request goes out on a fresh one and succeeds."""
    def behave(conn: RawConnection, n: int) -> None:
        conn.transport.write(response(OK_BYTES))  # type: ignore[union-attr]
        reactor.callLater(0.01, conn.transport.write,  # type: ignore[union-attr]
                          b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")

    port, factory = raw(behave)
    transport = fast_transport(config_for(port, "x"), reactor)
    transport.start()
    try:
        assert await transport.send(REQUEST, "p") == OK_BODY
        await wait_for(lambda: factory.lost == 1, what="the idle connection to be dropped")
        assert transport.open_connections == 0
        assert await transport.send(REQUEST, "p") == OK_BODY
        assert factory.made == 2
    finally:
        await transport.stop()
