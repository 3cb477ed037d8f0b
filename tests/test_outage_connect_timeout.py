"""A connection that is never accepted within ``--timeout`` is an outage (issue 19), not a slow answer:
the fast REST client reports it as ``connection`` (the run waits for the model) rather than ``timeout``."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.core.failures import RequestFailed
from seldon_batch_tx.pipeline.outage import is_outage
from seldon_batch_tx.protocols.choose import make_codec
from seldon_batch_tx.transports.fast import FastHttpTransport


@pytest.fixture
def unanswered() -> Iterator[int]:
    """A port whose listen backlog is full: new connections get no SYN-ACK and hang."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(8):  # fill the backlog (never accepted)
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(("127.0.0.1", port))
        fillers.append(s)
    try:
        yield port
    finally:
        for s in fillers:
            s.close()
        server.close()


@pytest_twisted.ensureDeferred
async def test_no_connection_within_the_timeout_is_an_outage(unanswered: int) -> None:
    config = BatchConfig(deployment_name="m", input_data_path="in", output_data_path="out", gateway_type="seldon",
                         host=f"127.0.0.1:{unanswered}", timeout=1.0)
    transport = FastHttpTransport(config, reactor, target=make_codec(config).target)
    transport.start()
    try:
        with pytest.raises(RequestFailed) as caught:
            await transport.send({"data": {"ndarray": [[1]]}}, "puid")
    finally:
        await transport.stop()
    failure = caught.value
    assert failure.kind == "connection" and failure.retryable, failure.reason
    assert f"cannot connect to 127.0.0.1:{unanswered}" in failure.reason and "--timeout 1 s" in failure.reason
    assert is_outage(failure)
