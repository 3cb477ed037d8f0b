"""What the hostile dashboard tests share: the hostile texts, strict readers of UTF-8 and JSON answers,
a registry holding given batches, and the real reactor.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from twisted.internet.task import Clock

from seldon_batch_tx.dashboard.registry import BatchRegistry
from seldon_batch_tx.pipeline.stats import BatchStats

# An undecodable file name as os.listdir returns it, and text that breaks naive renderers.
NOT_UTF8 = b"caf\xe9-\xff\xfe.txt".decode("utf-8", "surrogateescape")


def strict_utf8(body: bytes) -> str:
    """``body`` decoded as UTF-8, failing on any invalid byte or encoded surrogate."""
    return body.decode("utf-8", "strict")


def strings(value: Any) -> Iterator[str]:
    """Every string (keys too) inside a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def strict_json(body: bytes) -> Any:
    """Parse ``body`` as strict JSON whose strings are all valid Unicode (no lone surrogates)."""
    def no_constants(name: str) -> Any:
        raise AssertionError(f"non-standard JSON constant {name}")

    data = json.loads(strict_utf8(body), parse_constant=no_constants)
    for text in strings(data):
        text.encode("utf-8")  # raises on a lone surrogate escaped as \udXXX
    return data


def registry_with(names: list[str], ids: list[str]) -> BatchRegistry:
    """A registry holding one batch per (name, id) pair, with an error whose reason is hostile too."""
    registry = BatchRegistry(Clock())
    for i, (name, batch_id) in enumerate(zip(names, ids, strict=True)):
        stats = BatchStats(batch_id, name, total=10)
        stats.state, stats.started = "running", 0.0
        stats.succeeded = i
        stats.record_error("http_500", i, f"HTTP 500: {name} {batch_id[:50]}")
        stats.sample(0.0)
        stats.reason = name
        registry.add(stats, source=f"/watch/processing/{name}", output=f"/watch/processing/{name}.out")
    return registry
