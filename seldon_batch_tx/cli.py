"""``seldon-batch-processor``: the seed's command, run on a Twisted reactor."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from twisted.internet.defer import Deferred
from twisted.python import usage

from .config import BatchConfig
from .options import ProcessorOptions, option_error, secret_token, shown
from .pipeline.engine import EXIT_USAGE, tune_gc

PROG = "seldon-batch-processor"
#: The dashboard's token for ``--dashboard`` (read by :mod:`.dashboard`, which is imported only when used).
DASHBOARD_TOKEN_ENV = "SELDON_BATCH_DASHBOARD_TOKEN"


def parse(argv: Sequence[str] | None) -> ProcessorOptions:
    """Parsed options, or ONE error line naming the option and its value, and exit status 2.

    Nothing has been sent, opened or logged yet; a bad environment variable is reported the same
    way as a bad flag (the options object defers it until the command line was read).
    """
    try:
        options = ProcessorOptions()
        options.parseOptions(list(argv) if argv is not None else sys.argv[1:])
        token = os.environ.get(DASHBOARD_TOKEN_ENV)
        if options["dashboard"] and token:  # the dashboard reads it; checked here like every other setting
            try:
                secret_token(token)
            except ValueError as e:
                raise option_error(f"${DASHBOARD_TOKEN_ENV}", token, str(e), secret=True) from None
    except usage.UsageError as e:
        usage_exit(str(e))
    return options


def usage_exit(message: str) -> NoReturn:
    """Leave with ``PROG: error: MESSAGE`` on one line of stderr and status 2."""
    print(f"{PROG}: error: {' '.join(message.splitlines())}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USAGE)


def main(argv: Sequence[str] | None = None) -> None:
    options = parse(argv)
    config = options.config()

    from twisted.internet import task

    from .logs import start_logging

    start_logging(config.log_level)
    tune_gc()
    task.react(_run, (config,))


def _run(reactor: Any, config: BatchConfig) -> Deferred[None]:
    from .dashboard.progress import ProgressReporter
    from .outputs.resume import ResumeError
    from .outputs.writer import OutputRefused
    from .pipeline.batch import Batch

    batch = Batch(config, reactor)
    progress = ProgressReporter(batch.stats, reactor, sys.stderr)
    finished: Deferred[None] = Deferred()

    shutting_down = False

    def on_shutdown() -> Deferred[None]:
        nonlocal shutting_down
        shutting_down = True
        batch.stop("interrupted by a signal")
        return finished

    trigger = reactor.addSystemEventTrigger("before", "shutdown", on_shutdown)

    async def run() -> None:
        dashboard = None
        if config.dashboard:
            from .dashboard.site import serve_single_batch

            try:
                dashboard = serve_single_batch(config.dashboard, batch.stats, config, reactor)
            except Exception as e:  # noqa: BLE001 - a bad endpoint or a taken port: nothing was sent
                reactor.removeSystemEventTrigger(trigger)
                usage_exit(f"--dashboard {shown(config.dashboard)}: {e}")
        progress.start()
        try:
            summary = await batch.run()
        except (ResumeError, OutputRefused) as e:  # not resumable as asked, or locked by another run: nothing sent
            usage_exit(str(e))
        finally:
            progress.stop()
            if dashboard is not None:
                await dashboard.stopService()
            finished.callback(None)
        if not shutting_down:  # a fired trigger is already gone; removing it again raises
            reactor.removeSystemEventTrigger(trigger)
        print(summary.text(), flush=True)
        if config.benchmark:
            print(f"Benchmark: elapsed time {summary.elapsed:.3f} s for {summary.lines} lines, "
                  f"{summary.rate:.1f} lines/s, {config.workers} workers, batch size {config.batch_size}",
                  flush=True)
        raise SystemExit(summary.exit_code)

    return Deferred.fromCoroutine(run())
