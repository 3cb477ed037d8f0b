"""Shared pytest fixtures.  Server logic lives in tests/servers.py."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.servers import SeldonServer, ensure_seldon_venv

if TYPE_CHECKING:
    from tests.test_daemon_real import Daemon


def pytest_configure(config: pytest.Config) -> None:
    """Children start with default signal dispositions however the suite was launched.

    A shell starts a background job (``cmd &`` in a script, some CI runners) with SIGINT ignored, and an
    ignored signal stays ignored across exec: every process a test starts would then ignore the Ctrl-C the
    test sends. A handler (unlike SIG_IGN) is reset to the default by exec, so the runner takes Python's
    usual one back.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(scope="session")
def seldon_venv() -> Path:
    """The python of `.venvs/seldon` (created by scripts/setup-seldon-venv.sh if missing)."""
    return ensure_seldon_venv()


@pytest.fixture(scope="session")
def seldon_server(seldon_venv: Path) -> Iterator[SeldonServer]:
    """The real Seldon microservice with EchoModel on 127.0.0.1, for the whole session."""
    with SeldonServer("EchoModel") as server:
        yield server

from tests.iris_sklearn import iris_models, iris_seldon  # noqa: E402, F401 (session fixtures: the sklearn iris models)
from tests.mlserver_servers import MLServerServer, ensure_mlserver_venv  # noqa: E402


@pytest.fixture(scope="session")
def mlserver_server() -> Iterator[MLServerServer]:
    """The real MLServer 1.7.1 serving the example V2 model ``echo`` on 127.0.0.1, for the whole session."""
    ensure_mlserver_venv()
    with MLServerServer() as server:
        yield server


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Real ``twistd`` daemons a test starts (append them); any still running at the end is killed."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(10)
