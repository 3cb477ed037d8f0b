"""The fast client writes a request straight to a plain TCP socket when nothing is queued before it.

What must hold: every byte arrives, in order, whether the socket takes the request at once or only
part of it (the rest goes through Twisted's ``write``); a TLS connection is never written past;
and the private Twisted names :func:`~seldon_batch_tx.transports.twisted_internals.write_now`
reads still exist.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import abstract, tcp
from twisted.internet.defer import gatherResults
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOProtocol

from seldon_batch_tx.transports.twisted_internals import plain_socket
from tests.http_transport_helpers import OK_BODY, OK_BYTES, config_for, reactor, response
from tests.targets import fast_transport


class EchoLength(Protocol):
    """Reads each whole request and answers OK only if its body is the JSON the test expects."""

    def connectionMade(self) -> None:
        self.chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)
        data = b"".join(self.chunks)
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            return
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        if len(rest) < length:
            self.chunks = [data]
            return
        self.chunks = [rest[length:]]
        factory: Any = self.factory
        factory.bodies.append(json.loads(rest[:length]))
        self.transport.write(response(OK_BYTES))  # type: ignore[union-attr]


@pytest.fixture
def server() -> Any:
    factory = Factory.forProtocol(EchoLength)
    factory.bodies = []  # type: ignore[attr-defined]
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    yield port.getHost().port, factory
    pytest_twisted.blockon(port.stopListening())


@pytest_twisted.ensureDeferred
async def test_a_request_larger_than_the_socket_takes_arrives_whole(server: Any) -> None:
    """8 MB is more than a loopback socket takes at once: the rest follows through ``write``, in order."""
    port, factory = server
    transport = fast_transport(config_for(port, "x"), reactor)
    transport.start()
    big = {"strData": "".join(chr(0x41 + i % 26) for i in range(8 << 20)), "meta": {}}
    try:
        assert await transport.send(big, "p0") == OK_BODY
        small = [{"strData": f"line {i}", "meta": {}} for i in range(20)]
        for i, body in enumerate(small):  # then the same connection, each request sent at once
            assert await transport.send(body, f"p{i + 1}") == OK_BODY
    finally:
        await transport.stop()
    assert factory.bodies[0]["strData"] == big["strData"]
    assert [b["strData"] for b in factory.bodies[1:]] == [f"line {i}" for i in range(20)]
    assert transport.connections_made == 1


@pytest_twisted.ensureDeferred
async def test_many_requests_at_once_each_arrive_whole(server: Any) -> None:
    port, factory = server
    transport = fast_transport(config_for(port, "x", workers=8), reactor)
    transport.start()
    try:
        answers = await gatherResults([transport.send({"strData": str(i) * 1000, "meta": {}}, f"p{i}")
                                       for i in range(200)])
    finally:
        await transport.stop()
    assert answers == [OK_BODY] * 200
    assert sorted(b["strData"] for b in factory.bodies) == sorted(str(i) * 1000 for i in range(200))


def test_tls_and_other_transports_are_only_written_through_write() -> None:
    tls = TLSMemoryBIOProtocol(None, Protocol())  # type: ignore[arg-type]
    assert plain_socket(tls) is None
    assert plain_socket(object()) is None


def test_twisted_names_write_now_reads() -> None:
    """A TCP connection is a FileDescriptor whose ``write`` queues in ``_tempDataBuffer`` and whose
    ``doWrite`` sends ``dataBuffer`` first; it has ``socket``, ``connected`` and ``disconnecting``."""
    assert issubclass(tcp.Connection, abstract.FileDescriptor)
    assert "_tempDataBuffer" in inspect.getsource(abstract.FileDescriptor.write)
    assert "self.dataBuffer" in inspect.getsource(abstract.FileDescriptor.doWrite)
    fd = abstract.FileDescriptor()
    assert fd.dataBuffer == b"" and fd._tempDataBuffer == [] and not fd.disconnecting
    assert "self.socket" in inspect.getsource(tcp.Connection.__init__)
