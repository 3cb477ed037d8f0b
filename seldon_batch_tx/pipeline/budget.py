"""The run's overall cap on input bytes in flight (``--max-bytes-in-flight``).

``--workers`` requests of ``--batch-size`` lines of up to ``--max-line-bytes`` each could hold more
memory than the machine has (100 workers x 64 MiB = 6.4 GB). The engine takes a unit's bytes from
this budget before sending it and gives them back when its lines are written; a unit that does not
fit waits for units in flight to finish. One unit is always let through when nothing is in flight,
so a single line as large as the budget still runs (alone).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred


class ByteBudget:
    """Bytes of input lines held by units in flight, capped at ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.stopped = False
        self._waiting: Deferred[None] | None = None

    def fits(self, size: int) -> bool:
        return self.in_flight == 0 or self.in_flight + size <= self.limit

    def try_take(self, size: int) -> bool:
        """Hold ``size`` bytes if they fit now (never once stopped)."""
        if self.stopped or not self.fits(size):
            return False
        self.in_flight += size
        return True

    def freed(self) -> Deferred[None]:
        """Fires when bytes are given back, or at a stop: the time to try again."""
        if self._waiting is None:
            self._waiting = Deferred()
        return self._waiting

    def give(self, size: int) -> None:
        self.in_flight -= size
        self._wake()

    def stop(self) -> None:
        """A stop: a unit waiting for room gives up (the engine sends nothing more)."""
        self.stopped = True
        self._wake()

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(None)
