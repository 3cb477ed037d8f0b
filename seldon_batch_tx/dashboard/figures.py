"""The figures a person reads on the dashboard, computed from what :class:`.BatchStats` keeps.

Latency percentiles come from the histogram the batch already keeps for /metrics (interpolated
inside a bucket as Prometheus' ``histogram_quantile`` does: the buckets are at most 1.5x apart,
so that is the error bound); the charts from the whole run's :class:`.RunHistory`, as rates
between evenly thinned points, so a long run costs the browser a bounded number of points; the
timing is what ``--benchmark`` prints, available while the batch still runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..pipeline.history import Point, thin
from ..pipeline.stats import LATENCY_BUCKETS, BatchStats

#: The percentiles shown, as (JSON key, quantile).
PERCENTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
#: Most points of a batch page's charts, and of the small chart in the list of batches.
CHART_POINTS = 300
SPARK_POINTS = 40
#: A live point closer than this to the last sample would give a noisy rate: left out.
MIN_LIVE_GAP = 0.25


def quantile(counts: Sequence[int], bounds: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (seconds) of a histogram with upper ``bounds`` (``counts`` has one more:
    above the last bound, reported as that bound); None when it is empty."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    below = 0
    for i, count in enumerate(counts):
        if count and below + count >= rank:
            if i >= len(bounds):
                return float(bounds[-1])
            lower = bounds[i - 1] if i else 0.0
            return lower + (bounds[i] - lower) * (rank - below) / count
        below += count
    return float(bounds[-1])


def latency_percentiles(stats: BatchStats) -> dict[str, float | None]:
    """p50/p95/p99 request latency in milliseconds (None before the first answer)."""
    found = {}
    for key, q in PERCENTILES:
        value = quantile(stats.latency_counts, LATENCY_BUCKETS, q)
        found[key] = None if value is None else round(1000 * value, 2)
    return found


def chart(stats: BatchStats, now: float, limit: int = CHART_POINTS) -> list[list[float]]:
    """[[seconds since start, lines/s, failed lines/s], ...] over the whole run, at most ``limit``
    points: rates between the history's points plus the newest moment (now, or the finish)."""
    points: list[Point] = list(stats.history.points)
    end = stats.finished if stats.finished is not None else now
    if stats.state in ("running", "done", "stopped") and (not points or end - points[-1][0] >= MIN_LIVE_GAP):
        points.append((end, stats.done, stats.failed))
    points = thin(points, limit + 1)
    origin = stats.started if stats.started is not None else (points[0][0] if points else 0.0)
    rates = []
    for (t0, done0, failed0), (t1, done1, failed1) in zip(points, points[1:], strict=False):
        if t1 > t0:
            span = t1 - t0
            rates.append([round(t1 - origin, 3), round((done1 - done0) / span, 2),
                          round((failed1 - failed0) / span, 2)])
    return rates


def timing(stats: BatchStats, now: float) -> dict[str, Any]:
    """Benchmark timing while running: elapsed, overall rate and the projected total time."""
    elapsed = stats.elapsed(now)
    eta = stats.eta(now)
    projected = elapsed if stats.state in ("done", "stopped") else (None if eta is None else elapsed + eta)
    return {"elapsed": round(elapsed, 3), "lines_per_s": round(stats.rate_overall(now), 1),
            "projected_total": None if projected is None else round(projected, 1)}
