"""The batches a process knows about, for the dashboard, the JSON API and /metrics.

The daemon's watch directory and the one-batch runner (:mod:`..runner`) add batches here; the
dashboard only reads. The engine samples each running batch's rate (its stats' ``samples`` give
"rate now", the ETA and the throughput chart). Finished batches beyond ``keep`` are dropped, oldest
first (when one is added and before every read, so the bound holds once they finish too), but their
counts stay in the process-wide totals so /metrics counters never go down. Each entry has a key of
its own (two batches given the same ``batch-id`` get ``ID`` and ``ID~2``), so none replaces another.
Pages, the API and per-batch metrics list at most :data:`DEFAULT_LIMIT` batches (:meth:`listed`).
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
from ..redaction import show_path
from .figures import SPARK_POINTS, chart, latency_percentiles, timing
from .security import config_secrets, public_id

FINISHED_STATES = frozenset({"done", "failed", "stopped"})
#: Batches a page, ``/api/batches`` and the per-batch /metrics series list by default (every running
#: one, then the newest); ``/api/batches?limit=N&offset=K`` pages through the rest.
DEFAULT_LIMIT = 100
#: The largest ``limit`` the API accepts.
MAX_LIMIT = 1000


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
    #: The registry's key: the batch id, made unique (``ID~2``...) if another listed batch has it.
    key: str = ""

    @property
    def batch_id(self) -> str:
        return self.stats.batch_id

    @property
    def public_key(self) -> str:
        """The id the dashboard shows and links to (:func:`.security.public_id` of :attr:`key`)."""
        return public_id(self.key or self.batch_id)

    def summary_json(self, now: float) -> dict[str, Any]:
        data = self.stats.snapshot(now)
        data["id"] = self.public_key  # raw ids may be neither text nor a path segment
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
        """``--max-rate`` of this batch (requests/s), None without one; the option's value until the
        run's pacing exists (the checks before the first line come first)."""
        pacing = self.stats.pacing
        if pacing is not None and pacing.rate is not None:
            return pacing.rate.rate
        return self.config.max_rate if self.config else None

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
        data["source"] = show_path(self.source) if self.source else self.source
        data["output"] = show_path(self.output) if self.output else self.output
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
        """A new entry for ``stats`` (the same stats added again replace their own entry only)."""
        key = stats.batch_id
        if key in self._entries and self._entries[key].stats is not stats:
            n = 2
            while f"{key}~{n}" in self._entries:
                n += 1
            key = f"{key}~{n}"
        entry = BatchEntry(stats, config, source, output, created=self._clock.seconds(), key=key)
        self._entries[key] = entry
        self._trim()
        return entry

    def remove(self, key: str) -> None:
        """Forget a batch that never ran here (another daemon claimed its file); a finished one's
        counts stay in the totals."""
        entry = self._entries.pop(key, None)
        if entry is not None and entry.stats.state in FINISHED_STATES:
            self.retired.add(entry.stats)

    def _trim(self) -> None:
        finished = [e for e in self._entries.values() if e.stats.state in FINISHED_STATES]
        for entry in finished[: max(len(finished) - self._keep, 0)]:
            self.retired.add(entry.stats)
            del self._entries[entry.key]

    # -- readers (dashboard) -------------------------------------------------------------

    def get(self, key: str) -> BatchEntry | None:
        return self._entries.get(key)

    def find(self, key: str) -> BatchEntry | None:
        """The batch a dashboard URL names: by its key, else by its public id."""
        entry = self._entries.get(key)
        if entry is not None:
            return entry
        return next((e for e in self._entries.values() if e.public_key == key), None)

    def secrets(self) -> set[str]:
        """Every credential in the listed batches' configs, to redact from anything shown."""
        return {s for e in self._entries.values() for s in config_secrets(e.config)}

    def entries(self) -> list[BatchEntry]:
        """Every batch kept (finished ones beyond ``keep`` retired first), oldest first."""
        self._trim()
        return list(self._entries.values())

    def listed(self, limit: int = DEFAULT_LIMIT, offset: int = 0) -> list[BatchEntry]:
        """At most ``limit`` batches, oldest first: the newest after skipping ``offset`` newest, and
        with ``offset`` 0 every running batch too (taking places from the oldest of the others)."""
        entries = self.entries()
        end = max(len(entries) - max(offset, 0), 0)
        window = entries[max(end - limit, 0):end]
        if offset > 0 or limit <= 0:
            return window
        running = [e for e in entries[: max(end - limit, 0)] if e.stats.state == "running"][:limit]
        return running + window[len(running):]

    def counts_by_state(self) -> dict[str, int]:
        counts: Counter[str] = Counter({s: 0 for s in ("queued", "running", "done", "failed", "stopped")})
        counts.update(e.stats.state for e in self.entries())
        return dict(counts)
