"""``--ordered``: output lines in input order through a bounded reorder buffer.

Work units (chunks of lines) are numbered in reading order. A finished unit whose turn has not
come waits here; everything up to the first unfinished unit is written at once. The buffer is
bounded by *window*: unit ``n`` may only start once unit ``n - window`` has been written, so
when one early line retries for minutes the reader waits (:meth:`ReorderBuffer.room`) instead
of the buffer growing. Memory is at most ``window`` units of output, whatever the input size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from twisted.internet.defer import Deferred, succeed

#: What a unit's output is made of (the engine's output lines); the buffer only orders them.
T = TypeVar("T")


class ReorderBuffer(Generic[T]):
    """Holds finished units until all earlier ones are written, then writes them in order.

    ``write`` must not raise (the engine's writes never do): a unit half written could not be
    put again, and the units after it would wait for ever.
    """

    def __init__(self, window: int, write: Callable[[T], None]) -> None:
        if window < 1:
            raise ValueError(f"the reorder window must be at least 1, got {window}")
        self.window = window
        self._write = write
        self._pending: dict[int, list[T]] = {}
        #: The first unit not written yet.
        self.next = 0
        self._waiting: tuple[int, Deferred[None]] | None = None

    @property
    def buffered(self) -> int:
        """Units finished but not yet written (waiting for an earlier one)."""
        return len(self._pending)

    def room(self, seq: int) -> Deferred[None]:
        """Fires when unit ``seq`` may start: the unit ``window`` places before it is written.

        Only the single reading loop calls this, one unit at a time.
        """
        if seq < self.next + self.window:
            return succeed(None)
        assert self._waiting is None, "room() is for one reader at a time"
        d: Deferred[None] = Deferred(lambda _: self._cancel_wait())
        self._waiting = (seq, d)
        return d

    def put(self, seq: int, records: list[T]) -> None:
        """Unit ``seq`` finished with these output lines (possibly none); write what is now in order."""
        if seq < self.next or seq in self._pending:
            raise ValueError(f"unit {seq} was already put")
        self._pending[seq] = records
        while self.next in self._pending:
            for record in self._pending.pop(self.next):
                self._write(record)
            self.next += 1
        self._wake(lambda seq: seq < self.next + self.window)

    def release(self) -> None:
        """Wake a waiting reader regardless of room (the run is stopping; it must look up)."""
        self._wake(lambda seq: True)

    def _wake(self, ready: Callable[[int], bool]) -> None:
        if self._waiting is not None and ready(self._waiting[0]):
            _, d = self._waiting
            self._waiting = None
            d.callback(None)

    def _cancel_wait(self) -> None:
        self._waiting = None
