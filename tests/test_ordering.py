"""--ordered: the reorder buffer writes in input order, stays bounded, and makes reading wait."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.core.failures import RequestFailed
from seldon_batch_tx.outputs.writer import LineWriter
from seldon_batch_tx.pipeline.engine import BatchRun, reorder_window
from seldon_batch_tx.pipeline.ordering import ReorderBuffer
from seldon_batch_tx.pipeline.reader import read_items
from seldon_batch_tx.pipeline.stats import BatchStats


def test_units_are_written_in_order() -> None:
    """A unit that finishes early waits for the earlier ones, then all go out in order."""
    written: list[Any] = []
    buffer = ReorderBuffer(4, written.append)
    buffer.put(2, [{"i": 2}])
    buffer.put(1, [{"i": 1}, {"i": 1.5}])
    assert written == [] and buffer.buffered == 2
    buffer.put(0, [])
    assert written == [{"i": 1}, {"i": 1.5}, {"i": 2}] and buffer.buffered == 0 and buffer.next == 3
    with pytest.raises(ValueError):
        buffer.put(1, [])


def test_room_waits_until_the_window_moves() -> None:
    """Unit n may start only once unit n - window is written: the buffer cannot grow past the window."""
    buffer = ReorderBuffer(2, lambda record: None)
    assert buffer.room(0).called and buffer.room(1).called
    waiting = buffer.room(2)
    assert not waiting.called
    buffer.put(1, [])
    assert not waiting.called  # unit 0 still pending
    buffer.put(0, [])
    assert waiting.called


def test_release_wakes_a_waiting_reader() -> None:
    """Stopping wakes the reader even though the window has not moved."""
    buffer = ReorderBuffer(1, lambda record: None)
    waiting = buffer.room(5)
    buffer.release()
    assert waiting.called


class SlowFirstLine:
    """A transport whose line 0 fails (retryably) until told otherwise; every other line echoes."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sent: list[int] = []
        self.line0_ok = False

    def start(self) -> None:
        pass

    def stop(self) -> Deferred[None]:
        return succeed(None)

    def send(self, body: dict[str, Any], puid: str) -> Deferred[dict[str, Any]]:
        index = body["meta"]["tags"]["batch_index"]
        self.sent.append(index)
        d: Deferred[dict[str, Any]] = Deferred()
        if index == 0 and not self.line0_ok:
            self.clock.callLater(0.01, d.errback, RequestFailed("http_503", "busy", code=503, retryable=True))
        else:
            self.clock.callLater(0.01, d.callback, dict(body))
        return d


@pytest_twisted.ensureDeferred
async def test_reading_waits_while_an_early_line_retries(tmp_path: Path) -> None:
    """With line 0 retrying for a long time, the engine reads no further than the window, the
    buffer holds at most that much, and the output comes out in input order once it succeeds."""
    lines = 200
    source = tmp_path / "in.txt"
    source.write_text("".join(f"[[{i}]]\n" for i in range(lines)))
    config = BatchConfig(deployment_name="m", input_data_path=str(source),
                         output_data_path=str(tmp_path / "out.txt"), workers=4, retries=1000,
                         ordered=True, batch_id="b", outage_timeout=0)  # 503s retried, not an outage
    clock = Clock()
    transport = SlowFirstLine(clock)
    writer = LineWriter(config.output_data_path)
    stats = BatchStats("b", "in", total=lines)
    read: list[int] = []

    def wanted(index: int) -> bool:
        read.append(index)
        return True

    with open(source, "rb") as stream:
        run = BatchRun(config, read_items(stream, "b", wanted), transport, writer, stats, clock)  # type: ignore[arg-type]
        done = Deferred.fromCoroutine(run.run())
        window = reorder_window(config.workers)
        for _ in range(3000):  # a minute of line 0 failing, in 20 ms steps
            clock.advance(0.02)
        assert not done.called
        assert max(read) <= window + 1  # reading waited: at most the window plus one read ahead
        assert writer.lines_written == 0
        assert run._reorder is not None and run._reorder.buffered <= window
        assert transport.sent.count(0) > 10  # line 0 kept retrying
        transport.line0_ok = True
        for _ in range(2000):
            if done.called:
                break
            clock.advance(1.0)
        summary = await done
    writer.close()
    assert summary.succeeded == lines
    output = Path(config.output_data_path).read_text().splitlines()
    indexes = [json.loads(x)["meta"]["tags"]["batch_index"] for x in output]
    assert indexes == list(range(lines))
