"""``twistd seldon-batch``: the options and the service tree of the long-running form.

The options are the command line's (one table, :mod:`.options`) plus the daemon's own.
:func:`makeService` only wires services together; listeners, pools and polls start in
``startService`` (twistd may fork between the two).

Without ``--watch-dir`` the service runs the one input file and stops the reactor. twistd
itself always exits 0 after a clean shutdown, so the exit status (0 all lines succeeded, 1 some
lines failed, 3 stopped early, as for ``seldon-batch-processor``) is set by an ``atexit`` hook
that runs after twistd has removed its pid file and calls ``os._exit(status)``. A SIGTERM /
SIGINT makes twistd re-raise the signal once the services have stopped, so the process then
ends "killed by SIGTERM" (status -15 / 143), after the output was flushed and closed.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from typing import Any

import txaio
from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.python import usage

from .config import BatchConfig
from .dashboard import DEFAULT_ENDPOINT, TOKEN_ENV, DashboardService, check_endpoint
from .options import ProcessorOptions, at_least, positive
from .registry import BatchRegistry

txaio.use_twisted()
log = txaio.make_logger()

EXIT_ERROR = 1


def _daemon_parameters() -> list[list[Any]]:
    rows = []
    for row in ProcessorOptions.optParameters:
        row = list(row)
        if row[0] == "dashboard":
            row[2] = DEFAULT_ENDPOINT
            row[3] = ("Serve the live dashboard on this Twisted endpoint ('none' disables it); a non-loopback "
                      "address needs --dashboard-token")
        rows.append(row)
    return rows + [
        ["watch-dir", None, None, "Run until stopped, processing every complete file dropped in DIR/incoming/ "
         "(results in DIR/done/, rejects in DIR/failed/); without it the one input file is processed"],
        ["dashboard-token", None, None, f"Require this token on the dashboard (header 'Authorization: Bearer "
         f"TOKEN' or ?token=TOKEN) [default: ${TOKEN_ENV}]"],
        ["poll-interval", None, 1.0, "Seconds between two scans of the watch directory", positive],
        ["concurrent-batches", None, 1, "How many files of the watch directory run at once", at_least(1)],
    ]


class Options(ProcessorOptions):
    """The command line's options plus the daemon's; --drain-timeout is the stop grace time."""

    synopsis = "Usage: twistd [twistd options] seldon-batch [options]"
    longdesc = ("Process one input file, or with --watch-dir every file dropped in a directory, against a "
                "Seldon Core model, with a live web dashboard. SIGTERM/SIGINT take no new work, give requests "
                "in flight --drain-timeout seconds, flush and close the outputs, and exit.")
    optParameters = _daemon_parameters()

    def postOptions(self) -> None:
        if self["watch-dir"]:
            self.needs_input = False
        super().postOptions()
        self["dashboard-token"] = self["dashboard-token"] or os.environ.get(TOKEN_ENV) or None
        endpoint = self["dashboard"]
        if not endpoint or endpoint.strip().lower() == "none":
            self["dashboard"] = None
        try:
            check_endpoint(self["dashboard"] or "", self["dashboard-token"])
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        watch = self["watch-dir"]
        if watch:
            parent = os.path.dirname(os.path.abspath(watch))
            if not os.path.isdir(watch) and not os.path.isdir(parent):
                raise usage.UsageError(f"--watch-dir {watch!r}: neither it nor its parent directory exists")


def set_exit_status(code: int) -> None:
    """Make the process exit with ``code`` once twistd has cleaned up (see the module docstring)."""
    if code == 0:
        return

    def leave() -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)

    atexit.register(leave)


class OneBatchService(service.Service):
    """Runs one input file, then stops the reactor with the run's exit status."""

    def __init__(self, config: BatchConfig, reactor: Any, registry: BatchRegistry) -> None:
        self._config = config
        self._reactor = reactor
        self._registry = registry
        self._batch: Any = None
        self._done: Deferred[None] | None = None
        self._stopping = False
        self.exit_code: int | None = None

    def startService(self) -> None:
        super().startService()
        self._reactor.callWhenRunning(self._start)

    def _start(self) -> None:
        if self._stopping:
            return
        from .batch import Batch

        self._batch = Batch(self._config, self._reactor)
        entry = self._registry.add(self._batch.stats, config=self._config, source=self._config.input_data_path,
                                   output=self._config.output_data_path)
        self._done = Deferred.fromCoroutine(self._run(entry))

    async def _run(self, entry: Any) -> None:
        config = self._config
        try:
            summary = await self._batch.run()
        except Exception:  # noqa: BLE001 - reported, then the process exits non-zero
            log.failure("batch {batch_id} failed", batch_id=config.batch_id)
            code = EXIT_ERROR
        else:
            entry.finish(self._reactor.seconds())
            log.info("{summary}", summary=summary.text())
            if config.benchmark:
                log.info("Benchmark: elapsed time {elapsed:.3f} s for {lines} lines, {rate:.1f} lines/s, "
                         "{workers} workers, batch size {size}", elapsed=summary.elapsed, lines=summary.lines,
                         rate=summary.rate, workers=config.workers, size=config.batch_size)
            code = summary.exit_code
        self.exit_code = code
        set_exit_status(code)
        if not self._stopping:
            self._reactor.stop()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        self._stopping = True
        if self._batch is not None and self._done is not None and not self._done.called:
            self._batch.stop("interrupted by a signal")
            return self._done
        return None


def makeService(options: Options) -> service.MultiService:
    """Wire the registry, the dashboard and the batch or watch-directory service; start nothing."""
    from twisted.internet import reactor

    from .engine import tune_gc
    from .watchdir import WatchDirService

    txaio.set_global_log_level(options["log-level"])
    tune_gc()
    top = service.MultiService()
    registry = BatchRegistry(reactor)
    registry.setServiceParent(top)
    if options["watch-dir"]:
        base = options.config()
        WatchDirService(options["watch-dir"], base, reactor, registry, poll_interval=options["poll-interval"],
                        concurrent=options["concurrent-batches"]).setServiceParent(top)
    else:
        OneBatchService(options.config(), reactor, registry).setServiceParent(top)
    if options["dashboard"]:
        DashboardService(options["dashboard"], registry, reactor,
                         token=options["dashboard-token"]).setServiceParent(top)
    return top
