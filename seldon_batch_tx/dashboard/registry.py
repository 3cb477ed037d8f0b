"""The batches a process knows about, for the dashboard, the JSON API and /metrics.

The daemon's watch directory and the one-batch runner (:mod:`..runner`) add batches here; the
dashboard only reads. The engine samples each running batch's rate (its stats' ``samples`` give
"rate now", the ETA and the throughput chart). Finished batches beyond ``keep`` are dropped, oldest
first, but their counts stay in the process-wide totals so /metrics counters never go down.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime

from ..config import BatchConfig
from ..pipeline.stats import LATENCY_BUCKETS, BatchStats
from ..pipeline.summary import BENCHMARK, Summary
from .figures import SPARK_POINTS, chart, latency_percentiles, timing
from .security import config_secrets, public_id

FINISHED_STATES = frozenset({"done", "failed", "stopped"})


@attrs.define
class BatchEntry:
    """One batch as the dashboard shows it: live stats plus where it came from."""

    stats: BatchStats
    config: BatchConfig | None = None
    source: str | None = None
    output: str | None = None
    created: float = 0.0
    #: Benchmark timing once finished (elapsed, lines/s, workers, batch size, the printed line).
    benchmark: dict[str, Any] | None = None
    #: The run's summary (counts, exit status, its text), once finished, for the download link.
    summary: dict[str, Any] | None = None
    #: The summary file the daemon wrote for this batch (``done/NAME.summary.json``), if any.
    summary_file: str | None = None

    @property
    def batch_id(self) -> str:
        return self.stats.batch_id

    def summary_json(self, now: float) -> dict[str, Any]:
        data = self.stats.snapshot(now)
        data["id"] = public_id(self.batch_id)  # raw ids may be neither text nor a path segment
        data["created"] = self.created
        data["benchmark"] = self.benchmark
        data["spark"] = chart(self.stats, now, SPARK_POINTS)
        data["latency_ms"] = latency_percentiles(self.stats)
        data["timing"] = timing(self.stats, now)
        data["downloads"] = sorted(self.downloads())
        data["transport"] = self.config.transport if self.config else None
        data["workers"] = self.config.workers if self.config else None
        data.update(self.load_json())
        return data

    @property
    def concurrency_limit(self) -> int | None:
        """Requests allowed in flight now: ``--adaptive``'s limit, else ``--workers``."""
        pacing = self.stats.pacing
        if pacing is not None and pacing.concurrency is not None:
            return pacing.concurrency.limit
        return self.config.workers if self.config else None

    @property
    def rate_limit(self) -> float | None:
        """``--max-rate`` of this batch (requests/s), None without one."""
        pacing = self.stats.pacing
        return pacing.rate.rate if pacing is not None and pacing.rate is not None else None

    def load_json(self) -> dict[str, Any]:
        """The load on the model, so an operator sharing it with online traffic sees what it bears."""
        stats = self.stats
        pacing = stats.pacing
        return {"in_flight": stats.in_flight, "concurrency_limit": self.concurrency_limit,
                "adaptive": pacing is not None and pacing.concurrency is not None,
                "rate_limit": self.rate_limit, "answers": stats.answers, "overloads": stats.overloads,
                "overload_share": round(stats.overload_share, 4)}

    def detail_json(self, now: float) -> dict[str, Any]:
        data = self.summary_json(now)
        stats = self.stats
        data["latest_errors"] = list(stats.latest_errors)
        data["chart"] = chart(stats, now)
        data["source"] = self.source
        data["output"] = self.output
        data["deployment"] = self.config.deployment_name if self.config else None
        data["latency_buckets"] = list(LATENCY_BUCKETS)
        data["latency_counts"] = list(stats.latency_counts)
        return data

    def finish(self, now: float, summary: Summary | None = None) -> None:
        """Record the benchmark timing (and its ``--benchmark`` line) and the run's summary, if given."""
        stats = self.stats
        elapsed = stats.elapsed(now)
        workers = self.config.workers if self.config else None
        size = self.config.batch_size if self.config else None
        rate = summary.rate if summary is not None else stats.rate_overall(now)
        lines = summary.lines if summary is not None else stats.done
        self.benchmark = {
            "elapsed": round(elapsed, 3), "lines": lines, "lines_per_s": round(rate, 1) if elapsed > 0 else None,
            "workers": workers, "batch_size": size,
            "line": BENCHMARK.format(elapsed=elapsed, lines=lines, rate=rate, workers=workers, size=size),
        }
        if summary is not None:
            self.summary = {**attrs.asdict(summary), "rate": round(summary.rate, 1),
                            "exit_code": summary.exit_code, "text": summary.text(),
                            "benchmark": self.benchmark["line"]}

    def downloads(self) -> dict[str, str | dict[str, Any]]:
        """What this batch offers for download, by kind: the recorded output file, the summary
        (the daemon's summary file, else the run's summary). Nothing until the batch is finished."""
        if self.stats.state not in FINISHED_STATES:
            return {}
        found: dict[str, str | dict[str, Any]] = {}
        if self.output and os.path.isfile(self.output):
            found["output"] = self.output
        if self.summary_file and os.path.isfile(self.summary_file):
            found["summary"] = self.summary_file
        elif self.summary is not None:
            found["summary"] = self.summary
        return found


@attrs.define
class Totals:
    """Counts of batches no longer listed, so process-wide counters stay monotonic."""

    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    requests: int = 0
    answers: int = 0
    overloads: int = 0
    latency_sum: float = 0.0
    latency_counts: list[int] = attrs.field(factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    errors_by_kind: Counter[str] = attrs.field(factory=Counter)

    def add(self, stats: BatchStats) -> None:
        self.succeeded += stats.succeeded
        self.failed += stats.failed
        self.retries += stats.retries
        self.requests += stats.requests
        self.answers += stats.answers
        self.overloads += stats.overloads
        self.latency_sum += stats.latency_sum
        for i, count in enumerate(stats.latency_counts):
            self.latency_counts[i] += count
        self.errors_by_kind.update(stats.errors_by_kind)


class BatchRegistry:
    """Ordered batches by id: written by the runners, read by the dashboard."""

    def __init__(self, clock: IReactorTime, *, keep: int = 200) -> None:
        self._clock = clock
        self._keep = keep
        self._entries: dict[str, BatchEntry] = {}
        self.retired = Totals()
        self.started = clock.seconds()

    def now(self) -> float:
        return self._clock.seconds()

    # -- writers (daemon, one-batch runner) --------------------------------------------------

    def add(self, stats: BatchStats, *, config: BatchConfig | None = None, source: str | None = None,
            output: str | None = None) -> BatchEntry:
        entry = BatchEntry(stats, config, source, output, created=self._clock.seconds())
        self._entries[stats.batch_id] = entry
        self._trim()
        return entry

    def remove(self, batch_id: str) -> None:
        """Forget a batch that never ran here (another daemon claimed its file)."""
        self._entries.pop(batch_id, None)

    def _trim(self) -> None:
        finished = [e for e in self._entries.values() if e.stats.state in FINISHED_STATES]
        for entry in finished[: max(len(finished) - self._keep, 0)]:
            self.retired.add(entry.stats)
            del self._entries[entry.batch_id]

    # -- readers (dashboard) -------------------------------------------------------------

    def get(self, batch_id: str) -> BatchEntry | None:
        return self._entries.get(batch_id)

    def find(self, key: str) -> BatchEntry | None:
        """The batch a dashboard URL names: by its id, else by its :func:`public_id`."""
        entry = self._entries.get(key)
        if entry is not None:
            return entry
        return next((e for e in self._entries.values() if public_id(e.batch_id) == key), None)

    def secrets(self) -> set[str]:
        """Every credential in the listed batches' configs, to redact from anything shown."""
        return {s for e in self._entries.values() for s in config_secrets(e.config)}

    def entries(self) -> list[BatchEntry]:
        return list(self._entries.values())

    def counts_by_state(self) -> dict[str, int]:
        counts: Counter[str] = Counter({s: 0 for s in ("queued", "running", "done", "failed", "stopped")})
        counts.update(e.stats.state for e in self._entries.values())
        return dict(counts)
