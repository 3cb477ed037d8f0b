"""A ``twistd --logger`` of an operator's, for tests/test_daemon_log_redaction.py: every event to the file
named by ``$SELDON_TEST_LOG_FILE``, each line prefixed ``custom:``."""

from __future__ import annotations

import os

from twisted.logger import FileLogObserver, ILogObserver, formatEvent

LOG_ENV = "SELDON_TEST_LOG_FILE"


def observer() -> ILogObserver:
    out = open(os.environ[LOG_ENV], "a", encoding="utf-8")  # noqa: SIM115 - open for the daemon's life
    return FileLogObserver(out, lambda event: f"custom: {formatEvent(event)}\n")
