"""Both REST transports against raw TCP servers that misbehave on purpose (127.0.0.1, the test's
reactor): a closed connection, a body until the connection ends, a reset, a stall, malformed HTTP.
"""

from __future__ import annotations

import time
from typing import Any

import pytest_twisted

from tests import http_transport_helpers
from tests.http_transport_helpers import (
    OK_BODY,
    OK_BYTES,
    REQUEST,
    RawConnection,
    config_for,
    failure_of,
    make,
    reactor,
    response,
    wait_for,
)

client = http_transport_helpers.client  # a fixture shared with this topic's other files
raw = http_transport_helpers.raw  # a fixture shared with this topic's other files


@pytest_twisted.ensureDeferred
async def test_connection_close_response(client: str, raw: Any) -> None:
    """``Connection: close`` answers are read whole; the next request opens a new connection."""
    def behave(conn: RawConnection, n: int) -> None:
        conn.transport.write(response(OK_BYTES, b"Connection: close"))  # type: ignore[union-attr]
        conn.transport.loseConnection()  # type: ignore[union-attr]

    port, factory = raw(behave)
    transport = make(client, config_for(port, "x"))
    transport.start()
    try:
        for _ in range(3):
            assert await transport.send(REQUEST, "p") == OK_BODY
    finally:
        await transport.stop()
    assert factory.made == 3


@pytest_twisted.ensureDeferred
async def test_body_until_connection_end(client: str, raw: Any) -> None:
    """A response with neither Content-Length nor chunking ends when the server closes."""
    def behave(conn: RawConnection, n: int) -> None:
        conn.transport.write(response(OK_BYTES, length=False))  # type: ignore[union-attr]
        conn.transport.loseConnection()  # type: ignore[union-attr]

    port, _ = raw(behave)
    transport = make(client, config_for(port, "x"))
    transport.start()
    try:
        assert await transport.send(REQUEST, "p") == OK_BODY
    finally:
        await transport.stop()


@pytest_twisted.ensureDeferred
async def test_reset_mid_response(client: str, raw: Any) -> None:
    """A connection reset halfway through the body is a retryable ``connection`` failure."""
    def behave(conn: RawConnection, n: int) -> None:
        conn.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"data\":")  # type: ignore[union-attr]
        reactor.callLater(0.05, conn.transport.abortConnection)  # type: ignore[union-attr]

    port, _ = raw(behave)
    transport = make(client, config_for(port, "x"))
    transport.start()
    try:
        error = await failure_of(transport.send(REQUEST, "p"))
    finally:
        await transport.stop()
    assert (error.kind, error.code, error.retryable) == ("connection", None, True)


@pytest_twisted.ensureDeferred
async def test_stall_past_timeout(client: str, raw: Any) -> None:
    """A server that never answers gives a ``timeout`` after --timeout, and the connection is dropped."""
    port, factory = raw(lambda conn, n: None)
    transport = make(client, config_for(port, "x", timeout=0.3))
    transport.start()
    started = time.monotonic()
    try:
        error = await failure_of(transport.send(REQUEST, "p"))
        elapsed = time.monotonic() - started
        assert (error.kind, error.retryable) == ("timeout", True)
        assert 0.25 < elapsed < 3.0
        await wait_for(lambda: factory.lost == 1, what="the stalled connection to be closed")
    finally:
        await transport.stop()


@pytest_twisted.ensureDeferred
async def test_malformed_response(client: str, raw: Any) -> None:
    """Bytes that are not HTTP fail the request as retryable, never hang it."""
    def behave(conn: RawConnection, n: int) -> None:
        conn.transport.write(b"SPDY/9 banana\r\n\r\n")  # type: ignore[union-attr]

    port, _ = raw(behave)
    transport = make(client, config_for(port, "x", timeout=3.0))
    transport.start()
    try:
        error = await failure_of(transport.send(REQUEST, "p"))
    finally:
        await transport.stop()
    assert error.kind in ("bad_response", "connection") and error.retryable
