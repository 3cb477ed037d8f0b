"""Logging that honours ``--log-level``.

txaio's loggers replace the methods below the current level with no-ops, so a debug call on
the per-request path costs nothing when debug is off (no formatting, no event dict). Events go
through ``twisted.logger`` to stderr; stdout stays free for the summary. The run's credentials
(:func:`hide_in_logs`) are replaced in every line, debug lines quoting a server's answer included.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, TextIO

import txaio
from tqdm import tqdm
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LegacyLogObserverWrapper,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    eventAsText,
    globalLogBeginner,
    textFileLogObserver,
)
from zope.interface import implementer

from .redaction import Secrets

txaio.use_twisted()

#: Credentials no log line may show (:func:`hide_in_logs`, :func:`hide_also`); empty: nothing is searched.
_hidden = Secrets()
_run = Secrets()


def hide_in_logs(secrets: Secrets) -> None:
    """From now on, replace the run's ``secrets`` in every line :func:`start_logging` writes."""
    global _hidden, _run
    _hidden = _run = secrets


def hide_also(secrets: Secrets) -> None:
    """Replace ``secrets`` too, besides the run's, until the next call (the daemon: those of the files
    running, which a sidecar may bring; they are dropped when the file ends)."""
    global _hidden
    _hidden = Secrets((*_run.values, *secrets.values)) if secrets else _run


#: What an event rewritten by :func:`without_secrets` keeps besides its text (the line's time, level, source).
_KEPT = ("log_time", "log_level", "log_namespace", "log_system")


def without_secrets(observer: ILogObserver) -> ILogObserver:
    """``observer`` behind the credentials of :func:`hide_in_logs`: for the daemon, whose log goes to
    twistd's observers, not through :class:`_AroundBars`. An event whose text (traceback included)
    quotes one reaches ``observer`` as that text with ``[redacted]``; other events pass untouched.
    Costs one formatting of the event while there are credentials, nothing otherwise."""

    @implementer(ILogObserver)
    def hiding(event: dict[str, Any]) -> None:
        hidden = _hidden
        if hidden:
            text = eventAsText(event, includeTimestamp=False, includeSystem=False)
            clean = hidden.text(text)
            if clean != text:
                event = {key: event[key] for key in _KEPT if key in event}
                event["log_format"] = clean.replace("{", "{{").replace("}", "}}")
        observer(event)

    return hiding  # type: ignore[return-value]


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


#: twisted.internet's own lines for every listening port ("QuietSite starting on 8080", "(TCP Port 8080 Closed)").
_PORT_CHATTER = re.compile(r"\S+ starting on \S+|\((?:TCP |UNIX |UDP )?Port \S+ Closed\)")


def _not_port_chatter(event: dict[str, Any]) -> PredicateResult:
    """Drop the legacy info lines a listening port logs when it opens and closes: the dashboard says where
    it listens in a line of its own."""
    if event.get("log_namespace") == "log_legacy" and event.get("log_level") == LogLevel.info:
        message = event.get("message") or ()
        if _PORT_CHATTER.fullmatch(" ".join(str(part) for part in message)):
            return PredicateResult.no
    return PredicateResult.maybe


#: What :func:`twistd_observer` needs: twistd's options and ``--log-level`` (set while the options are parsed).
_TWISTD: dict[str, Any] = {}


def quiet_grpc_core(level: str) -> None:
    """gRPC's C core logs to stderr in its own format (an ``I1205 ...`` line per failed TLS handshake):
    only its errors unless ``--log-level debug`` or ``$GRPC_VERBOSITY`` asks for more. Read when grpc
    starts, so called before any channel exists."""
    if level != "debug":
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def use_under_twistd(server_options: Any, level: str) -> None:
    """Make twistd log through :func:`twistd_observer`; a ``--logger`` given is still used, behind
    :func:`without_secrets` (one that does not import is left to twistd to report)."""
    given = server_options.get("logger")
    if given is not None:
        from twisted.python.reflect import namedAny

        try:
            _TWISTD["logger"] = namedAny(given)
        except (ImportError, AttributeError, ValueError):  # twistd says "Logger ... could not be imported"
            return
    _TWISTD.update(options=server_options, level="warn" if level == "warning" else level)
    server_options["logger"] = f"{__name__}.twistd_observer"  # twistd imports it by name


def twistd_observer() -> ILogObserver:
    """twistd's own log observer (``--logfile``, ``--syslog``, ``-n``: the one it would have made), with
    ``--log-level`` applied to every event, without the listening ports' chatter and the run's credentials;
    or the ``--logger`` given, without the credentials only."""
    from twisted.scripts._twistd_unix import UnixAppLogger  # what twistd itself uses on this platform

    given = _TWISTD.get("logger")
    made = given() if given is not None else UnixAppLogger(_TWISTD["options"])._getLogObserver()
    base: ILogObserver = made if ILogObserver.providedBy(made) else LegacyLogObserverWrapper(made)
    if given is not None:
        return without_secrets(base)
    level = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(_TWISTD["level"]))
    return FilteringLogObserver(without_secrets(base), [level, _not_port_chatter])  # type: ignore[list-item]


def hide_in_twist(twist_options: Any) -> None:
    """``twist seldon-batch``: its file log observer (``--log-file``, ``--log-format``) behind
    :func:`without_secrets`; twist has no ``--logger``, and picks its factory before the service is made."""
    factory = twist_options.get("fileLogObserverFactory")
    if factory is not None:
        twist_options["fileLogObserverFactory"] = lambda out: without_secrets(factory(out))


def start_logging(level: str, out: TextIO | None = None) -> None:
    """Send structured log events at ``level`` and above to ``out`` (stderr by default)."""
    quiet_grpc_core(level)
    level = "warn" if level == "warning" else level  # txaio and twisted.logger spell it "warn"
    txaio.set_global_log_level(level)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    stream = _AroundBars(out or sys.stderr)
    observer = FilteringLogObserver(textFileLogObserver(stream), [predicate, _not_reactor_chatter, _not_port_chatter])  # type: ignore[arg-type,list-item]
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
