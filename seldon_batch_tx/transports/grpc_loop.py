"""grpc.aio calls for a Twisted program: a private asyncio loop in one thread, batched hand-offs.

Why: grpcio's synchronous API (``stub.Predict.future``) costs about 0.3-0.4 ms of client CPU
per call in Python (a channel "spin" thread that starts and stops with the number of calls in
flight, a lock shared with it, one reactor wake-up per answer), which made the gRPC transport
slower than its REST one.  ``grpc.aio`` drives calls from an event loop with far less work per
call, but needs an asyncio loop, and the reactor is not one (and must not block).  So:

* one daemon thread runs a private asyncio loop that owns the ``grpc.aio`` channels (a
  :class:`~.grpc_pool.ChannelPool`: several connections, each retired by its lifetime); nothing
  else ever touches the channels or their calls;
* calls go in through a deque, answers come out through another; each side wakes the other
  only when its queue was empty (one ``call_soon_threadsafe`` / ``callFromThread`` per burst,
  not per call), so with 50 calls in flight most hand-offs cost no system call at all;
* every call has a deadline; cancelling the Deferred cancels the call; closing the channel
  fails the calls in flight with CANCELLED.

Results are delivered on the reactor thread as ``(ok, response_or_exception)``; turning them
into dicts or RequestFailed is the transport's job (:mod:`seldon_batch_tx.transports.grpc_client`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import grpc
import txaio
from twisted.internet.defer import CancelledError, Deferred

from .grpc_pool import ChannelPool
from .lifetime import Lifetime

txaio.use_twisted()
log = txaio.make_logger()

#: Makes the multi-callable (``stub.Predict``...) from a channel, on the loop thread.
CallFactory = Callable[[grpc.aio.Channel], Any]
Outcome = tuple[bool, Any]


class _Pending:
    """One call: its Deferred (reactor side) and, once started, its asyncio task (loop side)."""

    __slots__ = ("args", "cancelled", "d", "task")

    def __init__(self, d: Deferred[Outcome], args: tuple[Any, float, Any]) -> None:
        self.d = d
        self.args = args
        self.task: asyncio.Task[None] | None = None
        self.cancelled = False


class AioCaller:
    """Runs unary gRPC calls on a ``grpc.aio`` channel owned by a private loop thread."""

    def __init__(self, reactor: Any, name: str = "grpc-aio") -> None:
        self._reactor = reactor
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pool: ChannelPool | None = None  # opened on the loop thread
        self._closing: set[asyncio.Task[None]] = set()  # retired channels being closed
        self._inbox: deque[_Pending] = deque()  # reactor -> loop
        self._inbox_woken = False
        self._outbox: deque[tuple[_Pending, Outcome]] = deque()  # loop -> reactor
        self._outbox_woken = False
        self._stopped: Deferred[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # calls running (loop thread only)

    # --- lifecycle (reactor thread) ------------------------------------------------------

    def start(self, open_channel: Callable[[], grpc.aio.Channel], make_call: CallFactory, channels: int = 1,
              lifetime: Lifetime | None = None) -> None:
        """Start the loop thread; it opens ``channels`` channels first, then takes calls (queued meanwhile).

        ``lifetime`` (on the loop thread's ``time.monotonic``) retires channels; by default never.
        """
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = self._wake_loop
        lifetime = lifetime or Lifetime(None, None, time.monotonic)

        def open_slot() -> tuple[grpc.aio.Channel, Any]:
            channel = open_channel()
            return channel, make_call(channel)

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._pool = ChannelPool(channels, open_slot, self._close_later, lifetime)
                loop.call_soon(ready)
                loop.run_forever()
            except Exception:  # noqa: BLE001 - reported, and the calls waiting are failed below
                log.failure("the grpc.aio loop thread failed")
            finally:
                self._fail_waiting()
                loop.close()
                stopped = self._stopped
                if stopped is not None:
                    self._reactor.callFromThread(stopped.callback, None)

        self._thread = threading.Thread(target=run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> Deferred[None]:
        """Close the channel (calls in flight fail with CANCELLED) and end the loop thread."""
        done: Deferred[None] = Deferred()
        loop, self._loop = self._loop, None
        if loop is None or self._thread is None or not self._thread.is_alive():
            done.callback(None)
            return done
        self._stopped = done
        try:
            loop.call_soon_threadsafe(lambda: loop.create_task(self._close(loop)))
        except RuntimeError:  # the loop closed meanwhile: nothing left to stop
            self._stopped = None
            done.callback(None)
        return done

    async def _close(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close the channels, then let every call's task post its outcome before the loop ends."""
        try:
            if self._pool is not None:
                for channel in self._pool.close():
                    await channel.close(grace=None)
            if self._closing:
                await asyncio.wait(list(self._closing), timeout=5.0)
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=5.0)
        finally:
            loop.stop()

    def _fail_waiting(self) -> None:
        """On the loop thread at its end: calls that never started fail as CANCELLED."""
        error = ChannelClosed()
        while self._inbox:
            self._post(self._inbox.popleft(), (False, error))

    # --- calls ---------------------------------------------------------------------------

    def call(self, request: Any, timeout: float, metadata: Any) -> Deferred[Outcome]:
        """Start one call (from the reactor thread); fires with ``(ok, response or exception)``."""
        loop = self._loop
        pending = _Pending(Deferred(lambda _: self._cancel(pending)), (request, timeout, metadata))
        if loop is None:
            pending.d.callback((False, ChannelClosed()))
            return pending.d
        self._inbox.append(pending)
        if not self._inbox_woken:
            self._inbox_woken = True
            try:
                loop.call_soon_threadsafe(self._wake_loop)
            except RuntimeError:  # loop closed under us: _fail_waiting has run or will
                self._inbox.remove(pending)
                pending.d.callback((False, ChannelClosed()))
        return pending.d

    def _cancel(self, pending: _Pending) -> None:
        pending.cancelled = True
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._cancel_task, pending)

    # --- loop thread ---------------------------------------------------------------------

    def _wake_loop(self) -> None:
        if self._pool is None:  # channels not open yet: start() wakes us again
            return
        self._inbox_woken = False  # cleared before draining: a later append wakes us again
        loop = asyncio.get_running_loop()
        inbox = self._inbox
        while inbox:
            pending = inbox.popleft()
            if not pending.cancelled:
                task = pending.task = loop.create_task(self._run(pending))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _cancel_task(pending: _Pending) -> None:
        if pending.task is not None:
            pending.task.cancel()

    def _close_later(self, channel: grpc.aio.Channel) -> None:
        """Close a retired channel (it carries no call any more) without waiting for it here."""
        task = asyncio.get_running_loop().create_task(channel.close(grace=None))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _run(self, pending: _Pending) -> None:
        request, timeout, metadata = pending.args
        pool = self._pool
        assert pool is not None
        slot = None
        try:
            slot = pool.pick()
            response = await slot.call(request, timeout=timeout, metadata=metadata)
        except asyncio.CancelledError:
            outcome: Outcome = (False, CancelledError("gRPC call cancelled") if pending.cancelled
                                else ChannelClosed())
        except Exception as error:  # noqa: BLE001 - AioRpcError and anything else: the caller decides
            outcome = (False, error)
        else:
            outcome = (True, response)
        finally:
            if slot is not None:
                pool.done(slot)
        self._post(pending, outcome)

    def _post(self, pending: _Pending, outcome: Outcome) -> None:
        self._outbox.append((pending, outcome))
        if not self._outbox_woken:
            self._outbox_woken = True
            self._reactor.callFromThread(self._deliver)

    # --- reactor thread ------------------------------------------------------------------

    def _deliver(self) -> None:
        self._outbox_woken = False
        outbox = self._outbox
        while outbox:
            pending, outcome = outbox.popleft()
            if not pending.d.called:
                pending.d.callback(outcome)


class ChannelClosed(grpc.RpcError):
    """A call ended by closing the channel (the transport stopped): CANCELLED, like grpcio's own."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.CANCELLED

    def details(self) -> str:
        return "the gRPC channel was closed"
