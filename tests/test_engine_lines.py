"""--max-line-bytes: the reader never holds an over-long line whole, and numbering stays the same.

The memory test reads a 200 MB line from a stream that makes its bytes on demand, so it needs no
disk space and shows that the reader's peak allocation is its skip chunk, not the line.
"""

from __future__ import annotations

import io
import json
import tracemalloc
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.exits import EXIT_FAILED_LINES
from seldon_batch_tx.outputs.writer import LineWriter
from seldon_batch_tx.pipeline.engine import BatchRun
from seldon_batch_tx.pipeline.reader import DEFAULT_MAX_LINE_BYTES, instance_id, read_items
from seldon_batch_tx.pipeline.stats import BatchStats
from seldon_batch_tx.pipeline.summary import Summary


class Generated(io.RawIOBase):
    """A read-only stream of ``head``, then ``size`` bytes of ``fill`` made on demand, then ``tail``."""

    def __init__(self, head: bytes, size: int, tail: bytes, fill: bytes = b"7") -> None:
        self.parts = [head, None, tail]
        self.left = size
        self.fill = fill

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        while self.parts:
            part = self.parts[0]
            if part is None:
                if self.left:
                    n = min(len(view), self.left)
                    view[:n] = self.fill * n
                    self.left -= n
                    return n
                self.parts.pop(0)
                continue
            if part:
                n = min(len(view), len(part))
                view[:n] = part[:n]
                self.parts[0] = part[n:]
                return n
            self.parts.pop(0)
        return 0


def items(data: bytes, limit: int, **kw: object) -> list[tuple[int, bytes, int]]:
    got = read_items(io.BufferedReader(io.BytesIO(data)), "B", max_line_bytes=limit, **kw)  # type: ignore[arg-type]
    return [(i.index, i.line, i.oversize) for i in got]


def test_the_default_limit_is_the_configs() -> None:
    config = BatchConfig(deployment_name="d", input_data_path="i", output_data_path="o")
    assert config.max_line_bytes == DEFAULT_MAX_LINE_BYTES


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_limits_are_exact_and_numbering_continues(ending: bytes) -> None:
    """A line of exactly the limit passes; one byte more is oversize with its true length; the
    lines after it keep their numbers; small skip chunks give the same result."""
    cr = len(ending) - 1  # a CR before the newline is part of the line's bytes
    data = b"1234" + ending + b"12345" + ending + b"x" * 100 + ending + b"[1]" + ending + b"123456"
    for chunk in (1, 3, 1 << 20):
        assert items(data, 4 + cr, skip_chunk=chunk) == [
            (0, b"1234", 0), (1, b"", 5 + cr), (2, b"", 100 + cr), (3, b"[1]", 0), (4, b"", 6)]


def test_an_oversize_last_line_without_newline_and_filters() -> None:
    """``wanted`` (resume, shards) sees every index; an unwanted long line is still skipped over."""
    data = b"a" * 50 + b"\n" + b"[2]\n" + b"b" * 30
    assert items(data, 10, wanted=lambda i: i != 0) == [(1, b"[2]", 0), (2, b"", 30)]
    assert items(data, 10, wanted=lambda i: i == 0) == [(0, b"", 50)]
    with pytest.raises(ValueError):
        items(data, 0)


def test_a_200_mb_line_is_never_held() -> None:
    """A 200 MB line between two short ones, read with a 1 MiB limit: the peak allocation stays a
    few MiB (the skip chunk and the stream's buffer), not the line."""
    size = 200 * (1 << 20)
    stream = io.BufferedReader(Generated(b"[1]\n", size, b"\n[3]\n"), buffer_size=1 << 16)
    tracemalloc.start()
    try:
        got = [(i.index, i.line, i.oversize) for i in read_items(stream, "B", max_line_bytes=1 << 20)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == [(0, b"[1]", 0), (1, b"", size), (2, b"[3]", 0)]
    assert peak < 8 * (1 << 20), f"peak {peak} bytes while skipping a {size}-byte line"


def test_an_oversize_line_through_the_engine(tmp_path: Path) -> None:
    """From a real file: the long line is an input_too_large line, the others are answered."""
    source = tmp_path / "in.txt"
    source.write_bytes(b"[[1]]\n[[" + b"2," * 400 + b"2]]\n[[3]]\n")
    config = BatchConfig(deployment_name="d", input_data_path=str(source), output_data_path=str(tmp_path / "out"),
                         batch_id="B", max_line_bytes=100)

    class Echo:
        def start(self) -> None:
            pass

        def stop(self) -> Deferred[None]:
            return succeed(None)

        def send(self, body: dict, puid: str) -> Deferred[dict]:
            return succeed(body)

    writer = LineWriter(config.output_data_path)
    clock = Clock()
    with open(source, "rb") as stream:
        run = BatchRun(config, read_items(stream, "B", max_line_bytes=config.max_line_bytes), Echo(), writer,
                       BatchStats("B", "in", total=3), clock)
        d = Deferred.fromCoroutine(run.run())
        got: list[Summary] = []
        d.addCallback(got.append)
    writer.close()
    assert got and got[0].exit_code == EXIT_FAILED_LINES
    lines = {x["meta"]["tags"]["batch_index"]: x for x in map(json.loads, (tmp_path / "out").read_text().splitlines())}
    assert sorted(lines) == [0, 1, 2]
    assert lines[1]["status"]["info"] == "input_too_large"
    assert lines[1]["status"]["reason"] == "line 2 is 805 bytes, over --max-line-bytes 100"
    assert lines[1]["meta"]["tags"]["batch_instance_id"] == instance_id("B", 1)
    assert lines[2]["data"] == {"ndarray": [[3]]}


def test_a_byte_order_mark_opening_the_file_is_not_data() -> None:
    """Dropped from the first line only, whatever the data type reads from it (``-a str`` too)."""
    assert items(b"\xef\xbb\xbfhello\n\xef\xbb\xbf[2]\n", 100) == [
        (0, b"hello", 0), (1, b"\xef\xbb\xbf[2]", 0)]
