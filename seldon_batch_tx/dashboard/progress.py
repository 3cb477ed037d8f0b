"""Progress on stderr while the command runs a batch: a bar on a terminal, a log line now and then otherwise.

A service of the command's tree (:mod:`..runner`); it only reads the batch's stats; the engine
takes the rate samples, so the bar, the dashboard and /metrics show the same rate.
"""

from __future__ import annotations

from typing import TextIO

import txaio
from twisted.application import service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from ..pipeline.stats import BatchStats

txaio.use_twisted()
log = txaio.make_logger()


def render_bar(stats: BatchStats, now: float, width: int = 30) -> str:
    total = stats.total or 0
    done = stats.done
    fraction = min(done / total, 1.0) if total else 0.0
    filled = int(width * fraction)
    eta = stats.eta(now)
    eta_text = f" eta {eta:.0f}s" if eta is not None else ""
    return (f"[{'#' * filled}{'.' * (width - filled)}] {100 * fraction:5.1f}% {done}/{total} "
            f"ok {stats.succeeded} err {stats.failed} {stats.rate_now():.0f}/s{eta_text}")


class ProgressReporter(service.Service):
    """Shows the stats every ``interval`` seconds while running; a last time (and a newline) on stop."""

    def __init__(self, stats: BatchStats, clock: IReactorTime, stream: TextIO,
                 interval: float | None = None, log_every: float = 10.0) -> None:
        self._stats = stats
        self._clock = clock
        self._stream = stream
        self._tty = stream.isatty()
        self._interval = interval or (0.5 if self._tty else 1.0)
        self._log_every = log_every
        self._last_log = 0.0
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        super().startService()
        self._last_log = self._clock.seconds()
        self._loop.start(self._interval, now=True)

    def stopService(self) -> None:  # noqa: N802 - Twisted's name
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        self._tick()
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()

    def _tick(self) -> None:
        now = self._clock.seconds()
        if self._tty:
            self._stream.write("\r" + render_bar(self._stats, now))
            self._stream.flush()
        elif now - self._last_log >= self._log_every:
            self._last_log = now
            log.info("progress {progress}", progress=render_bar(self._stats, now))
