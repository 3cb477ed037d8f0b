"""Progress on stderr while the command runs a batch: a tqdm bar on a terminal, a log line now and then otherwise.

A service of the command's tree (:mod:`..runner`); it only reads the batch's stats. On a terminal
tqdm draws one updating line (bar, lines done, errors, rate, ETA; it fits the terminal's width);
the rate and so the ETA are the engine's samples (:meth:`.BatchStats.rate_now`), the same the
dashboard and /metrics show. When stderr is a file or a pipe (a pod's log) the bar's escape codes
would be noise: a plain structured log line every ``log_every`` seconds instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TextIO

import txaio
from tqdm import tqdm
from twisted.application import service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from ..pipeline.stats import BatchStats

txaio.use_twisted()
log = txaio.make_logger()

#: One line: " 12%|███      | 240/2000 [00:02<00:09, 191.50 lines/s, errors 3]" (tqdm adds the ", ").
BAR_FORMAT = "{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
#: Without a known total (the input is still being counted): no bar, no ETA.
COUNT_FORMAT = "{n_fmt} lines [{elapsed}, {rate_fmt}{postfix}]"


def render_bar(stats: BatchStats, now: float, width: int = 30) -> str:
    """The plain text of the log line (no escape codes)."""
    total = stats.total or 0
    done = stats.done
    fraction = min(done / total, 1.0) if total else 0.0
    filled = int(width * fraction)
    eta = stats.eta(now)
    eta_text = f" eta {eta:.0f}s" if eta is not None else ""
    waiting = f"; {stats.waiting}" if stats.waiting else ""  # an outage pauses the run (issue 19)
    return (f"[{'#' * filled}{'.' * (width - filled)}] {100 * fraction:5.1f}% {done}/{total} "
            f"ok {stats.succeeded} err {stats.failed} {stats.rate_now():.0f}/s{eta_text}{waiting}")


def _columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError):
        return 0


class EngineRateBar(tqdm):  # type: ignore[misc]  # tqdm ships no type information
    """tqdm, with the engine's rate instead of its own estimate (so the ETA agrees with the dashboard)."""

    rate_source: Callable[[], float] = staticmethod(lambda: 0.0)
    #: No monitor thread: the reactor's LoopingCall is the only one drawing.
    monitor_interval = 0

    @property
    def format_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = super().format_dict
        shown["rate"] = self.rate_source() or None
        return shown


class ProgressReporter(service.Service):
    """Shows the stats every ``interval`` seconds while running; a last time on stop."""

    def __init__(self, stats: BatchStats, clock: IReactorTime, stream: TextIO,
                 interval: float | None = None, log_every: float = 10.0) -> None:
        self._stats = stats
        self._clock = clock
        self._stream = stream
        self._tty = stream.isatty()
        self._interval = interval or (0.5 if self._tty else 1.0)
        self._log_every = log_every
        self._last_log = 0.0
        self._bar: EngineRateBar | None = None
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        super().startService()
        self._last_log = self._clock.seconds()
        if self._tty:
            # A terminal that does not tell its size (a bare pty says 0x0) would make tqdm draw nothing.
            sized = _columns(self._stream) > 0
            self._bar = EngineRateBar(total=self._stats.total, file=self._stream, unit=" lines", mininterval=0,
                                      dynamic_ncols=sized, ncols=None if sized else 100,
                                      nrows=None if sized else 24, bar_format=COUNT_FORMAT)
            self._bar.rate_source = self._stats.rate_now
        self._loop.start(self._interval, now=True)

    def stopService(self) -> None:  # noqa: N802 - Twisted's name
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        self._tick()
        if self._bar is not None:
            self._bar.close()  # leaves the last bar on its line and moves to the next
            self._bar = None

    def _tick(self) -> None:
        now = self._clock.seconds()
        if self._bar is not None:
            self._draw(self._bar)
        elif not self._tty and now - self._last_log >= self._log_every:
            self._last_log = now
            log.info("progress {progress}", progress=render_bar(self._stats, now))

    def _draw(self, bar: EngineRateBar) -> None:
        stats = self._stats
        if stats.total is not None and bar.total != stats.total:
            bar.total = stats.total
            bar.bar_format = BAR_FORMAT
        bar.n = stats.done
        waiting = f", {stats.waiting}" if stats.waiting else ""  # an outage pauses the run (issue 19)
        bar.set_postfix_str(f"errors {stats.failed}{waiting}", refresh=False)
        bar.refresh()
