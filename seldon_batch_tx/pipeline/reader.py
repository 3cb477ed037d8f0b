"""Input lines to work items, lazily, so memory stays flat whatever the file size."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import Any, BinaryIO

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from ..core.items import Item

#: ``--max-line-bytes`` default (as ``BatchConfig.max_line_bytes``): longer lines are never held whole.
DEFAULT_MAX_LINE_BYTES = 64 << 20
#: The UTF-8 byte order mark some editors put at the start of a file.
BOM = b"\xef\xbb\xbf"
#: The most an input read on a thread (``-i -``, a URL) is read ahead of the engine, in bytes of
#: lines (a unit of ``--batch-size`` lines is always let through): long lines never multiply it.
READ_AHEAD_BYTES = 32 << 20
#: Piece size used to skip the rest of an over-long line: the most the reader holds of it at once.
SKIP_CHUNK_BYTES = 1 << 20

_INSTANCE_NAMESPACE = uuid.UUID("6f1c3bde-5a43-4c57-9d0e-2f4f1b7d9a10")
#: A UUID's variant nibble (RFC 4122: 10xx) for each hex digit of the hash it replaces.
_VARIANT = {f"{n:x}": f"{(n & 0x3) | 0x8:x}" for n in range(16)}


def instance_id(batch_id: str, index: int) -> str:
    """A datapoint id that is unique per line yet the same on every retry or resumed run."""
    return str(uuid.uuid5(_INSTANCE_NAMESPACE, f"{batch_id}/{index}"))


def instance_ids(batch_id: str) -> Callable[[int], str]:
    """A fast :func:`instance_id` for one batch: the SHA-1 of the shared prefix is computed once.

    Same value as ``uuid5`` (version and variant set on the hex digits), about 4x cheaper per line.
    """
    prefix = hashlib.sha1(_INSTANCE_NAMESPACE.bytes + f"{batch_id}/".encode(), usedforsecurity=False)

    def make(index: int) -> str:
        digest = prefix.copy()
        digest.update(b"%d" % index)
        h = digest.hexdigest()
        return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"

    return make


def read_items(
    stream: BinaryIO, batch_id: str, wanted: Callable[[int], bool] | None = None, *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, skip_chunk: int = SKIP_CHUNK_BYTES,
) -> Iterator[Item]:
    """Yield one item per line; ``wanted`` skips lines already done (resume) or of other shards.

    Lines are read with ``readline(limit)``, so a line longer than ``max_line_bytes`` (newline
    excluded) is never held whole: the rest of it is skipped in ``skip_chunk`` pieces up to its
    newline and it is yielded as an item with ``oversize`` set, for the engine's error line.
    Numbering counts every line, long or not, so resume and shard filters see the same indexes.
    A UTF-8 byte order mark opening the stream is dropped.
    """
    if max_line_bytes < 1:
        raise ValueError(f"max_line_bytes must be at least 1, got {max_line_bytes}")
    make_id = instance_ids(batch_id)
    readline = stream.readline
    limit = max_line_bytes
    # limit + 1 bytes: a line of exactly ``limit`` bytes still arrives whole with its newline
    for index, raw in enumerate(iter(partial(readline, limit + 1), b"")):
        oversize = 0
        if len(raw) > limit and raw[limit] != 0x0A:  # limit + 1 bytes and no newline: too long
            oversize = len(raw)
            raw = b""
            while True:  # bounded: every pass consumes input or ends at EOF
                piece = readline(skip_chunk)
                if not piece:
                    break
                if piece[-1] == 0x0A:
                    oversize += len(piece) - 1
                    break
                oversize += len(piece)
        elif not index and raw.startswith(BOM):
            raw = raw[len(BOM):]  # a UTF-8 byte order mark is not data, whatever the data type
        if wanted is not None and not wanted(index):
            continue
        if oversize:
            yield Item(index, make_id(index), b"", oversize)
        else:
            yield Item(index, make_id(index), raw.rstrip(b"\r\n"))


def chunked(items: Iterator[Item], size: int, max_bytes: int | None = None) -> Iterator[list[Item]]:
    """Group items into mini-batches of at most ``size`` lines, closed early once they hold ``max_bytes``
    (``--max-bytes-in-flight``: no one request holds more than that and one line)."""
    if size == 1:
        for item in items:
            yield [item]
        return
    chunk: list[Item] = []
    held = 0
    for item in items:
        chunk.append(item)
        held += len(item.line)
        if len(chunk) == size or (max_bytes is not None and held >= max_bytes):
            yield chunk
            chunk, held = [], 0
    if chunk:
        yield chunk


class OffThreadItems:
    """Items read on a thread, for inputs that may stall (a pipe, an object store).

    The engine iterates a local file on the reactor thread (a read never waits long); a pipe can go
    quiet for minutes, and a read waiting there would freeze the reactor: no answers written, no
    dashboard, no signal handled. Here a daemon thread reads items into a bounded buffer and the
    engine takes whatever whole units are there, waiting (without blocking) when there are none;
    :meth:`cancel` (a stop) ends the wait and leaves a blocked read behind.
    """

    def __init__(self, items: Iterator[Item], reactor: Any, unit: int, lines: int = 512,
                 max_bytes: int = READ_AHEAD_BYTES) -> None:
        self._items = items
        self._reactor = reactor
        self._unit = unit
        self._block = unit * max(1, lines // unit)
        self._max_bytes = max_bytes
        self._ready = threading.Condition()
        self._buffer: deque[Item] = deque()
        self._bytes = 0  # held in the buffer (lines plus a little per item)
        self._ended: Failure | bool = False  # True at the input's end, a Failure when reading failed
        self._cancelled = False
        self._waiting: Deferred[None] | None = None

    async def blocks(self) -> AsyncIterator[list[Item]]:
        """The input's items in whole units, as they arrive, until it ends or :meth:`cancel`."""
        threading.Thread(target=self._read, name="seldon-batch-input", daemon=True).start()
        while not self._cancelled:
            with self._ready:
                block = self._take()
                ended = self._ended
                waiting: Deferred[None] | None = None
                if not block and not ended:
                    waiting = self._waiting = Deferred()
                self._ready.notify()
            if block:
                yield block
            elif isinstance(ended, Failure):
                ended.raiseException()
            elif ended:
                return
            elif waiting is not None:
                with contextlib.suppress(CancelledError):
                    await waiting

    def _take(self) -> list[Item]:
        """(Under the lock.) Whole units (the rest at the end), at most a block of lines and, past
        the first unit, half the byte budget: the engine holds a block while it starts its units."""
        whole = len(self._buffer) if self._ended else len(self._buffer) // self._unit * self._unit
        block: list[Item] = []
        taken = 0
        while len(block) < min(whole, self._block) and (not block or taken < self._max_bytes // 2):
            for _ in range(min(self._unit, whole - len(block))):
                item = self._buffer.popleft()
                size = _held(item)
                taken += size
                self._bytes -= size
                block.append(item)
        return block

    def _full(self) -> bool:
        """(Under the lock.) Whether the reader must wait: two blocks of lines, or the byte budget
        once a whole unit is there (a unit is always let through, whatever its size)."""
        held = len(self._buffer)
        return held >= 2 * self._block or (self._bytes >= self._max_bytes and held >= self._unit)

    def cancel(self) -> None:
        with self._ready:
            self._cancelled = True
            waiting, self._waiting = self._waiting, None
            self._ready.notify()
        if waiting is not None and not waiting.called:
            waiting.cancel()

    def _read(self) -> None:
        try:
            for item in self._items:
                with self._ready:
                    while self._full() and not self._cancelled:
                        self._ready.wait(0.5)  # bounded: the engine takes a block at a time
                    if self._cancelled:
                        return
                    self._buffer.append(item)
                    self._bytes += _held(item)
                    self._wake()
            ended: Failure | bool = True
        except Exception:  # noqa: BLE001 - handed to the engine, which stops the run with it
            ended = Failure()
        with self._ready:
            self._ended = ended
            self._wake()

    def _wake(self) -> None:
        """(Under the lock.) Tell the engine there is something to take, if it is waiting."""
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            self._reactor.callFromThread(_fire, waiting)


def _held(item: Item) -> int:
    """What ``item`` costs in the read-ahead buffer: its line and the object around it."""
    return len(item.line) + 200


def _fire(d: Deferred[None]) -> None:
    if not d.called:  # a stop may have cancelled it meanwhile
        d.callback(None)
