"""Connection lifetime (issue 13): --connection-max-age and --connection-max-requests in every client.

The age runs on a ``task.Clock`` (the lease's clock), the requests on loopback servers we control:
a retired connection takes no new request, finishes what it carries, then closes; no request
fails for it and nothing is sent twice.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import task
from twisted.internet.defer import Deferred

from seldon_batch_tx.transports.fast import FastHttpTransport
from seldon_batch_tx.transports.grpc_client import GrpcTransport
from seldon_batch_tx.transports.grpc_pool import ChannelPool
from seldon_batch_tx.transports.lifetime import Lifetime
from seldon_batch_tx.transports.treq_client import RestTransport
from tests.grpc_transport_helpers import LoopbackServer, deferLater, make_config, the_reactor
from tests.http_transport_helpers import CLIENTS, REQUEST, WebServer, config_for, reactor, wait_for, web  # noqa: F401
from tests.targets import target_of

# -- the rule ----------------------------------------------------------------------------------


def test_lease_runs_out_by_age_with_jitter() -> None:
    """Each lease ends between 80% and 120% of the age, on the owner's clock."""
    clock = task.Clock()
    low = Lifetime(10.0, None, clock.seconds, uniform=lambda a, b: a).lease()
    high = Lifetime(10.0, None, clock.seconds, uniform=lambda a, b: b).lease()
    assert (low.retire_at, high.retire_at) == (8.0, 12.0)
    lifetime = Lifetime(10.0, None, clock.seconds)
    leases = [lifetime.lease() for _ in range(200)]
    assert all(8.0 <= lease.retire_at <= 12.0 for lease in leases)
    assert len({lease.retire_at for lease in leases}) > 100  # not all at once
    clock.advance(7.9)
    assert not any(lifetime.expired(lease) for lease in leases)
    clock.advance(4.2)
    assert all(lifetime.expired(lease) for lease in leases)


def test_lease_runs_out_by_requests_and_never_without_limits() -> None:
    clock = task.Clock()
    lifetime = Lifetime(None, 3, clock.seconds)
    lease = lifetime.lease()
    for _ in range(3):
        assert not lifetime.expired(lease)
        lease.take()
    assert lifetime.expired(lease)
    forever = Lifetime(None, None, clock.seconds)
    assert forever.unlimited and forever.lease().retire_at == math.inf
    clock.advance(1e9)
    assert not forever.expired(forever.lease())


# -- gRPC's channel pool -----------------------------------------------------------------------


class FakeChannels:
    def __init__(self) -> None:
        self.opened: list[int] = []
        self.closed: list[int] = []

    def open(self) -> tuple[int, str]:
        self.opened.append(len(self.opened))
        return self.opened[-1], "call"


def test_channel_pool_replaces_aged_channels_and_closes_them_once_idle() -> None:
    clock, channels = task.Clock(), FakeChannels()
    pool = ChannelPool(2, channels.open, channels.closed.append, Lifetime(5.0, None, clock.seconds, jitter=0),
                       draw=lambda n: 0)
    first = pool.pick()  # channel 0, carries a call across its retirement
    second = pool.pick()  # channel 1
    assert (first.channel, second.channel) == (0, 1)
    pool.done(second)
    clock.advance(5.0)
    third = pool.pick()  # channel 0 is picked, has aged: replaced by channel 2, left open for its call
    assert third.channel == 2 and channels.closed == [] and pool.replaced == 1
    fourth = pool.pick()  # channel 1 aged too, idle: replaced by 3 and closed at once
    assert fourth.channel == 3 and channels.closed == [1]
    pool.done(first)  # the last call of channel 0 ended: now it closes
    assert channels.closed == [1, 0]
    pool.done(third)
    pool.done(fourth)
    assert sorted(pool.close()) == [2, 3] and pool.close() == []


def test_channel_pool_by_requests_and_least_busy() -> None:
    clock, channels = task.Clock(), FakeChannels()
    pool = ChannelPool(2, channels.open, channels.closed.append, Lifetime(None, 2, clock.seconds), draw=lambda n: 1)
    busy = pool.pick()  # round robin: channel 0
    assert pool.pick().channel == 1  # round robin: channel 1
    slot = pool.pick()  # round robin says 0 (busy 1), the drawn 1 is as busy: 0
    assert slot.channel == 0
    for s in (busy, slot):
        pool.done(s)
    picks = [pool.pick() for _ in range(4)]  # each channel took 2: replaced as picked again
    assert pool.replaced >= 2 and 0 in channels.closed
    for s in picks:
        pool.done(s)
    assert len(pool.close()) + len(channels.closed) == len(channels.opened)


# -- REST clients ------------------------------------------------------------------------------


def rest_client(client: str, server: WebServer, behaviour: str = "ok") -> FastHttpTransport | RestTransport:
    config = config_for(server.port, behaviour, workers=1)
    kind = FastHttpTransport if client == "fast" else RestTransport
    return kind(config, reactor, target=target_of(config))


def clocked(client: str, server: WebServer, clock: task.Clock, **lifetime: Any) -> FastHttpTransport | RestTransport:
    """A client whose connections' lifetime runs on ``clock``."""
    transport = rest_client(client, server)
    transport.lifetime = Lifetime(lifetime.get("age"), lifetime.get("requests"), clock.seconds, jitter=0)
    transport.start()
    return transport


@pytest.mark.parametrize("client", CLIENTS)
@pytest_twisted.ensureDeferred
async def test_rest_connection_retires_by_age(client: str, web: WebServer) -> None:  # noqa: F811
    clock = task.Clock()
    transport = clocked(client, web, clock, age=5.0)
    try:
        for _ in range(3):
            await transport.send(REQUEST, "p")
        assert web.stats["made"] == 1
        clock.advance(5.0)
        for _ in range(3):
            await transport.send(REQUEST, "p")
        await wait_for(lambda: web.stats["open"] == 1, what="the retired connection closed")
        assert web.stats["made"] == 2
    finally:
        await transport.stop()
    assert len(web.resource.seen) == 6  # nothing sent twice


@pytest.mark.parametrize("client", CLIENTS)
@pytest_twisted.ensureDeferred
async def test_rest_connection_retires_by_requests(client: str, web: WebServer) -> None:  # noqa: F811
    transport = clocked(client, web, task.Clock(), requests=3)
    try:
        for _ in range(7):
            await transport.send(REQUEST, "p")
        assert web.stats["made"] == 3
    finally:
        await transport.stop()
    assert len(web.resource.seen) == 7


@pytest.mark.parametrize("client", CLIENTS)
@pytest_twisted.ensureDeferred
async def test_rest_retiring_never_fails_the_request_it_carries(client: str, web: WebServer) -> None:  # noqa: F811
    """A connection that ages while its request is held answers it, then closes."""
    clock = task.Clock()
    transport = rest_client(client, web, "hold")
    transport.lifetime = Lifetime(5.0, None, clock.seconds, jitter=0)
    transport.start()
    try:
        held: Deferred[Any] = transport.send(REQUEST, "p")
        await wait_for(lambda: len(web.resource.held) == 1, what="the request held")
        clock.advance(60.0)
        assert web.resource.release_all() == 1
        assert await held == {"data": {"ndarray": [[1]]}, "meta": {}}
        await wait_for(lambda: web.stats["open"] == 0, what="the retired connection closed")
    finally:
        await transport.stop()
    assert web.stats["made"] == 1


# -- gRPC --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["aio", "futures", "threads"])
@pytest_twisted.ensureDeferred
async def test_grpc_channels_retire_by_requests_without_failing_calls(mode: str) -> None:
    """With one request per connection a call stalled across many retirements still answers, every
    other call gets a fresh connection, and the server sees each call once."""
    server = LoopbackServer()
    config = make_config(server.host, workers=4, grpc_channels=1, connection_max_requests=1)
    transport = GrpcTransport(config, the_reactor(), mode=mode, target=target_of(config))
    transport.start()
    try:
        stalled = transport.send({"strData": "stall:0.5"}, "p-stalled")
        for i in range(5):
            assert await transport.send({"strData": f"n{i}"}, f"p{i}") == {"strData": f"n{i}"}
        assert await stalled == {"strData": "stall:0.5"}
    finally:
        await transport.stop()
        server.stop()
    assert len(server.recorder.metadata) == 6
    assert len(server.recorder.peers) == 6


@pytest_twisted.ensureDeferred
async def test_grpc_channels_retire_by_age() -> None:
    """Channels older than --connection-max-age are replaced: a run longer than the age reconnects."""
    server = LoopbackServer()
    config = make_config(server.host, workers=2, grpc_channels=2, connection_max_age=0.2)
    transport = GrpcTransport(config, the_reactor(), mode="aio", target=target_of(config))
    transport.start()
    try:
        for i in range(12):
            await transport.send({"strData": f"n{i}"}, f"p{i}")
            await deferLater(0.05)
    finally:
        await transport.stop()
        server.stop()
    assert len(server.recorder.metadata) == 12
    assert len(server.recorder.peers) >= 4


# -- the option ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["none", "0", "None"])
def test_connection_max_age_none_turns_retiring_off(value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """``--connection-max-age none`` (or its variable) reaches the config as None: never retire.

    The option table's own default (5 s) once won over an explicit ``none``, so retiring could not
    be turned off.
    """
    from seldon_batch_tx.options import ProcessorOptions
    from seldon_batch_tx.tap import Options

    source = tmp_path / "in.txt"
    source.write_text("[[1]]\n")
    base = ["-d", "m", "-h", "127.0.0.1:9", "-i", str(source), "-o", str(tmp_path / "out.txt")]

    def config_of(options: Any, argv: list[str]) -> Any:
        options.parseOptions(argv)
        return options.config()

    assert config_of(ProcessorOptions(), base).connection_max_age == 5.0
    assert config_of(ProcessorOptions(), [*base, "--connection-max-age", value]).connection_max_age is None
    assert Lifetime.from_config(config_of(ProcessorOptions(), [*base, "--connection-max-age", value]),
                                lambda: 0.0).unlimited
    monkeypatch.setenv("SELDON_BATCH_CONNECTION_MAX_AGE", value)
    assert config_of(ProcessorOptions(), base).connection_max_age is None
    assert config_of(ProcessorOptions(), [*base, "--connection-max-age", "2"]).connection_max_age == 2.0
    daemon = Options()
    daemon.parseOptions(["--watch-dir", str(tmp_path), "-d", "m", "-h", "127.0.0.1:9"])
    assert daemon.config().connection_max_age is None


# -- names are resolved again ------------------------------------------------------------------


class CountingResolver:
    """The reactor's resolver, counting the lookups of one made-up name (answered as 127.0.0.1)."""

    def __init__(self, name: str, original: Any) -> None:
        self.name = name
        self.original = original
        self.lookups = 0
        self.any_lookups = 0

    def resolveHostName(self, receiver: Any, hostName: str, portNumber: int = 0,  # noqa: N802, N803
                        addressTypes: Any = None, transportSemantics: str = "TCP") -> Any:  # noqa: N803
        name = hostName
        if name == self.name:
            self.lookups += 1
            name = "127.0.0.1"
        return self.original.resolveHostName(receiver, name, portNumber, addressTypes, transportSemantics)


@pytest.mark.parametrize("client", CLIENTS)
@pytest_twisted.ensureDeferred
async def test_a_retired_connection_resolves_its_name_again(client: str, web: WebServer) -> None:  # noqa: F811
    """Issue 13: a new connection looks the name up again (a Service's new pods get work); an IP
    address is connected as it is, with no lookup (the fast client skips the resolver's thread).

    treq's pool sends one last request over a connection that aged while idle, so the second
    connection comes with the third request."""
    resolver = CountingResolver("replicas.invalid", reactor.nameResolver)
    reactor.installNameResolver(resolver)
    try:
        for host, lookups in (("replicas.invalid", 2), ("127.0.0.1", 0)):
            resolver.lookups = resolver.any_lookups = 0
            clock = task.Clock()
            config = config_for(web.port, "ok", workers=1, host=f"{host}:{web.port}")
            kind = FastHttpTransport if client == "fast" else RestTransport
            transport = kind(config, reactor, target=target_of(config))
            transport.lifetime = Lifetime(5.0, None, clock.seconds, jitter=0)
            transport.start()
            try:
                await transport.send(REQUEST, "p")
                clock.advance(5.0)
                await transport.send(REQUEST, "p")
                await transport.send(REQUEST, "p")
            finally:
                await transport.stop()
            assert resolver.lookups == lookups, host
            if client == "fast" and host == "127.0.0.1":
                assert resolver.any_lookups == 0
    finally:
        reactor.installNameResolver(resolver.original)
