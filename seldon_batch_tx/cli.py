"""``seldon-batch-processor``: the seed's command, run on a Twisted reactor.

It builds the same service tree as ``twistd seldon-batch`` (:mod:`.runner`: the registry, the
dashboard when asked, the stderr progress bar and the one-batch service), starts it under
``task.react`` and stops it as twistd would on a signal; then it prints the run's outcome
(summary, benchmark line) on stdout (stderr with ``-o -``) and leaves with its exit status.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.python import usage

from .checks import option_error, secret_token, shown
from .config import BatchConfig
from .dashboard.security import TOKEN_ENV
from .exits import EXIT_USAGE
from .options import ProcessorOptions
from .pipeline.engine import tune_gc
from .runner import OneBatchService, service_tree

PROG = "seldon-batch-processor"


def parse(argv: Sequence[str] | None) -> ProcessorOptions:
    """Parsed options, or ONE error line naming the option and its value, and exit status 2.

    Nothing has been sent, opened or logged yet; a bad environment variable is reported the same
    way as a bad flag (the options object defers it until the command line was read).
    """
    try:
        options = ProcessorOptions()
        options.parseOptions(list(argv) if argv is not None else sys.argv[1:])
        token = os.environ.get(TOKEN_ENV)
        if options["dashboard"] and token:  # the dashboard reads it; checked here like every other setting
            try:
                secret_token(token)
            except ValueError as e:
                raise option_error(f"${TOKEN_ENV}", token, str(e), secret=True) from None
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
    from .storage.access import preflight

    problem = preflight(config)  # URLs and pipes: credentials, buckets, resume; before anything is sent
    if problem is not None:
        usage_exit(problem)

    from twisted.internet import task

    from .logs import start_logging

    start_logging(config.log_level)
    tune_gc()
    task.react(_run, (config,))


def _tree(reactor: Any, config: BatchConfig) -> tuple[service.MultiService, OneBatchService]:
    """The command's service tree; a dashboard endpoint that is refused or cannot listen is a usage error.

    The dashboard binds in ``privilegedStartService`` (as under twistd), before the batch is made.
    """
    from .dashboard.progress import ProgressReporter
    from .dashboard.registry import BatchRegistry

    registry = BatchRegistry(reactor)
    work = OneBatchService(config, reactor, registry)
    progress = ProgressReporter(work.stats, reactor, sys.stderr)
    try:
        dashboard = None
        if config.dashboard:
            from .dashboard.listener import DashboardService

            dashboard = DashboardService(config.dashboard, registry, reactor, token=os.environ.get(TOKEN_ENV) or None)
        top = service_tree(work, dashboard, progress)
        top.privilegedStartService()
    except Exception as e:  # noqa: BLE001 - a bad endpoint or a taken port: nothing was opened or sent
        usage_exit(f"--dashboard {shown(config.dashboard or '')}: {e}")
    return top, work


def _run(reactor: Any, config: BatchConfig) -> Deferred[None]:
    top, work = _tree(reactor, config)
    # As twistd: a signal stops the tree (the batch drains and closes its output), then the reactor.
    reactor.addSystemEventTrigger("before", "shutdown", lambda: top.stopService() if top.running else None)
    top.startService()

    async def run() -> None:
        outcome = await work.when_finished()
        if top.running:
            await top.stopService()  # the last progress bar and the dashboard's port, before the summary
        if outcome.refusal is not None:
            usage_exit(outcome.refusal)
        out = sys.stderr if config.output_data_path == "-" else sys.stdout  # -o -: stdout holds the lines
        for line in outcome.lines():
            print(line, file=out, flush=True)
        raise SystemExit(outcome.code)

    return Deferred.fromCoroutine(run())
