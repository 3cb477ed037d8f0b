"""A run's gRPC channels: several connections, calls spread over them, each retired by its lifetime.

Why several: one gRPC channel is one HTTP/2 connection, and a connection reaches one replica
(a Kubernetes Service, like ``SO_REUSEPORT``, spreads connections, not calls), so a run over one
channel leaves every other replica idle. Each channel here is opened with
``grpc.use_local_subchannel_pool`` (:func:`.grpc_channel.channel_options`): without it grpcio's
global subchannel pool would merge channels to the same address into one connection.

Which channel takes a call: the next one round robin, unless a randomly drawn one carries fewer
calls (two choices: O(1) per call, and a slow replica's channels get fewer calls). A channel past
its lifetime (:mod:`.lifetime`) is replaced by a new one (its name resolved again) when it is
next picked; the old one takes no new call and is closed once its calls have ended, so
retiring never fails a call.

Not thread-safe: one owner thread (the grpc.aio loop thread, or the reactor for the sync modes)
calls everything.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from .lifetime import Lease, Lifetime

#: Opens one channel and returns it with the multi-callable the calls use.
OpenChannel = Callable[[], tuple[Any, Any]]


class Slot:
    """One channel, the method called on it, its lease and the calls it carries."""

    __slots__ = ("busy", "call", "channel", "lease", "retired")

    def __init__(self, channel: Any, call: Any, lease: Lease) -> None:
        self.channel = channel
        self.call = call
        self.lease = lease
        self.busy = 0
        self.retired = False


class ChannelPool:
    """``size`` channels opened by ``open_channel``; retired ones are handed to ``close`` once idle."""

    def __init__(self, size: int, open_channel: OpenChannel, close: Callable[[Any], None], lifetime: Lifetime, *,
                 draw: Callable[[int], int] = random.randrange) -> None:
        self._open_channel = open_channel
        self._close = close
        self._lifetime = lifetime
        self._draw = draw
        self._slots = [self._new() for _ in range(max(size, 1))]
        self._next = 0
        self._draining: set[Slot] = set()  # retired, still carrying calls
        self._closed = False
        #: Channels replaced because their lifetime ran out (tests and logs read it).
        self.replaced = 0

    def _new(self) -> Slot:
        channel, call = self._open_channel()
        return Slot(channel, call, self._lifetime.lease())

    @property
    def size(self) -> int:
        return len(self._slots)

    def pick(self) -> Slot:
        """The slot the next call goes over (counted as busy until :meth:`done`)."""
        slots = self._slots
        n = len(slots)
        index = self._next
        self._next = index + 1 if index + 1 < n else 0
        if n > 1:
            other = self._draw(n)
            if slots[other].busy < slots[index].busy:
                index = other
        slot = slots[index]
        if self._lifetime.expired(slot.lease):
            slot = self._replace(index)
        slot.busy += 1
        slot.lease.take()
        return slot

    def done(self, slot: Slot) -> None:
        """A call over ``slot`` ended; a retired channel whose last call this was is closed."""
        slot.busy -= 1
        if slot.retired and slot.busy <= 0 and slot in self._draining:
            self._draining.discard(slot)
            self._close(slot.channel)

    def _replace(self, index: int) -> Slot:
        old = self._slots[index]
        old.retired = True
        new = self._slots[index] = self._new()
        self.replaced += 1
        if old.busy <= 0:
            self._close(old.channel)
        else:
            self._draining.add(old)
        return new

    def close(self) -> list[Any]:
        """Every channel still open (in use or draining), for the owner to close; the pool is done."""
        if self._closed:
            return []
        self._closed = True
        channels = [slot.channel for slot in (*self._slots, *self._draining)]
        self._draining.clear()
        return channels

    def all_channels(self) -> list[Any]:
        """The channels calls are spread over now (not the draining ones)."""
        return [slot.channel for slot in self._slots]
