"""``seldon-batch-processor``: the seed's command, run on a Twisted reactor.

It builds the same service tree as ``twistd seldon-batch`` (:mod:`.runner`: the registry, the
dashboard when asked, the stderr progress bar and the one-batch service), starts it under
``task.react`` and stops it as twistd would on a signal; then it prints the run's outcome
(summary, benchmark line) on stdout (stderr with ``-o -``) and leaves with its exit status.
"""

from __future__ import annotations

import math
import os
import signal as stdlib_signal
import sys
from collections.abc import Callable, Sequence
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


def usage_exit(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Leave with ``PROG: error: MESSAGE`` on one line of stderr and status 2 (or ``code``)."""
    print(f"{PROG}: error: {' '.join(message.splitlines())}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        options = parse(argv)
    except BrokenPipeError:  # `--help | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None
    config = options.config()
    from .storage.access import preflight

    problem = preflight(config)  # URLs and pipes: credentials, buckets, resume; before anything is sent
    if problem is None:
        from .tables.formats import table_problem

        problem = table_problem(config)  # tables: the [tables] extra, what can be joined
    if problem is not None:
        usage_exit(problem)

    from twisted.internet import task

    from .logs import hide_in_logs, start_logging
    from .redaction import Secrets

    hide_in_logs(Secrets.of(config))
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

            # this command has no --dashboard-token: the refusal names the variable it does read
            dashboard = DashboardService(config.dashboard, registry, reactor, token=os.environ.get(TOKEN_ENV) or None,
                                         set_token=f"{TOKEN_ENV} in the environment")
        top = service_tree(work, dashboard, progress)
        top.privilegedStartService()
    except Exception as e:  # noqa: BLE001 - a bad endpoint or a taken port: nothing was opened or sent
        usage_exit(f"--dashboard {shown(config.dashboard or '')}: {e}")
    if dashboard is not None and dashboard.port is not None:  # the bound port, also for tcp:0
        print(f"{PROG}: dashboard on {dashboard.where}", file=sys.stderr, flush=True)
    return top, work


def _run(reactor: Any, config: BatchConfig) -> Deferred[None]:
    top, work = _tree(reactor, config)
    signal = Signal()
    ended: Deferred[None] = Deferred()
    once = OneSignal()
    reactor.callWhenRunning(once.install)  # after the reactor installed its handlers (during startup)

    def on_shutdown() -> Deferred[None]:
        # As twistd: a signal stops the batch (it drains and closes its output) or ends the linger; the
        # reactor waits until the outcome is reported, so the exit status is the batch's.
        once.quiet()
        signal.fire()
        Deferred.fromCoroutine(_stop_batch(top))
        return ended

    reactor.addSystemEventTrigger("before", "shutdown", on_shutdown)
    top.startService()

    async def run() -> None:
        try:
            outcome = await work.when_finished()
            await _stop_batch(top)  # the last progress bar, before the summary
            if outcome.refusal is not None:
                usage_exit(outcome.refusal, outcome.code)
            out = sys.stderr if config.output_data_path == "-" else sys.stdout  # -o -: stdout holds the lines
            for line in outcome.lines():
                print(line, file=out, flush=True)
            await _linger(reactor, top, config.dashboard_linger, signal)
            raise SystemExit(outcome.code)
        finally:
            if top.running:
                await top.stopService()  # the dashboard's port
            ended.callback(None)

    return Deferred.fromCoroutine(run())


class OneSignal:
    """The reactor's SIGINT and SIGTERM handlers, made to act once: the first signal stops the reactor
    (as before), any later one (``timeout`` and a group kill both sending SIGTERM, a double Ctrl-C) is
    ignored. Twisted's handler would call ``reactor.stop()`` again (a CRITICAL ReactorNotRunning
    traceback), and while the interpreter exits Python restores the default action, so a signal then
    killed the process (status -15/130 instead of the batch's). SIGKILL still ends a long drain."""

    def __init__(self) -> None:
        self.handled = False
        self._numbers: list[int] = []

    def install(self) -> None:
        for number in (stdlib_signal.SIGINT, stdlib_signal.SIGTERM):
            previous = stdlib_signal.getsignal(number)
            if callable(previous):  # not SIG_IGN: a background job's SIGINT stays ignored
                stdlib_signal.signal(number, self._handler(previous))
                self._numbers.append(number)

    def _handler(self, previous: Callable[[int, Any], Any]) -> Callable[[int, Any], None]:
        def handle(number: int, frame: Any) -> None:
            if not self.handled:
                self.handled = True
                previous(number, frame)
            self.quiet()

        return handle

    def quiet(self) -> None:
        """The reactor stops: from now on (also while the interpreter exits) these signals are ignored."""
        self.handled = True
        for number in self._numbers:
            stdlib_signal.signal(number, stdlib_signal.SIG_IGN)


class Signal:
    """Fired once when the reactor is asked to stop (Ctrl-C, SIGTERM); any number may wait for it."""

    def __init__(self) -> None:
        self.fired = False
        self._waiting: list[Deferred[None]] = []

    def fire(self) -> None:
        self.fired = True
        waiting, self._waiting = self._waiting, []
        for each in waiting:
            if not each.called:  # a linger's timeout may have ended the wait already
                each.callback(None)

    def wait(self) -> Deferred[None]:
        waiting: Deferred[None] = Deferred()
        if self.fired:
            waiting.callback(None)
        else:
            self._waiting.append(waiting)
        return waiting


def _dashboard_of(top: service.MultiService) -> Any:
    """The tree's dashboard service, or None. Without ``--dashboard`` its module (twisted.web,
    jinja2: a tenth of a second) is never imported, and is not imported here either."""
    listener = sys.modules.get(f"{__package__}.dashboard.listener")
    if listener is None:
        return None
    return next((s for s in top if isinstance(s, listener.DashboardService)), None)


async def _stop_batch(top: service.MultiService) -> None:
    """Stop the work, then the progress bar (its last line shows the end); the dashboard may linger."""
    dashboard = _dashboard_of(top)
    for child in reversed(list(top)):
        if child.running and child is not dashboard:
            stopping = child.stopService()
            if stopping is not None:
                await stopping


async def _linger(reactor: Any, top: service.MultiService, seconds: float | None, signal: Signal) -> None:
    """``--dashboard-linger``: keep the dashboard up after the batch, so its page can still be read,
    until ``seconds`` pass (``inf``: forever) or a signal comes."""
    dashboard = _dashboard_of(top)
    if dashboard is None or dashboard.port is None or not seconds or signal.fired:
        return
    # A shell starts a background job (`cmd &` in a script) with SIGINT ignored so that Ctrl-C on the
    # terminal leaves it alone: that is honoured, and the line says what does stop it.
    stop = f"SIGTERM (kill {os.getpid()})" if stdlib_signal.getsignal(stdlib_signal.SIGINT) is stdlib_signal.SIG_IGN \
        else "Ctrl-C"
    until = f"until {stop}" if math.isinf(seconds) else f"for {seconds:g} s ({stop} ends it sooner)"
    print(f"{PROG}: the batch is done; the dashboard stays on {dashboard.where} {until}", file=sys.stderr,
          flush=True)
    waiting = signal.wait()
    if not math.isinf(seconds):
        waiting.addTimeout(seconds, reactor, onTimeoutCancel=lambda result, timeout: None)
    await waiting


if __name__ == "__main__":  # `python -m seldon_batch_tx.cli ...`, as the installed command
    main()
