"""The fallback gRPC modes on grpcio's synchronous API: ``futures`` and ``threads``.

Kept should a grpcio release misbehave with ``grpc.aio`` in a thread (see :mod:`.grpc_client`).
Like :class:`~.grpc_loop.AioCaller`, a :class:`SyncCaller` spreads calls over a
:class:`~.grpc_pool.ChannelPool` and delivers each outcome on the reactor thread as
``(ok, response_or_exception)``; the pool is used from the reactor thread only.

* ``futures``: ``stub.Predict.future(...)``; gRPC's completion thread hands each result back with
  ``reactor.callFromThread``. Cancelling the Deferred cancels the call.
* ``threads``: blocking ``stub.Predict(...)`` in a dedicated ``ThreadPool`` sized to the workers
  (never the reactor's shared pool, which DNS uses).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from .grpc_pool import ChannelPool, Slot
from .lifetime import Lifetime

Outcome = tuple[bool, Any]


class SyncCaller:
    """Unary calls over sync grpcio channels (mode ``futures`` or ``threads``)."""

    def __init__(self, reactor: Any, mode: str, workers: int) -> None:
        self._reactor = reactor
        self._mode = mode
        self._workers = workers
        self._channels: ChannelPool | None = None
        self._pool: ThreadPool | None = None
        self._shutdown_trigger: Any = None

    def start(self, open_channel: Callable[[], grpc.Channel], make_call: Callable[[grpc.Channel], Any],
              channels: int, lifetime: Lifetime) -> None:
        """Open the channels (and the thread pool in ``threads`` mode)."""
        if self._mode == "threads":
            self._pool = ThreadPool(minthreads=self._workers, maxthreads=self._workers, name="grpc-transport")
            self._pool.start()
            # Pool threads are not daemons: stop them even if nobody calls stop().
            self._shutdown_trigger = self._reactor.addSystemEventTrigger("during", "shutdown", self._pool.stop)

        def open_slot() -> tuple[grpc.Channel, Any]:
            channel = open_channel()
            return channel, make_call(channel)

        self._channels = ChannelPool(channels, open_slot, lambda channel: channel.close(), lifetime)

    def stop(self) -> Deferred[None]:
        """Close the channels (calls in flight fail with CANCELLED) and join the pool's threads."""
        channels, self._channels = self._channels, None
        for channel in channels.close() if channels is not None else ():
            channel.close()
        pool, self._pool = self._pool, None
        if pool is None:
            return succeed(None)
        if self._shutdown_trigger is not None:
            self._reactor.removeSystemEventTrigger(self._shutdown_trigger)
            self._shutdown_trigger = None
        done: Deferred[None] = Deferred()

        def join() -> None:
            pool.stop()
            self._reactor.callFromThread(done.callback, None)

        threading.Thread(target=join, name="grpc-transport-stop", daemon=True).start()
        return done

    def call(self, request: Any, timeout: float, metadata: Any) -> Deferred[Outcome]:
        """Start one call (on the reactor thread); fires with ``(ok, response or exception)``."""
        channels = self._channels
        if channels is None:
            return succeed((False, ValueError("the gRPC channels are closed")))
        slot = channels.pick()
        if self._mode == "threads":
            assert self._pool is not None
            d = deferToThreadPool(self._reactor, self._pool, _blocking, slot.call, request, timeout, metadata)
        else:
            d = self._future(slot.call, request, timeout, metadata)
        return d.addBoth(_ended, channels, slot)

    def _future(self, call: Any, request: Any, timeout: float, metadata: Any) -> Deferred[Outcome]:
        try:
            future = call.future(request, timeout=timeout, metadata=metadata)
        except Exception as error:  # noqa: BLE001 - RpcError, a closed channel: the caller decides
            return succeed((False, error))
        d: Deferred[Outcome] = Deferred(lambda _: future.cancel())
        future.add_done_callback(lambda f: self._reactor.callFromThread(_deliver, d, f))
        return d


def _blocking(call: Any, request: Any, timeout: float, metadata: Any) -> Outcome:
    """Runs in the dedicated pool."""
    try:
        return True, call(request, timeout=timeout, metadata=metadata)
    except Exception as error:  # noqa: BLE001 - RpcError, a closed channel: the caller decides
        return False, error


def _deliver(d: Deferred[Outcome], future: Any) -> None:
    """On the reactor thread: fire ``d`` from the finished gRPC future."""
    if d.called:  # cancelled by the caller meanwhile
        return
    if future.cancelled():
        d.callback((False, CancelledError("gRPC call cancelled")))
        return
    error = future.exception()
    d.callback((False, error) if error is not None else (True, future.result()))


def _ended(result: Any, channels: ChannelPool, slot: Slot) -> Any:
    """The call over ``slot`` ended (on the reactor thread): its retired channel may close now."""
    channels.done(slot)
    return result
