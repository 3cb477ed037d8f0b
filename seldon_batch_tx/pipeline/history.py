"""A whole run's progress in bounded memory, for the dashboard's throughput and error charts.

``BatchStats.samples`` keeps the last few minutes at full resolution for "rate now"; a chart of a
whole run needs every part of it, however long. :class:`RunHistory` keeps cumulative counts
(time, lines done, lines failed) and, when full, drops every other point and keeps only every
second sample from then on: memory stays under ``capacity`` points, points stay evenly spaced,
and the rate between any two kept points is still exact (the counts are cumulative).
"""

from __future__ import annotations

import attrs

#: Points kept for a whole run (a week of 1 s samples thins to one point per ~40 minutes).
CAPACITY = 512

Point = tuple[float, int, int]


@attrs.define
class RunHistory:
    """Evenly thinned (time, done, failed) points of one run, the first one always kept."""

    capacity: int = CAPACITY
    points: list[Point] = attrs.field(factory=list)
    #: Keep one sample in ``stride``; doubles each time the points are thinned.
    stride: int = 1
    _seen: int = 0

    def add(self, now: float, done: int, failed: int) -> None:
        if self._seen % self.stride == 0:
            self.points.append((now, done, failed))
            if len(self.points) >= self.capacity:
                self.points = self.points[::2]
                self.stride *= 2
        self._seen += 1


def thin(points: list[Point], limit: int) -> list[Point]:
    """At most ``limit`` (>= 2) of ``points``, evenly chosen, the first and the last kept."""
    if len(points) <= limit:
        return list(points)
    step = (len(points) - 1) / (limit - 1)
    return [points[round(i * step)] for i in range(limit)]
