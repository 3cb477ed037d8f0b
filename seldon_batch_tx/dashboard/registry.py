"""The batches a process knows about, for the dashboard, the JSON API and /metrics.

The daemon and the one-shot command add batches here; the dashboard only reads. A sampler
records (time, lines done) for every running batch once a second, which gives "rate now",
the ETA and the throughput chart. Finished batches beyond ``keep`` are dropped, oldest
first, but their counts stay in the process-wide totals so /metrics counters never go down.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

import attrs
import txaio
from twisted.application import service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from ..config import BatchConfig
from ..pipeline.stats import LATENCY_BUCKETS, BatchStats

txaio.use_twisted()
log = txaio.make_logger()

FINISHED_STATES = frozenset({"done", "failed", "stopped"})
#: Most samples sent to a browser per batch; older ones are thinned out evenly.
MAX_CHART_POINTS = 300
#: Longest text of one field the dashboard shows or exports; longer text is cut with a marker.
MAX_TEXT = 4096
#: Longest batch id the dashboard uses in links, the API and metric labels (longer: cut + hash).
MAX_ID = 200
REDACTED = "[redacted]"
#: Header names whose values are credentials (matched as lower-case substrings).
_SECRET_HEADER_PARTS = ("auth", "token", "key", "secret", "password", "passwd", "cookie", "credential",
                        "session", "signature")
#: Shorter secrets are not searched for: redacting every "ab" would mangle the page, not protect it.
MIN_SECRET = 4


# -- untrusted text ----------------------------------------------------------------------
# File names come from os.listdir (undecodable bytes arrive as lone surrogates U+DC80-U+DCFF) and
# batch ids from sidecar JSON (any lone surrogate, quotes, newlines, any length). Such text cannot
# be encoded as UTF-8, so every place that shows or exports it goes through these helpers first.

def _visible(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    if 0xD800 <= code <= 0xDFFF:  # any other lone surrogate
        return "\ufffd"
    return char


def display_text(value: str, limit: int | None = MAX_TEXT) -> str:
    """``value`` as text that always encodes to UTF-8, cut to about ``limit`` characters.

    Bytes that were not UTF-8 show as ``\\xNN`` (so two such names stay distinguishable), other
    lone surrogates as U+FFFD; everything else is kept (escaping is the renderer's job).
    """
    cut = 0
    if limit is not None and len(value) > limit:
        cut, value = len(value) - limit, value[:limit]
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = "".join(_visible(c) for c in value)
    return f"{value}…[{cut} more characters]" if cut else value


def public_id(batch_id: str) -> str:
    """The batch id as the dashboard uses it in links, the API and metric labels.

    Usually the id itself; an id that is not printable text (undecodable bytes, newlines or other
    controls, which HTML attributes and URLs mangle), too long, or not usable as a path segment
    (``""``, ``.``, ``..``) becomes its printable start plus a hash, so it stays unique.
    """
    if len(batch_id) <= MAX_ID and batch_id.isprintable() and batch_id not in ("", ".", ".."):
        return batch_id
    digest = hashlib.sha256(batch_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    head = "".join(c if c.isprintable() else "?" for c in batch_id[: MAX_ID - len(digest) - 1])
    return f"{head}~{digest}"


def config_secrets(config: BatchConfig | None) -> list[str]:
    """Values in ``config`` that are credentials: the call token and credential-like headers."""
    if config is None:
        return []
    found = [config.call_credentials_token or ""]
    for name, value in config.headers:
        if any(part in name.lower() for part in _SECRET_HEADER_PARTS):
            found.append(value.strip())
            scheme, _, credential = value.strip().partition(" ")
            if credential and scheme.isalpha():  # "Bearer X", "Basic X": X alone is the secret too
                found.append(credential.strip())
    return [s for s in found if len(s) >= MIN_SECRET]


def redact(value: str, secrets: Iterable[str]) -> str:
    """``value`` with every occurrence of a secret replaced (longest first, so none leaks in part)."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= MIN_SECRET and secret in value:
            value = value.replace(secret, REDACTED)
    return value


def clean(value: Any, secrets: Iterable[str] = ()) -> Any:
    """A JSON-ready copy of ``value`` safe to show: text made valid UTF-8 and bounded, secrets
    redacted, non-finite floats as ``None`` (strict JSON has no NaN), tuples as lists."""
    secrets = list(secrets)

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            return display_text(redact(item, secrets))
        if isinstance(item, dict):
            return {walk(k) if isinstance(k, str) else k: walk(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [walk(v) for v in item]
        if isinstance(item, float) and not math.isfinite(item):
            return None
        return item

    return walk(value)


@attrs.define
class BatchEntry:
    """One batch as the dashboard shows it: live stats plus where it came from."""

    stats: BatchStats
    config: BatchConfig | None = None
    source: str | None = None
    output: str | None = None
    created: float = 0.0
    #: Benchmark timing once finished (elapsed, lines/s, workers, batch size).
    benchmark: dict[str, Any] | None = None

    @property
    def batch_id(self) -> str:
        return self.stats.batch_id

    def summary_json(self, now: float) -> dict[str, Any]:
        data = self.stats.snapshot(now)
        data["id"] = public_id(self.batch_id)  # raw ids may be neither text nor a path segment
        data["created"] = self.created
        data["benchmark"] = self.benchmark
        data["spark"] = chart_samples(self.stats, 60) if self.stats.state == "running" else []
        data["transport"] = self.config.transport if self.config else None
        data["workers"] = self.config.workers if self.config else None
        return data

    def detail_json(self, now: float) -> dict[str, Any]:
        data = self.summary_json(now)
        stats = self.stats
        data["latest_errors"] = list(stats.latest_errors)
        data["samples"] = chart_samples(stats)
        data["source"] = self.source
        data["output"] = self.output
        data["deployment"] = self.config.deployment_name if self.config else None
        data["latency_buckets"] = list(LATENCY_BUCKETS)
        data["latency_counts"] = list(stats.latency_counts)
        return data

    def finish(self, now: float) -> None:
        """Record the benchmark timing the way ``--benchmark`` prints it."""
        stats = self.stats
        elapsed = stats.elapsed(now)
        self.benchmark = {
            "elapsed": round(elapsed, 3),
            "lines": stats.done,
            "lines_per_s": round(stats.done / elapsed, 1) if elapsed > 0 else None,
            "workers": self.config.workers if self.config else None,
            "batch_size": self.config.batch_size if self.config else None,
        }


def chart_samples(stats: BatchStats, max_points: int = MAX_CHART_POINTS) -> list[list[float]]:
    """[[seconds since start, lines done], ...], thinned evenly to ``max_points``, newest kept."""
    samples = list(stats.samples)
    if len(samples) > max_points:
        step = len(samples) / max_points
        samples = [samples[int(i * step)] for i in range(max_points - 1)] + [samples[-1]]
    origin = stats.started if stats.started is not None else (samples[0][0] if samples else 0.0)
    return [[round(t - origin, 3), n] for t, n in samples]


@attrs.define
class Totals:
    """Counts of batches no longer listed, so process-wide counters stay monotonic."""

    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    requests: int = 0
    latency_sum: float = 0.0
    latency_counts: list[int] = attrs.field(factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    errors_by_kind: Counter[str] = attrs.field(factory=Counter)

    def add(self, stats: BatchStats) -> None:
        self.succeeded += stats.succeeded
        self.failed += stats.failed
        self.retries += stats.retries
        self.requests += stats.requests
        self.latency_sum += stats.latency_sum
        for i, count in enumerate(stats.latency_counts):
            self.latency_counts[i] += count
        self.errors_by_kind.update(stats.errors_by_kind)


class BatchRegistry(service.Service):
    """Ordered batches by id; samples running ones while the service runs."""

    def __init__(self, clock: IReactorTime, *, keep: int = 200, sample_interval: float | None = 1.0) -> None:
        self._clock = clock
        self._keep = keep
        self._entries: dict[str, BatchEntry] = {}
        self.retired = Totals()
        self.started = clock.seconds()
        self._sample_interval = sample_interval
        self._sampler: LoopingCall | None = None

    def now(self) -> float:
        return self._clock.seconds()

    # -- writers (daemon, command line) --------------------------------------------------

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

    # -- sampling ------------------------------------------------------------------------

    def sample(self) -> None:
        now = self._clock.seconds()
        for entry in self._entries.values():
            if entry.stats.state == "running":
                entry.stats.sample(now)

    def _sample_safely(self) -> None:
        try:
            self.sample()
        except Exception:  # noqa: BLE001 - a sampling hiccup must not stop sampling for good
            log.failure("sampling batch stats failed")

    def startService(self) -> None:
        super().startService()
        if self._sample_interval:
            self._sampler = LoopingCall(self._sample_safely)
            self._sampler.clock = self._clock
            self._sampler.start(self._sample_interval, now=True)

    def stopService(self) -> None:
        if self._sampler is not None and self._sampler.running:
            self._sampler.stop()
        self._sampler = None
        return super().stopService()  # type: ignore[no-any-return]
