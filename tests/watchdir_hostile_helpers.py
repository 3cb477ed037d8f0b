"""What the hostile watch-directory tests share: a daemon on a Clock with an in-memory model, a deadline
to step it to, the reasons and requests it leaves, the events it logs, and this process's open files.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from tests.test_watchdir import Daemon, EchoModel


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail instead of hanging: a blocking open() of a FIFO is interrupted by SIGALRM."""
    def expired(_sig: int, _frame: Any) -> None:
        raise TimeoutError(f"blocked for more than {seconds} s")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    """Every log event emitted while the test runs."""
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)


def make(tmp_path: Path, **kw: Any) -> Daemon:
    daemon = Daemon(tmp_path / "watch", Clock(), EchoModel(), **kw)
    for sub in ("incoming", "processing", "done", "failed"):
        daemon.path(sub).mkdir(parents=True, exist_ok=True)
    return daemon


def stop(daemon: Daemon) -> None:
    if daemon.service.running:
        daemon.service.stopService()
        daemon.pump(seconds=6)


def reason(daemon: Daemon, name: str) -> str:
    return daemon.path("failed", name + ".reason.txt").read_text()
