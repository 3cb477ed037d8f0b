"""What the hostile-answer transport tests share: configs, one call within a deadline, the socket leak check, the
hostile server fixture (tests/hostile_server.py) and the client under test.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.transports.base import Transport
from seldon_batch_tx.transports.fast import FastHttpTransport
from seldon_batch_tx.transports.treq_client import RestTransport
from tests.hostile_server import HostileServer
from tests.targets import target_of

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


def config(host: str, mode: str, **changes: Any) -> BatchConfig:
    """Istio-style routing: the deployment name is the hostile server's mode (path or gRPC metadata)."""
    values: dict[str, Any] = dict(deployment_name=mode, input_data_path="-", output_data_path="-",
                                  gateway_type="istio", namespace="ns", host=host, workers=2, timeout=TIMEOUT,
                                  max_response_bytes=LIMIT)
    values.update(changes)
    return BatchConfig(**values)


def make(client: str, cfg: BatchConfig) -> Transport:
    kind = FastHttpTransport if client == "fast" else RestTransport
    return kind(cfg, reactor, target=target_of(cfg))


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
