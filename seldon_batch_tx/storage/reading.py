"""Inputs read in bounded memory, off the reactor thread.

The engine iterates its input synchronously (``readline(limit)``) on the reactor thread, so a
remote object is read by a background thread into a bounded queue of chunks (by default
4 x 8 MiB) and handed over through :class:`io.BufferedReader`: the C ``readline`` serves the
lines, the queue only sees one call per buffer. The reactor thread never makes an fsspec call;
it can only wait for a chunk the thread has not fetched yet, and that wait has a timeout.

The total line count: a remote object's *size* is known at once (one HEAD), so progress can
estimate the total from the bytes read so far (:meth:`InputSource.estimate_total`); the exact
count costs a full extra read of the object and is done only when asked (``count=True``:
``--resume`` and ``verify``/``merge --input`` need it to check indexes).
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import sys
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, BinaryIO

import attrs
import txaio

from . import transfer
from .paths import StorageError, StorageUnavailable, display, filesystem, first_line, is_remote, is_stdio, local_path

txaio.use_twisted()
log = txaio.make_logger()

CHUNK_BYTES = 8 << 20
QUEUE_CHUNKS = 4
#: The longest the reader waits for the next chunk before the read fails (a stalled store).
READ_TIMEOUT = 300.0
#: The longest opening an object (its size: one HEAD) may take.
INFO_TIMEOUT = 120.0
#: Standard input may idle longer (an upstream stage of the pipeline still working).
STDIN_TIMEOUT = 3600.0
_STOP_POLL = 0.5  # how often a producer blocked on a full queue checks whether it was closed


class ChunkQueueRaw(io.RawIOBase):
    """A raw stream fed by a producer thread that reads ``chunk_bytes`` at a time from
    ``read(n)`` into a queue of at most ``depth`` chunks.

    The producer stops at EOF, at its first error (re-raised to the reader) or on :meth:`close`.
    """

    def __init__(self, read: Callable[[int], bytes], *, chunk_bytes: int = CHUNK_BYTES,
                 depth: int = QUEUE_CHUNKS, timeout: float = READ_TIMEOUT, name: str = "input",
                 on_close: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._source_read = read
        self._chunk_bytes = chunk_bytes
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=depth)
        self._timeout = timeout
        self._name = name
        self._on_close = on_close
        self._stop = threading.Event()
        self._current = memoryview(b"")
        self._eof = False
        self.bytes_read = 0  # handed to the reader so far
        self._thread = threading.Thread(target=self._produce, name=f"prefetch {name}", daemon=True)
        self._thread.start()

    def readable(self) -> bool:
        return True

    def _put(self, item: bytes | BaseException) -> bool:
        """Queue ``item``; False when closed meanwhile. Bounded: one try per poll until closed."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_STOP_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                chunk = self._source_read(self._chunk_bytes)
                if not self._put(bytes(chunk)) or not chunk:
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the reader, raised there
            self._put(e)

    def has_data(self) -> bool:
        """Whether a read would return without waiting for the producer."""
        return bool(self._current) or self._eof or not self._queue.empty()

    def readinto(self, buffer: Any) -> int:
        if not self._current:
            if self._eof:
                return 0
            item = self._next_chunk()
            if item is None:  # closed while waiting: the reader ends
                self._eof = True
                return 0
            if isinstance(item, BaseException):
                self._eof = True
                raise StorageError(f"{self._name}: read failed: {type(item).__name__}: "
                                   f"{str(item).splitlines()[0][:200] if str(item) else ''}") from item
            if not item:
                self._eof = True
                return 0
            self._current = memoryview(item)
        n = min(len(buffer), len(self._current))
        buffer[:n] = self._current[:n]
        self._current = self._current[n:]
        self.bytes_read += n
        return n

    def _next_chunk(self) -> bytes | BaseException | None:
        """The producer's next chunk; None once closed (checked every poll, so a close from another
        thread ends a read that waits on a quiet pipe); StorageError past the timeout."""
        waited = 0.0
        while not self._stop.is_set():
            try:
                return self._queue.get(timeout=_STOP_POLL)
            except queue.Empty:
                waited += _STOP_POLL
                if waited >= self._timeout:
                    raise StorageError(f"{self._name}: no data from the store for {self._timeout:.0f} s") from None
        return None

    def close(self) -> None:
        """Stop the producer (within its poll interval plus one chunk's read) and free the queue."""
        if self.closed:
            return
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:  # bounded by the queue's depth: the producer puts nothing once stopped
                self._queue.get_nowait()
        self._thread.join(timeout=_STOP_POLL * 4)
        self._current = memoryview(b"")
        if self._on_close is not None:
            with contextlib.suppress(Exception):
                self._on_close()
        super().close()


def prefetching(read: Callable[[int], bytes], *, name: str = "input", chunk_bytes: int = CHUNK_BYTES,
                depth: int = QUEUE_CHUNKS, timeout: float = READ_TIMEOUT, buffer_bytes: int = 1 << 20,
                on_close: Callable[[], None] | None = None) -> io.BufferedReader:
    """A file-like (``readline(limit)``, ``read(n)``, iteration) over ``read`` run in a thread."""
    raw = ChunkQueueRaw(read, chunk_bytes=chunk_bytes, depth=depth, timeout=timeout, name=name,
                        on_close=on_close)
    return io.BufferedReader(raw, buffer_size=buffer_bytes)


@attrs.define
class InputSource:
    """An opened input: its ``stream``, the object's ``size`` in bytes (None for stdin) and its
    exact ``total_lines`` when it was counted (else None)."""

    path: str
    stream: BinaryIO
    size: int | None
    total_lines: int | None = None

    def bytes_read(self) -> int:
        """Bytes the reader has taken so far (for a progress estimate)."""
        raw = getattr(self.stream, "raw", None)
        if isinstance(raw, ChunkQueueRaw):
            return raw.bytes_read
        with contextlib.suppress(OSError, ValueError):
            return self.stream.tell()
        return 0

    def estimate_total(self, lines_read: int) -> int | None:
        """The exact count when known; else ``lines_read`` scaled by size over bytes read."""
        if self.total_lines is not None:
            return self.total_lines
        done = self.bytes_read()
        if self.size is None or done <= 0 or lines_read <= 0:
            return None
        return max(lines_read, round(lines_read * self.size / done))

    def close(self) -> None:
        raw = getattr(self.stream, "raw", None)
        if isinstance(raw, ChunkQueueRaw):
            raw.close()  # first: a reader thread waiting inside the buffered stream holds its lock
        self.stream.close()

    def __enter__(self) -> InputSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def count_stream_lines(stream: BinaryIO, chunk_bytes: int = 1 << 20) -> int:
    """Lines in ``stream`` (a last line without newline counts), read ``chunk_bytes`` at a time."""
    total, last = 0, b"\n"
    while chunk := stream.read(chunk_bytes):
        total += chunk.count(b"\n")
        last = chunk[-1:]
    return total + (0 if last == b"\n" else 1)


def _open_remote(path: str, options: dict[str, Any] | None, **prefetch: Any) -> tuple[BinaryIO, int | None]:
    fs, rpath = filesystem(path, options)
    try:  # one HEAD, bounded like the checks before a run (a store that never answers)
        info = transfer.call(fs, "info", rpath, timeout=INFO_TIMEOUT, what=f"the size of {display(path)}")
    except FileNotFoundError:
        raise StorageError(f"{display(path)} does not exist") from None
    except PermissionError as e:
        raise StorageError(f"{display(path)}: access denied ({_reason(e)})") from None
    except Exception as e:  # noqa: BLE001 - unreachable, no credentials...: one line, exit 3
        reason = str(e) if isinstance(e, StorageError) else first_line(e)
        raise StorageUnavailable(f"cannot read {display(path)}: {reason}") from None
    if info.get("type") == "directory":
        raise StorageError(f"{display(path)} is a directory, not an object")
    size = info.get("size")
    # cache_type "none": each read is one ranged GET of a whole chunk, nothing cached twice
    handle = fs.open(rpath, "rb", block_size=prefetch.get("chunk_bytes", CHUNK_BYTES), cache_type="none")
    stream = prefetching(handle.read, name=display(path), on_close=handle.close, **prefetch)
    return stream, size if isinstance(size, int) else None


def _reason(error: BaseException) -> str:
    text = str(error).splitlines()
    return text[0][:200] if text and text[0] else type(error).__name__


def open_input(path: str, options: dict[str, Any] | None = None, *, count: bool = False,
               stdin: BinaryIO | None = None, **prefetch: Any) -> InputSource:
    """Open ``-`` (standard input), a local path or an fsspec URL for reading lines.

    ``count=True`` also counts the lines first (a full extra read for remote objects; refused
    for stdin, which can be read only once). Blocking: call it before the reactor runs or from
    a thread (``deferToThread``).
    """
    if is_stdio(path):
        if count:
            raise StorageError("the line count of standard input (-i -) is not known in advance; "
                               "--resume and --input need a file or a URL")
        if stdin is not None:  # read1: what the pipe holds now, so trickling lines are not held back
            read = getattr(stdin, "read1", stdin.read)
        else:  # the descriptor itself: a read blocked in the thread holds no lock of sys.stdin's, which
            fd = sys.stdin.fileno()  # the interpreter would wait for at exit (after a SIGTERM)
            read = partial(os.read, fd)
        prefetch.setdefault("timeout", STDIN_TIMEOUT)
        return InputSource(path, prefetching(read, name="standard input", **prefetch), None)
    if not is_remote(path):
        local = local_path(path)
        total = None
        if count:
            with open(local, "rb") as f:
                total = count_stream_lines(f)
        return InputSource(path, open(local, "rb", buffering=1 << 20), os.path.getsize(local), total)  # noqa: SIM115
    total = None
    if count:
        stream, _ = _open_remote(path, options, **prefetch)
        with stream:
            total = count_stream_lines(stream)
    stream, size = _open_remote(path, options, **prefetch)
    log.info("reading {path} ({size} bytes) through a {depth} x {chunk} byte prefetch queue",
             path=display(path), size=size, depth=prefetch.get("depth", QUEUE_CHUNKS),
             chunk=prefetch.get("chunk_bytes", CHUNK_BYTES))
    return InputSource(path, stream, size, total)


def count_local_lines(path: str, chunk_size: int = 1 << 20) -> int:
    """Count a local file's lines cheaply (a trailing line without newline counts) for progress."""
    with open(path, "rb") as f:
        return count_stream_lines(f, chunk_size)


def count_lines(path: str, options: dict[str, Any] | None = None) -> int:
    """The line count of a local file or an object (one streamed pass, bounded memory)."""
    with open_input(path, options) as source:
        return count_stream_lines(source.stream)
