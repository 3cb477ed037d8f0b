"""``twistd seldon-batch``: the options and the service tree of the long-running form.

The options are the command line's (one table, :mod:`.options`) plus the daemon's own.
:func:`makeService` only wires services together (the same tree as the command's, from
:mod:`.runner`, or the watch directory's); listeners, pools and polls start in ``startService``
(twistd may fork between the two).

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
from collections.abc import Sequence
from typing import Any

import attrs
import txaio
from twisted.application import service
from twisted.internet.error import ReactorNotRunning
from twisted.python import usage

from .bounds import seconds
from .checks import at_least, path, secret_token
from .dashboard.registry import BatchRegistry
from .dashboard.security import DEFAULT_ENDPOINT, TOKEN_ENV, check_endpoint
from .exits import EXIT_USAGE
from .options import OPTIONS, Option, ProcessorOptions, parameter_rows
from .pipeline.summary import BENCHMARK
from .runner import OneBatchService, Outcome, service_tree
from .storage.paths import protocol

txaio.use_twisted()
log = txaio.make_logger()


def sidecar_keys(value: str) -> frozenset[str]:
    """``host,header``: the per-file options the operator lets a sidecar ``NAME.json`` set.

    Checked by the daemon's own rule (:func:`.daemon.sidecars.check_sidecar_allow`), so a typo or a key
    no sidecar may hold is a usage error instead of a setting silently left locked.
    """
    from .daemon.sidecars import check_sidecar_allow

    return check_sidecar_allow(value.split(","))


#: The daemon's own options (their environment variables too: ``SELDON_BATCH_WATCH_DIR``...).
DAEMON_OPTIONS: tuple[Option, ...] = (
    Option("watch-dir", None, None, "Run until stopped, processing every complete file dropped in DIR/incoming/ "
           "(results in DIR/done/, rejects in DIR/failed/); without it the one input file is processed", path),
    Option("dashboard-token", None, None, "Require this token on the dashboard (header 'Authorization: Bearer "
           f"TOKEN' or ?token=TOKEN) [default: ${TOKEN_ENV}]", secret_token),
    Option("dashboard-token-file", None, None, "Read --dashboard-token from this file (e.g. a mounted "
           "Kubernetes secret): its content without one trailing newline, read once at start", path),
    Option("poll-interval", None, 1.0, "Seconds between two scans of the watch directory (0.05 to 3600)",
           seconds("poll-interval")),
    Option("file-time-slice", None, 600.0, "Seconds a file may run while other files wait; then it yields its "
           "turn (its output so far is kept) and resumes after them, so no file blocks the ones behind it "
           "(1 to 86400)", seconds("file-time-slice")),
    Option("concurrent-batches", None, 1, "How many files of the watch directory run at once", at_least(1, 1000)),
    Option("sidecar-allow", None, None, "Comma-separated per-file options a sidecar NAME.json may set beyond the "
           "safe ones, e.g. host,header (where data, headers and credentials go is otherwise the daemon's) "
           "[default: none]", sidecar_keys),
)
#: The command line's table with the daemon's dashboard default, plus the daemon's own options.
DAEMON_TABLE: tuple[Option, ...] = tuple(
    attrs.evolve(o, default=DEFAULT_ENDPOINT, help="Serve the live dashboard on this Twisted endpoint ('none' "
                 "disables it); a non-loopback address needs --dashboard-token") if o.name == "dashboard" else o
    for o in OPTIONS) + DAEMON_OPTIONS


#: twistd's own default ``--pidfile`` (in the current directory).
TWISTD_PIDFILE = "twistd.pid"


def command_name() -> str:
    """``twistd seldon-batch`` (or ``twist seldon-batch``): how the user called the daemon."""
    return f"{os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else 'twistd'} seldon-batch"


class Options(ProcessorOptions):
    """The command line's options plus the daemon's; --drain-timeout is the stop grace time."""

    synopsis = "[seldon-batch options]"
    longdesc = ("Process one input file, or with --watch-dir every file dropped in a directory, against a "
                "Seldon Core model, with a live web dashboard. SIGTERM/SIGINT take no new work, give requests "
                "in flight --drain-timeout seconds, flush and close the outputs, and exit.")
    # Twisted accumulates optParameters over the class tree: these rows are added to (or, for
    # --dashboard, replace) the command line's.
    optParameters = parameter_rows([o for o in DAEMON_TABLE if o.name == "dashboard"] + list(DAEMON_OPTIONS))
    table = DAEMON_TABLE
    secret_files = (*ProcessorOptions.secret_files, ("dashboard-token-file", "dashboard-token"))

    def parseOptions(self, options: Sequence[str] | None = None) -> None:  # noqa: N802
        """As the command line's; under twistd a usage error is ONE line on stderr and exit status 2.

        twistd's own handling prints the whole usage text, then the error, and exits 1; a script
        or a Kubernetes pod then cannot tell a typo from a failed run. The error is still raised
        when there is no parent command (tests, other callers).
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if self.parent is None:
                raise
            message = " ".join(str(e).splitlines())
            print(f"{command_name()}: error: {message}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_USAGE) from None

    def postOptions(self) -> None:  # noqa: N802
        if self["watch-dir"]:
            self.needs_input = False
        super().postOptions()
        endpoint = self["dashboard"]
        if not endpoint or endpoint.strip().lower() == "none":
            self["dashboard"] = None
        try:
            check_endpoint(self["dashboard"] or "", self["dashboard-token"])
        except ValueError as e:
            raise self.error("dashboard", endpoint, str(e)) from None
        self["sidecar-allow"] = self["sidecar-allow"] or frozenset()
        watch = self["watch-dir"]
        if watch and protocol(watch) is not None:  # s3://, file://...: never taken for a local path
            raise self.error("watch-dir", watch, "must be a local directory; object storage is not watched "
                             "(copy files into DIR/incoming/, or run one file with -i URL)")
        if watch:
            parent = os.path.dirname(os.path.abspath(watch))
            if not os.path.isdir(watch) and not os.path.isdir(parent):
                raise self.error("watch-dir", watch, "neither it nor its parent directory exists")
        elif self["sidecar-allow"]:
            raise self.error("sidecar-allow", ",".join(sorted(self["sidecar-allow"])), "needs --watch-dir")
        if self.parent is not None:
            self._under_twistd(watch)

    def _under_twistd(self, watch: str | None) -> None:
        """twistd's pid file and the watch directory's lock, before twistd checks the pid file or forks.

        twistd's default pid file is ``twistd.pid`` in the current directory, so two daemons started from
        one directory refused each other for the wrong reason. Unless ``--pidfile`` was given: a watching
        daemon's is ``DIR/twistd.pid``, and a one-file run under ``-n`` writes none (its parent has its pid).
        """
        from .daemon.lock import WatchDirTaken, lock_watch_dir
        from .logs import quiet_grpc_core, use_under_twistd

        quiet_grpc_core(self["log-level"])  # twistd and twist alike
        parent: Any = self.parent  # twistd's (or twist's) own options
        if "pidfile" in parent:  # twistd (`twist` has neither a pid file nor --logger)
            use_under_twistd(parent, self["log-level"])
            if parent["pidfile"] == TWISTD_PIDFILE and watch:
                parent["pidfile"] = os.path.join(os.path.abspath(watch), TWISTD_PIDFILE)
            elif parent["pidfile"] == TWISTD_PIDFILE and parent.get("nodaemon"):
                parent["pidfile"] = ""
        if watch:
            try:
                lock_watch_dir(watch)
            except (WatchDirTaken, OSError) as e:
                raise self.error("watch-dir", watch, str(e)) from None


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


def report_and_stop(outcome: Outcome, reactor: Any) -> None:
    """The daemon's end of its one input file: the outcome in the log, the exit status, the reactor stopped
    (unless a signal is stopping it already)."""
    if outcome.refusal is not None:  # refused before anything was sent, as the command line does
        log.error("{prog}: error: {message}", prog=command_name(), message=outcome.refusal)
    if outcome.summary is not None:
        log.info("{summary}", summary=outcome.summary)
    if outcome.benchmark is not None:
        log.info(BENCHMARK, **outcome.benchmark)
    set_exit_status(outcome.code)
    with contextlib.suppress(ReactorNotRunning):
        reactor.stop()


def hide_daemon_secrets(options: Options, config: Any) -> None:
    """The config's credentials out of every line the daemon logs (twistd's observers, ``--logger``, twist's);
    twistd starts its observers after :func:`makeService`, so lines logged before are hidden too."""
    from .logs import hide_in_logs, hide_in_twist
    from .redaction import Secrets

    hide_in_logs(Secrets.of(config))
    parent: Any = options.parent
    if parent is not None and "fileLogObserverFactory" in parent:
        hide_in_twist(parent)


def makeService(options: Options) -> service.MultiService:  # noqa: N802 - twistd's name
    """Wire the dashboard and the batch or watch-directory service around one registry; start nothing."""
    from twisted.internet import reactor

    from .daemon.service import WatchDirService
    from .logs import hide_also
    from .pipeline.engine import tune_gc

    try:
        config = options.config()
    except (ValueError, TypeError) as e:  # settings that do not fit together: nothing has started
        print(f"{command_name()}: error: {' '.join(str(e).splitlines())}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USAGE) from None
    if not options["watch-dir"]:
        from .storage.access import preflight

        problem = preflight(config)  # URLs and pipes: credentials, buckets, resume; before anything is sent
        if problem is not None:
            print(f"{command_name()}: error: {problem}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_USAGE)
    txaio.set_global_log_level("warn" if options["log-level"] == "warning" else options["log-level"])  # txaio's name
    hide_daemon_secrets(options, config)
    tune_gc()
    registry = BatchRegistry(reactor)
    work: service.Service
    if options["watch-dir"]:
        # the daemon waits through an outage however long: a file never goes to failed/ for one (issue 19)
        config = config.replace(outage_timeout=None) if config.outage_timeout else config
        work = WatchDirService(options["watch-dir"], config, reactor, registry, poll_interval=options["poll-interval"],
                               concurrent=options["concurrent-batches"], sidecar_allow=options["sidecar-allow"],
                               time_slice=options["file-time-slice"], hide=hide_also)
    else:
        work = OneBatchService(config, reactor, registry)
        work.when_finished().addCallback(report_and_stop, reactor)
    dashboard = None
    if options["dashboard"]:
        from .dashboard.listener import DashboardService

        dashboard = DashboardService(options["dashboard"], registry, reactor, token=options["dashboard-token"])
    return service_tree(work, dashboard)
