"""The input's units to the workers: a ``DeferredSemaphore`` of ``--workers``, the byte budget,
``--ordered``'s window.

Reading is lazy: a unit (``--batch-size`` lines) is read only once a worker is free for it, so
memory stays flat however long the input is. A freed worker starts the next unit at once, from
the end of the unit it ran (:meth:`Feed._pump`): no coroutine is resumed and no Deferred waited
for per unit. The feed's coroutine (:meth:`Feed.run`) waits only for what the pump cannot do
without waiting: the next block of input read on a thread (a pipe, a URL), room in
``--ordered``'s window, bytes in the budget, and the end of the feed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore
from twisted.python.failure import Failure

from ..config import BatchConfig
from ..core.items import Item
from .attempts import cancel
from .budget import ByteBudget
from .ordering import ReorderBuffer
from .reader import OffThreadItems, chunked

#: What :meth:`Feed._pump` may need from the feed's coroutine: nothing more (the input ended, or
#: a stop), the next block of input read on a thread, or a wait (``Feed._blocker``) before the
#: next unit may start.
_ENDED = object()
_INPUT = object()
_WAIT = object()


class Feed:
    """Starts each unit of the input with ``start(seq, lines)`` as soon as a worker is free."""

    def __init__(self, items: Iterator[Item] | OffThreadItems, unit: int, config: BatchConfig,
                 reorder: ReorderBuffer[Any] | None, start: Callable[[int, list[Item]], Deferred[None]],
                 failed: Callable[[Failure], None]) -> None:
        self._items = items
        self._unit = unit
        self._max_bytes = config.max_bytes_in_flight
        self._workers = config.workers
        self._semaphore = DeferredSemaphore(config.workers)
        #: --max-bytes-in-flight: input bytes held by units in flight (unit -> its size).
        self._budget = ByteBudget(config.max_bytes_in_flight)
        self._sizes: dict[Deferred[None], int] = {}
        self._in_flight: set[Deferred[None]] = set()
        self._reorder = reorder
        self._start = start
        self._failed = failed
        self._stopped = False
        #: The units not yet read (None: a block of input must be awaited, or the input ended),
        #: whether more blocks come from a thread, the unit read but not started and its number.
        self._chunks: Iterator[list[Item]] | None = None
        self._more_input = False
        self._next: list[Item] | None = None
        self._seq = -1
        #: What the unit in ``_next`` waits for (room in --ordered's window, bytes in the budget).
        self._blocker: Deferred[Any] | None = None
        #: Set while the coroutine waits for a worker: the end of a unit fires it with what the
        #: pump needs next.
        self._wake: Deferred[Any] | None = None

    def stop(self) -> None:
        """Start no more units; a wait for bytes, room or a quiet pipe ends at once."""
        self._stopped = True
        self._budget.stop()
        if isinstance(self._items, OffThreadItems):
            self._items.cancel()  # a read waiting on a quiet pipe does not hold the stop
        if self._reorder is not None:
            self._reorder.release()

    def cancel(self) -> None:
        """Cancel every unit in flight (the run is abandoned)."""
        for d in list(self._in_flight):
            cancel(d)

    async def run(self) -> None:
        """Start every unit of the input (or up to a stop); reading errors are raised here."""
        items = self._items
        blocks = items.blocks() if isinstance(items, OffThreadItems) else None
        self._chunks = None if isinstance(items, OffThreadItems) else self._chunked(items)
        self._more_input = blocks is not None
        while True:
            need = self._pump()
            if need is None:  # every worker busy: the end of a unit pumps, and wakes this when it must
                self._wake = Deferred()
                need = await self._wake
            if need is _ENDED:
                return
            if need is _INPUT:
                assert blocks is not None
                block = await anext(blocks, None)
                if block is None:
                    self._more_input = False
                else:
                    self._chunks = self._chunked(iter(block))
            else:
                blocker, self._blocker = self._blocker, None
                assert need is _WAIT and blocker is not None
                await blocker  # --ordered's window or the byte budget

    async def drain(self) -> None:
        """Wait until every unit started has ended."""
        for _ in range(self._workers):
            await self._semaphore.acquire()
        for _ in range(self._workers):
            self._semaphore.release()

    def _chunked(self, items: Iterator[Item]) -> Iterator[list[Item]]:
        return chunked(items, self._unit, self._max_bytes)

    def _pump(self) -> object | None:
        """Start units while a worker is free and nothing must be waited for.

        None when every worker is busy; :data:`_ENDED` at the input's end or a stop; :data:`_INPUT`
        when the next block of input must be awaited; :data:`_WAIT` when the unit held in ``_next``
        must wait for ``_blocker`` (room in ``--ordered``'s window, bytes in the budget).
        """
        semaphore, budget = self._semaphore, self._budget
        while True:
            if self._stopped:
                return _ENDED
            chunk = self._next
            if chunk is None:
                if self._chunks is None:
                    return _INPUT if self._more_input else _ENDED
                chunk = next(self._chunks, None)
                if chunk is None:
                    self._chunks = None
                    continue
                self._next, self._seq = chunk, self._seq + 1
            seq = self._seq
            if self._reorder is not None:  # --ordered: reading waits while earlier lines are pending
                room = self._reorder.room(seq)
                if not room.called:
                    self._blocker = room
                    return _WAIT
            if not semaphore.tokens:
                return None
            size = sum(len(item.line) for item in chunk)
            if not budget.try_take(size):
                self._blocker = budget.freed()  # a stop fires it too: the next pass ends the feed
                return _WAIT
            semaphore.tokens -= 1  # acquire() without its Deferred: a token is free (checked above)
            self._next = None
            try:
                d = self._start(seq, chunk)
            except BaseException:  # a bug: raised to the run, which stops; the worker and bytes are freed
                semaphore.release()
                budget.give(size)
                raise
            self._in_flight.add(d)
            self._sizes[d] = size
            d.addBoth(self._finished, d)

    def _finished(self, result: Failure | None, d: Deferred[None]) -> None:
        """A unit ended: its worker and bytes are free; while the coroutine waits for a worker, the
        next unit starts here. A failure is a bug past the unit's own handling: ``failed`` says so."""
        self._in_flight.discard(d)
        self._budget.give(self._sizes.pop(d, 0))
        self._semaphore.release()
        if isinstance(result, Failure) and not result.check(CancelledError):
            self._failed(result)
        wake = self._wake
        if wake is not None:
            self._wake = None  # units ending inside the pump below only free their worker
            try:
                need = self._pump()
            except Exception:  # noqa: BLE001 - reading (or a bug starting a unit): the coroutine raises it, the run stops
                wake.errback()
                return
            if need is None:
                self._wake = wake
            else:
                wake.callback(need)
