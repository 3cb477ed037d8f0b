"""When a connection retires: after ``--connection-max-age`` seconds (jittered) or ``--connection-max-requests``.

Why: a keep-alive connection stays with the replica (pod, process) it first reached, so a run
started before an autoscaler added replicas would never use them, and a run whose connections
happened to hash unevenly would stay uneven. Retiring connections now and then lets every new
connection be spread again, and names are resolved again when it is made.

The rule every client keeps (fast REST, treq, gRPC): a retired connection takes no new request,
finishes the ones it carries, then closes. Retiring therefore never fails a request, never adds
an error line and never spends a retry. The age is jittered (±20% by default) so connections
opened together do not all reconnect at once.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

#: Relative spread of each connection's age limit: 0.2 retires between 80% and 120% of the age.
JITTER = 0.2


class Lease:
    """One connection's allowance: until ``retire_at`` (the clock's seconds) and ``left`` more requests."""

    __slots__ = ("left", "retire_at")

    def __init__(self, retire_at: float, left: float) -> None:
        self.retire_at = retire_at
        self.left = left

    def take(self) -> None:
        """One more request goes over this connection."""
        self.left -= 1


class Lifetime:
    """Hands out a :class:`Lease` per new connection and says when one has run out.

    ``clock`` is the seconds of whoever owns the connections (the reactor's, or the gRPC loop
    thread's ``time.monotonic``); ``uniform`` draws the jitter (tests pass a fixed one).
    """

    def __init__(self, max_age: float | None, max_requests: int | None, clock: Callable[[], float], *,
                 jitter: float = JITTER, uniform: Callable[[float, float], float] = random.uniform) -> None:
        self.max_age = max_age
        self.max_requests = max_requests
        self._clock = clock
        self._jitter = jitter
        self._uniform = uniform

    @classmethod
    def from_config(cls, config: Any, clock: Callable[[], float], **kwargs: Any) -> Lifetime:
        """The lifetime ``--connection-max-age`` and ``--connection-max-requests`` ask for."""
        return cls(getattr(config, "connection_max_age", None), getattr(config, "connection_max_requests", None),
                   clock, **kwargs)

    @property
    def unlimited(self) -> bool:
        return not self.max_age and not self.max_requests

    def lease(self) -> Lease:
        """The allowance of a connection opened now."""
        retire_at = math.inf
        if self.max_age:
            retire_at = self._clock() + self.max_age * self._uniform(1 - self._jitter, 1 + self._jitter)
        return Lease(retire_at, self.max_requests or math.inf)

    def expired(self, lease: Lease) -> bool:
        """Whether a connection holding ``lease`` must take no new request."""
        return lease.left <= 0 or self._clock() >= lease.retire_at
