"""Logging that honours ``--log-level``.

txaio's loggers replace the methods below the current level with no-ops, so a debug call on
the per-request path costs nothing when debug is off (no formatting, no event dict). Events go
through ``twisted.logger`` to stderr; stdout stays free for the summary. The run's credentials
(:func:`hide_in_logs`) are replaced in every line, debug lines quoting a server's answer included.
"""

from __future__ import annotations

import sys
from typing import TextIO

import txaio
from tqdm import tqdm
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    globalLogBeginner,
    textFileLogObserver,
)

from .redaction import Secrets

txaio.use_twisted()

#: Credentials no log line may show (:func:`hide_in_logs`); empty: nothing is searched.
_hidden = Secrets()


def hide_in_logs(secrets: Secrets) -> None:
    """From now on, replace ``secrets`` in every line :func:`start_logging` writes."""
    global _hidden
    _hidden = secrets


class _AroundBars:
    """A stream that lifts a terminal's progress bar out of the way of each log line, then redraws it."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def write(self, text: str) -> int:
        if _hidden:
            text = _hidden.text(text)
        with tqdm.external_write_mode(file=self._out):
            return self._out.write(text)

    def flush(self) -> None:
        self._out.flush()


def _not_reactor_chatter(event: dict[str, object]) -> PredicateResult:
    """Drop the reactor's own info lines ("Main loop terminated."): after a one-line usage error
    they would be a second line, and in a run they say nothing the summary does not."""
    if event.get("log_namespace") == "twisted.internet.base" and event.get("log_level") == LogLevel.info:
        return PredicateResult.no
    return PredicateResult.maybe


def start_logging(level: str, out: TextIO | None = None) -> None:
    """Send structured log events at ``level`` and above to ``out`` (stderr by default)."""
    level = "warn" if level == "warning" else level  # txaio and twisted.logger spell it "warn"
    txaio.set_global_log_level(level)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    stream = _AroundBars(out or sys.stderr)
    observer = FilteringLogObserver(textFileLogObserver(stream), [predicate, _not_reactor_chatter])  # type: ignore[arg-type,list-item]
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
