"""``/metrics`` in the Prometheus text exposition format (version 0.0.4), written by hand.

Why by hand rather than ``prometheus_client``: the numbers already live in ``BatchStats``
(including the latency histogram's bucket counts), so a client library would only add a
dependency and a second copy of every counter; the format is a few lines of text with one
escaping rule for label values (backslash, double quote and newline; the text must be UTF-8,
so names that were not UTF-8 show their bytes as backslash-x-NN, and long values are cut to
:data:`MAX_LABEL`). The tests parse the output with ``prometheus_client``'s parser to prove it
is valid.

Process-wide counters add the retired batches' counts, so they never go down; per-batch
gauges exist only for batches still listed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

from ..pipeline.stats import LATENCY_BUCKETS
from .registry import BatchEntry, BatchRegistry, Totals
from .security import display_text, redact

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
PREFIX = "seldon_batch"
#: Longest label value (characters) before escaping: a label is an index key, not a document.
MAX_LABEL = 256


def escape_label(value: str) -> str:
    """A label value as the text format needs it: valid UTF-8, bounded, backslash, quote, newline escaped."""
    value = display_text(value, limit=MAX_LABEL)
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def labels(pairs: dict[str, str]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in pairs.items()) + "}"


class _Text:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, pairs: dict[str, str] | None = None) -> None:
        self.lines.append(f"{name}{labels(pairs or {})} {number(value)}")


def totals(registry: BatchRegistry) -> Totals:
    """Process-wide sums: batches still listed plus the retired ones."""
    total = Totals()
    retired = registry.retired
    total.succeeded, total.failed, total.retries = retired.succeeded, retired.failed, retired.retries
    total.requests, total.latency_sum = retired.requests, retired.latency_sum
    total.answers, total.overloads = retired.answers, retired.overloads
    total.latency_counts = list(retired.latency_counts)
    total.errors_by_kind = Counter(retired.errors_by_kind)
    for entry in registry.entries():
        total.add(entry.stats)
    return total


def load_series(out: _Text, total: Totals, entries: list[tuple[BatchEntry, dict[str, str]]]) -> None:
    """The load on the model: answers and overload signals (process-wide counters), and per batch the
    requests in flight, the concurrency limit, ``--max-rate`` and the overload share."""
    p = PREFIX
    out.family(f"{p}_answers_total", "counter", "Requests that ended, answered or failed (cancelled ones aside).")
    out.sample(f"{p}_answers_total", total.answers)
    out.family(f"{p}_overload_answers_total", "counter", "Of those, overload signals: HTTP 429/503, gRPC "
               "UNAVAILABLE/RESOURCE_EXHAUSTED, timeouts.")
    out.sample(f"{p}_overload_answers_total", total.overloads)
    out.family(f"{p}_requests_in_flight", "gauge", "Requests of one batch in flight now.")
    for e, ids in entries:
        out.sample(f"{p}_requests_in_flight", e.stats.in_flight, ids)
    out.family(f"{p}_concurrency_limit", "gauge", "Requests one batch may have in flight now (--adaptive's "
               "limit, else --workers).")
    for e, ids in entries:
        limit = e.concurrency_limit
        if limit is not None:
            out.sample(f"{p}_concurrency_limit", limit, ids)
    out.family(f"{p}_rate_limit", "gauge", "--max-rate of one batch in requests per second (batches with one).")
    for e, ids in entries:
        rate = e.rate_limit
        if rate is not None:
            out.sample(f"{p}_rate_limit", float(rate), ids)
    out.family(f"{p}_overload_share", "gauge", "Share of one batch's ended requests that were overload signals.")
    for e, ids in entries:
        out.sample(f"{p}_overload_share", float(e.stats.overload_share), ids)


def render_metrics(registry: BatchRegistry, secrets: Iterable[str] = ()) -> str:
    """The whole exposition; ``secrets`` (and the batches' own credentials) never appear in it."""
    hidden = {*secrets, *registry.secrets()}
    now = registry.now()
    total = totals(registry)
    out = _Text()
    p = PREFIX

    out.family(f"{p}_lines_total", "counter", "Output lines written, by result.")
    out.sample(f"{p}_lines_total", total.succeeded, {"result": "succeeded"})
    out.sample(f"{p}_lines_total", total.failed, {"result": "failed"})
    out.family(f"{p}_errors_total", "counter", "Failed lines by kind of error.")
    for kind, count in sorted(total.errors_by_kind.items()):
        out.sample(f"{p}_errors_total", count, {"kind": redact(kind, hidden)})
    out.family(f"{p}_requests_total", "counter", "Requests sent to the model, retries included.")
    out.sample(f"{p}_requests_total", total.requests)
    out.family(f"{p}_retries_total", "counter", "Requests retried after a retryable failure.")
    out.sample(f"{p}_retries_total", total.retries)

    name = f"{p}_request_duration_seconds"
    out.family(name, "histogram", "Time from sending a request to its answer or failure.")
    cumulative = 0
    for bound, count in zip(LATENCY_BUCKETS, total.latency_counts, strict=False):
        cumulative += count
        out.sample(f"{name}_bucket", cumulative, {"le": number(float(bound))})
    cumulative += total.latency_counts[-1]
    out.sample(f"{name}_bucket", cumulative, {"le": "+Inf"})
    out.sample(f"{name}_sum", total.latency_sum)
    out.sample(f"{name}_count", cumulative)

    out.family(f"{p}_batches", "gauge", "Batches listed on the dashboard, by state.")
    for state, count in sorted(registry.counts_by_state().items()):
        out.sample(f"{p}_batches", count, {"state": state})

    entries = [(e, {"batch_id": redact(e.public_key, hidden), "name": redact(e.stats.name, hidden)})
               for e in registry.listed()]  # per-batch series: the listed batches only (bounded)
    out.family(f"{p}_batch_lines_done", "gauge", "Lines done (succeeded or failed) of one batch.")
    for e, ids in entries:
        out.sample(f"{p}_batch_lines_done", e.stats.done, ids)
    out.family(f"{p}_batch_lines_expected", "gauge", "Lines in the input of one batch (0 until counted).")
    for e, ids in entries:
        out.sample(f"{p}_batch_lines_expected", e.stats.total or 0, ids)
    out.family(f"{p}_batch_lines_failed", "gauge", "Failed lines of one batch.")
    for e, ids in entries:
        out.sample(f"{p}_batch_lines_failed", e.stats.failed, ids)
    out.family(f"{p}_batch_rate_lines_per_second", "gauge", "Recent throughput of one batch.")
    for e, ids in entries:
        out.sample(f"{p}_batch_rate_lines_per_second", float(e.stats.rate_now()), ids)

    out.family(f"{p}_batch_waiting_for_model", "gauge", "1 while an outage pauses one batch; its label says "
               "\"waiting for the model since HH:MM:SS: cause\" (batches waiting only).")
    for e, ids in entries:
        if e.stats.waiting:
            out.sample(f"{p}_batch_waiting_for_model", 1.0, {**ids, "waiting": redact(e.stats.waiting, hidden)})

    load_series(out, total, entries)

    out.family(f"{p}_uptime_seconds", "gauge", "Seconds since this process started its registry.")
    out.sample(f"{p}_uptime_seconds", float(now - registry.started))
    return "\n".join(out.lines) + "\n"
