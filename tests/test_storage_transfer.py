"""storage.transfer: a call that never returns ends at its limit or on a cancel, for a synchronous
backend (a daemon thread nobody waits for) and an asynchronous one (a coroutine on fsspec's loop,
cancelled there). The time is a ``task.Clock`` where the reactor waits; real threads and loops."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import fsspec.asyn
import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock

from seldon_batch_tx.storage.transfer import TransferTimeout, call, deferred


class ThreadReactor(Clock):
    """A Clock whose ``callFromThread`` runs the call when the test pumps it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, tuple[Any, ...]]] = []
        self.lock = threading.Lock()

    def callFromThread(self, f: Any, *args: Any) -> None:  # noqa: N802 - Twisted's name
        with self.lock:
            self.calls.append((f, args))

    def pump(self) -> None:
        with self.lock:
            calls, self.calls = self.calls, []
        for f, args in calls:
            f(*args)


class StuckSync:
    """A synchronous backend whose ``put_file`` never returns (until released)."""

    async_impl = False

    def __init__(self) -> None:
        self.release = threading.Event()

    def put_file(self, *args: Any, **kwargs: Any) -> None:
        self.release.wait()


class StuckAsync:
    """An asynchronous backend (fsspec's loop) whose ``_put_file`` never returns; records a cancel."""

    async_impl = True

    def __init__(self) -> None:
        self.loop = fsspec.asyn.get_loop()
        self.cancelled = threading.Event()

    async def _put_file(self, *args: Any, **kwargs: Any) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


def test_a_blocking_call_that_never_returns_ends_at_its_limit() -> None:
    stuck = StuckSync()
    try:
        with pytest.raises(TransferTimeout, match="upload to x: no end after 0.1 s"):
            call(stuck, "put_file", "a", "b", timeout=0.1, what="upload to x")
    finally:
        stuck.release.set()
    cancelled = StuckAsync()
    with pytest.raises(TransferTimeout):
        call(cancelled, "put_file", "a", "b", timeout=0.2, what="upload to x")
    assert cancelled.cancelled.wait(10)  # asyncio.wait_for cancelled the coroutine on fsspec's loop


def test_a_thread_that_never_returns_fails_the_deferred_at_the_limit() -> None:
    reactor = ThreadReactor()
    stuck = StuckSync()
    failures: list[Any] = []
    d: Deferred[Any] = deferred(reactor, stuck, "put_file", "a", "b", timeout=30.0, what="upload to x")
    d.addErrback(failures.append)
    reactor.advance(34.0)
    assert not failures
    reactor.advance(2.0)  # the limit plus the grace for the backend to report it
    assert failures and failures[0].check(TransferTimeout)
    stuck.release.set()
    reactor.pump()  # the thread's late answer changes nothing
    assert len(failures) == 1 and not reactor.getDelayedCalls()


def test_a_cancel_ends_an_async_call_on_its_loop() -> None:
    reactor = ThreadReactor()
    stuck = StuckAsync()
    failures: list[Any] = []
    d: Deferred[Any] = deferred(reactor, stuck, "put_file", "a", "b", timeout=3600.0, what="upload to x")
    d.addErrback(failures.append)
    d.cancel()  # what Batch.stop does after --drain-timeout
    assert failures and failures[0].check(CancelledError)
    assert stuck.cancelled.wait(10)
    reactor.pump()
    assert len(failures) == 1 and not reactor.getDelayedCalls()


def test_errors_of_tasks_on_fsspecs_loop_go_to_the_debug_log_not_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    from seldon_batch_tx.storage.transfer import quiet_loop

    stuck = StuckAsync()
    quiet_loop(stuck)
    done = threading.Event()

    def fail_a_task() -> None:  # what aiohttp's body-writing task does when the store goes away
        stuck.loop.call_exception_handler({"message": "Task exception was never retrieved",
                                           "exception": ConnectionResetError("gone")})
        done.set()

    stuck.loop.call_soon_threadsafe(fail_a_task)
    assert done.wait(10)
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err and "never retrieved" not in captured.err, captured.err
