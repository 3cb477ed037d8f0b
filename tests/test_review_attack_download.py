"""Review attack: a dashboard client that asks for a download and stops reading (a slow-read slowloris).

Twisted turns a connection's idle timeout off while a request is answered, so such a client held its
connection (one of the 64 the dashboard allows) and the open output file for ever. It is now cut
once it has read nothing for the idle timeout; a client that keeps reading, however slowly, is not.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.dashboard.channel import DashboardSite
from seldon_batch_tx.dashboard.registry import BatchRegistry
from seldon_batch_tx.dashboard.site import DashboardRoot
from seldon_batch_tx.pipeline.stats import BatchStats
from seldon_batch_tx.pipeline.summary import Summary

#: Far more than the socket buffers of both ends hold.
OUTPUT_BYTES = 24 << 20
IDLE = 1.0


def registry_with_output(tmp_path: Path) -> tuple[BatchRegistry, Path]:
    output = tmp_path / "scored.txt"
    line = b'{"data": {"ndarray": [' + b"1.25, " * 100 + b'1.25]}}\n'
    output.write_bytes(line * (OUTPUT_BYTES // len(line)))
    registry = BatchRegistry(reactor)
    config = BatchConfig(deployment_name="echo", input_data_path=str(tmp_path / "in.txt"),
                         output_data_path=str(output), batch_id="done-1")
    stats = BatchStats("done-1", "in.txt", total=1)
    stats.begin(0.0)
    stats.succeeded, stats.finished, stats.state = 1, 1.0, "done"
    registry.add(stats, config=config, output=str(output)).finish(1.0, Summary.of(stats, None))
    return registry, output


def client(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /download/output/done-1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    sock.setblocking(False)
    return sock


def drain(sock: socket.socket, most: int) -> int:
    """Bytes read without waiting (at most ``most``); -1 once the server closed or reset."""
    got = 0
    try:
        while got < most:
            chunk = sock.recv(min(65536, most - got))
            if not chunk:
                return -1
            got += len(chunk)
    except BlockingIOError:
        pass
    except ConnectionResetError:
        return -1
    return got


@pytest_twisted.ensureDeferred
async def test_a_client_that_stops_reading_is_cut(tmp_path: Path) -> None:
    registry, output = registry_with_output(tmp_path)
    site = DashboardSite(DashboardRoot(registry), idle_timeout=IDLE)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    stalled = client(port.getHost().port)
    steady = client(port.getHost().port)
    try:
        await deferLater(reactor, 0.3, lambda: None)
        assert site.open_connections == 2
        read = 0
        for _ in range(int(4 * IDLE / 0.2)):  # the steady client reads a little every 0.2 s
            await deferLater(reactor, 0.2, lambda: None)
            got = drain(steady, 64 * 1024)
            assert got >= 0, "a client that keeps reading was cut"
            read += got
        assert site.open_connections == 1  # the stalled one only
        assert drain(stalled, 1 << 30) == -1 or drain(stalled, 1 << 30) == -1  # what was in flight, then the end
        while (got := drain(steady, 1 << 30)) >= 0:  # the rest, as fast as it comes
            read += got
            await deferLater(reactor, 0.01, lambda: None)
        headers_and_body = read
        assert headers_and_body > output.stat().st_size  # the whole file (and the headers)
    finally:
        stalled.close()
        steady.close()
        await port.stopListening()
