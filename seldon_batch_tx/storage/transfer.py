"""Uploads and downloads that end: an overall time limit, and a cancel the reactor can give.

A thread cannot be killed, so a store that never answers (a PUT whose ``Expect: 100-continue``
is never answered, a server that reads and stays silent) would hold a thread, and a run waiting
for it, for ever. For fsspec's asynchronous backends (s3fs, gcsfs, adlfs) the call runs as a
coroutine on fsspec's own event loop: the time limit and a cancel end it there and close its
connection. Other backends run in a daemon thread that the caller stops waiting for at the limit
(the process can still exit). botocore's own connect/read timeouts and retries are bounded too
(:func:`.paths.storage_options`), so an abandoned call ends by itself soon after.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import txaio
from twisted.internet.defer import CancelledError, Deferred

from .paths import StorageError

txaio.use_twisted()
log = txaio.make_logger()

T = TypeVar("T")

#: The default overall limit of one upload or download (``--storage-timeout``), in seconds.
TRANSFER_TIMEOUT = 1800.0
#: What a blocking caller waits past the limit for the backend to report it (it then stops waiting).
_LATE = 5.0


class TransferTimeout(StorageError):
    """An upload or download that did not end within its time limit (it was cancelled)."""


def start(fs: Any, method: str, *args: Any, timeout: float, **kwargs: Any) -> concurrent.futures.Future[Any]:
    """``fs.<method>(*args, **kwargs)`` started off the calling thread; its future.

    Cancelling the future ends an asynchronous backend's call at once (fsspec's loop cancels the
    coroutine); ``timeout`` bounds it there as well. A synchronous backend's call runs on in its
    daemon thread: only waiting for it can stop.
    """
    if _is_async(fs, method):
        quiet_loop(fs)
        coroutine = getattr(fs, f"_{method}")
        return asyncio.run_coroutine_threadsafe(asyncio.wait_for(coroutine(*args, **kwargs), timeout), fs.loop)
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    call: Callable[..., Any] = getattr(fs, method)

    def work() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = call(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits
            future.set_exception(e)
        else:
            future.set_result(result)

    threading.Thread(target=work, name=f"storage {method}", daemon=True).start()
    return future


def quiet_loop(fs: Any) -> None:
    """Route what fsspec's loop would print as a traceback (aiohttp's body-writing task failing when
    a store goes away mid-request: "Task exception was never retrieved") to the debug log: the
    call's own failure is already the run's one line. A no-op for synchronous backends."""
    loop = getattr(fs, "loop", None) if getattr(fs, "async_impl", False) else None
    if isinstance(loop, asyncio.AbstractEventLoop) and loop.get_exception_handler() is not _log_loop_error:
        loop.call_soon_threadsafe(loop.set_exception_handler, _log_loop_error)


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    error = context.get("exception")
    log.debug("storage loop: {message} ({error})", message=context.get("message", ""),
              error=f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
              if error is not None else "")


def _is_async(fs: Any, method: str) -> bool:
    return bool(getattr(fs, "async_impl", False) and hasattr(fs, f"_{method}") and getattr(fs, "loop", None))


def call(fs: Any, method: str, *args: Any, timeout: float, what: str, **kwargs: Any) -> Any:
    """:func:`start`, then wait at most ``timeout`` (blocking: for threads and the tools).

    :class:`TransferTimeout` (``what`` names it: "upload to s3://b/k") past the limit.
    """
    future = start(fs, method, *args, timeout=timeout, **kwargs)
    try:  # an asynchronous backend ends the call itself at the limit; a thread is waited for no longer
        return future.result(timeout + (_LATE if _is_async(fs, method) else 0.0))
    except TimeoutError:  # ours, or asyncio.wait_for's (one class since Python 3.11)
        future.cancel()
        raise _late(what, timeout) from None


def deferred(reactor: Any, fs: Any, method: str, *args: Any, timeout: float, what: str,
             **kwargs: Any) -> Deferred[Any]:
    """:func:`start` as a Deferred fired on the reactor thread; cancelling it cancels the call.

    A timeout (the backend's or ours, for a thread that does not return) fails it with
    :class:`TransferTimeout`; a cancel with :class:`twisted.internet.defer.CancelledError`.
    """
    future = start(fs, method, *args, timeout=timeout, **kwargs)

    def cancel(_: Deferred[Any]) -> None:
        future.cancel()

    result: Deferred[Any] = Deferred(cancel)

    def done(f: concurrent.futures.Future[Any]) -> None:
        reactor.callFromThread(_deliver, result, f, what, timeout)

    future.add_done_callback(done)
    late = reactor.callLater(timeout + _LATE, _expire, result, future, what, timeout)  # a thread that never returns
    result.addBoth(_cancel_call, late)
    return result


def _expire(result: Deferred[Any], future: concurrent.futures.Future[Any], what: str, timeout: float) -> None:
    future.cancel()
    if not result.called:
        result.errback(_late(what, timeout))


def _late(what: str, timeout: float) -> TransferTimeout:
    return TransferTimeout(f"{what}: no end after {timeout:g} s (--storage-timeout)")


def _cancel_call(value: Any, call: Any) -> Any:
    if call.active():
        call.cancel()
    return value


def _deliver(result: Deferred[Any], future: concurrent.futures.Future[Any], what: str, timeout: float) -> None:
    if result.called:  # cancelled meanwhile: the Deferred already failed with CancelledError
        return
    if future.cancelled():
        result.errback(_late(what, timeout))
        return
    error = future.exception()
    if isinstance(error, asyncio.TimeoutError):
        result.errback(_late(what, timeout))
    elif isinstance(error, asyncio.CancelledError):
        result.errback(CancelledError())
    elif error is not None:
        result.errback(error)
    else:
        result.callback(future.result())
