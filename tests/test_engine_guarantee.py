"""The engine's structural guarantee: one output line per input line whatever fails inside a unit.

Each test breaks one place a unit of work goes through (parse, build, transport, codec results,
writer, reading, the engine's own bookkeeping) and checks that every line still has exactly one
output line, or that the run stops with a reason (exit 3) when the output itself cannot be
written. No network: a scripted transport and a :class:`~twisted.internet.task.Clock`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.core.failures import RequestFailed
from seldon_batch_tx.core.items import Item
from seldon_batch_tx.exits import EXIT_FAILED_LINES, EXIT_OK, EXIT_STOPPED
from seldon_batch_tx.outputs.writer import LineWriter
from seldon_batch_tx.pipeline.attempts import watchdog_seconds
from seldon_batch_tx.pipeline.engine import BatchRun
from seldon_batch_tx.pipeline.reader import instance_id
from seldon_batch_tx.pipeline.stats import BatchStats
from seldon_batch_tx.pipeline.summary import Summary

JSONDict = dict[str, Any]
Answer = Callable[[JSONDict], "Deferred[JSONDict]"]


class Scripted:
    """A transport whose answer to each request is computed by ``answer`` (echo by default)."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.answer = answer or (lambda body: succeed(json.loads(json.dumps(body))))
        self.bodies: list[JSONDict] = []
        self.pending: list[Deferred[JSONDict]] = []

    def start(self) -> None:
        pass

    def stop(self) -> Deferred[None]:
        return succeed(None)

    def send(self, body: JSONDict, puid: str) -> Deferred[JSONDict]:
        self.bodies.append(body)
        return self.answer(body)

    def hang(self, body: JSONDict) -> Deferred[JSONDict]:
        """An answer that never comes (a transport that failed to time out)."""
        d: Deferred[JSONDict] = Deferred()
        self.pending.append(d)
        return d


def make(tmp_path: Path, lines: list[bytes] | Iterator[Item], transport: Scripted, *,
         total: int | None = None, writer: LineWriter | None = None, **kw: Any) -> tuple[BatchRun, Clock]:
    config = BatchConfig(deployment_name="d", input_data_path="in", output_data_path=str(tmp_path / "out"),
                         batch_id="B", **kw)
    items = iter([Item(i, instance_id("B", i), line) for i, line in enumerate(lines)]) \
        if isinstance(lines, list) else lines
    writer = writer or LineWriter(config.output_data_path)
    stats = BatchStats("B", "in", total=total if total is not None else len(lines) if isinstance(lines, list) else 0)
    clock = Clock()
    return BatchRun(config, items, transport, writer, stats, clock), clock  # type: ignore[arg-type]


def finish(run: BatchRun, clock: Clock, rounds: int = 500, close: bool = True) -> Summary:
    """Run to the end on the fake clock; a run that does not end within ``rounds`` seconds fails."""
    d = Deferred.fromCoroutine(run.run())
    got: list[Summary] = []
    d.addCallback(got.append)
    for _ in range(rounds):
        if got or d.called:
            break
        clock.advance(1)
    if close:
        run._writer.close()
    assert got, "the run did not finish"
    return got[0]


def output(tmp_path: Path) -> dict[int, JSONDict]:
    """Output lines by batch_index; asserts there is exactly one per index."""
    lines = [json.loads(x) for x in (tmp_path / "out").read_text().splitlines()]
    by_index = {line["meta"]["tags"]["batch_index"]: line for line in lines}
    assert len(by_index) == len(lines), "an index has more than one output line"
    return by_index


def kinds(lines: dict[int, JSONDict]) -> dict[int, str | None]:
    return {i: (line["status"]["info"] if line.get("status", {}).get("status") == "FAILURE" else None)
            for i, line in lines.items()}


def test_a_codec_parse_bug_fails_its_unit_only(tmp_path: Path) -> None:
    """A parse that raises something unexpected: the unit's lines without a line yet get
    internal_error (naming the exception), a line already refused keeps its input_error."""
    run, clock = make(tmp_path, [b"[[1]]", b"oops", b"[[3]]", b"[[4]]"], Scripted(), batch_size=3)
    parse = run.codec.parse

    def buggy(item: Item) -> Any:
        if item.index == 2:
            raise ZeroDivisionError("division by zero in parse")
        return parse(item)

    run.codec.parse = buggy  # type: ignore[method-assign]
    summary = finish(run, clock)
    lines = output(tmp_path)
    assert kinds(lines) == {0: "internal_error", 1: "input_error", 2: "internal_error", 3: None}
    assert lines[0]["status"]["reason"] == "ZeroDivisionError: division by zero in parse"
    assert (summary.succeeded, summary.failed, summary.not_processed, summary.exit_code) == (1, 3, 0, 1)


def test_a_build_bug_and_an_async_transport_bug_become_internal_error_lines(tmp_path: Path) -> None:
    """codec.build raising, and a transport failing with a non-RequestFailed error."""
    run, clock = make(tmp_path, [b"[[1]]"] * 4, Scripted(lambda body: fail(KeyError("surprise"))), batch_size=2)
    build = run.codec.build
    calls = []

    def buggy(parsed: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise TypeError("bad build")
        return build(parsed)

    run.codec.build = buggy  # type: ignore[method-assign]
    summary = finish(run, clock)
    lines = output(tmp_path)
    assert sorted(lines) == [0, 1, 2, 3] and set(kinds(lines).values()) == {"internal_error"}
    reasons = {lines[i]["status"]["reason"] for i in lines}
    assert reasons == {"TypeError: bad build", "KeyError: 'surprise'"}
    assert summary.exit_code == EXIT_FAILED_LINES and summary.failed == 4


def test_an_unreadable_answer_is_bad_response_not_internal_error(tmp_path: Path) -> None:
    """The issue's example: -s 2 and an answer whose tensor values are a number. The mini-batch
    is split (issue 19), each line sent alone: the line whose own answer is unreadable fails alone."""
    unreadable = {"data": {"tensor": {"shape": [2], "values": 5}}}

    def answer(body: JSONDict) -> Deferred[JSONDict]:
        if body["data"]["tensor"]["shape"][0] == 2:
            return succeed(unreadable)
        if body["meta"]["tags"]["batch_index"] == 0:
            return succeed(cast(JSONDict, ["not", "an", "object"]))
        return succeed(body)

    transport = Scripted(answer)
    run, clock = make(tmp_path, [b"[1]", b"[2]", b"[3]"], transport, batch_size=2, payload_type="tensor")
    summary = finish(run, clock)
    lines = output(tmp_path)
    assert kinds(lines) == {0: "bad_response", 1: None, 2: None}
    assert "not a SeldonMessage object" in lines[0]["status"]["reason"]
    assert len(transport.bodies) == 4  # [1, 2] unreadable, then [1] and [2] alone, then [3]
    assert summary.exit_code == EXIT_FAILED_LINES


def test_a_codec_results_bug_is_bad_response(tmp_path: Path) -> None:
    run, clock = make(tmp_path, [b"[[1]]"], Scripted())

    def buggy(response: Any, members: Any) -> Any:
        raise IndexError("list index out of range")

    run.codec.results = buggy  # type: ignore[method-assign]
    finish(run, clock)
    line = output(tmp_path)[0]
    assert line["status"]["info"] == "bad_response"
    assert line["status"]["reason"] == "the answer could not be read: IndexError: list index out of range"


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("answer", [
    {"data": {"ndarray": ["\ud800"]}},  # a lone surrogate cannot be written as UTF-8
    {"data": {"ndarray": nested(5000)}},  # too deep for the JSON encoder (RecursionError)
], ids=["lone-surrogate", "deep"])
def test_an_answer_the_writer_cannot_encode_becomes_an_error_line(tmp_path: Path, answer: JSONDict) -> None:
    run, clock = make(tmp_path, [b"[[1]]", b"[[2]]"],
                      Scripted(lambda body: succeed(answer if body["meta"]["tags"]["batch_index"] == 0 else body)))
    summary = finish(run, clock)
    lines = output(tmp_path)
    assert kinds(lines) == {0: "bad_response", 1: None}
    assert lines[0]["status"]["reason"].startswith("the answer cannot be written as a JSON line: ")
    assert (summary.succeeded, summary.failed, summary.exit_code) == (1, 1, EXIT_FAILED_LINES)


def test_own_tags_that_cannot_be_written_still_give_an_error_line(tmp_path: Path) -> None:
    """A raw line's own tags holding a lone surrogate: the line is never sent (issue 25: it is its
    input_error, not a server's 400), and its error line is written."""
    line = b'{"data": {"ndarray": [1]}, "meta": {"tags": {"who": "\\ud800"}}}'
    run, clock = make(tmp_path, [line], Scripted(lambda body: fail(RequestFailed("http_400", "HTTP 400", code=400))),
                      data_type="raw")
    summary = finish(run, clock)
    out = output(tmp_path)[0]
    assert out["status"]["info"] == "input_error" and "lone surrogate" in out["status"]["reason"]
    assert summary.failed == 1 and summary.exit_code == EXIT_FAILED_LINES


def test_an_output_that_cannot_be_written_stops_the_run(tmp_path: Path) -> None:
    """/dev/full (ENOSPC on every write): the run stops with a reason naming the error, exit 3,
    and ends; nothing is counted as done that could not be queued."""
    writer = LineWriter("/dev/full", append=True, max_buffered=1)
    run, clock = make(tmp_path, [b"[[1]]"] * 20, Scripted(), writer=writer, workers=2)
    summary = finish(run, clock, close=False)
    with pytest.raises(OSError):
        writer.close()  # the writer still cannot write; it is closed all the same
    assert summary.stopped_early is not None and "cannot write the output /dev/full" in summary.stopped_early
    assert "OSError" in summary.stopped_early or "No space" in summary.stopped_early
    assert summary.exit_code == EXIT_STOPPED
    assert summary.succeeded + summary.failed <= 2 and summary.not_processed >= 18
    assert isinstance(run.output_error, OSError) and run.stop_reason == summary.stopped_early


def test_a_failing_final_flush_stops_the_run(tmp_path: Path) -> None:
    """Lines buffered until the end, then the flush fails: exit 3 with the reason, no exception."""
    writer = LineWriter("/dev/full", append=True)
    run, clock = make(tmp_path, [b"[[1]]"] * 3, Scripted(), writer=writer)
    d = Deferred.fromCoroutine(run.run())
    assert d.called
    summary = cast(Summary, d.result)
    assert summary.exit_code == EXIT_STOPPED and "cannot write the output" in (summary.stopped_early or "")
    with pytest.raises(OSError):
        writer.close()


def test_a_reading_error_stops_the_run_after_writing_what_was_read(tmp_path: Path) -> None:
    def items() -> Iterator[Item]:
        for i in range(2):
            yield Item(i, instance_id("B", i), b"[[1]]")
        raise OSError(5, "Input/output error")

    run, clock = make(tmp_path, items(), Scripted(), total=5)
    summary = finish(run, clock)
    assert sorted(output(tmp_path)) == [0, 1]
    assert summary.exit_code == EXIT_STOPPED
    assert summary.stopped_early == "cannot read the input: OSError: [Errno 5] Input/output error"
    assert summary.not_processed == 3


def test_abandoned_lines_are_left_for_resume_and_later_units_still_flow(tmp_path: Path) -> None:
    """--ordered: unit 0 never answers, units 1-3 did. abandon() writes nothing for unit 0 (a
    resume sends it) and the buffer does not keep units 1-3 waiting for it for ever."""
    transport = Scripted()
    echo = transport.answer
    transport.answer = lambda body: transport.hang(body) if body["meta"]["tags"]["batch_index"] == 0 else echo(body)
    run, clock = make(tmp_path, [b"[[1]]"] * 4, transport, workers=4, ordered=True)
    d = Deferred.fromCoroutine(run.run())
    clock.advance(1)
    assert not d.called and transport.pending
    run.stop("signal")
    run.abandon()
    assert d.called
    summary = cast(Summary, d.result)
    run._writer.close()
    assert sorted(output(tmp_path)) == [1, 2, 3]
    assert summary.exit_code == EXIT_STOPPED and summary.not_processed == 1


def test_the_watchdog_ends_a_request_its_transport_never_ends(tmp_path: Path) -> None:
    transport = Scripted()
    transport.answer = transport.hang
    run, clock = make(tmp_path, [b"[[1]]", b"[[2]]"], transport, timeout=5.0, retries=1, workers=2)
    summary = finish(run, clock, rounds=int(4 * watchdog_seconds(5.0)) + 20)
    lines = output(tmp_path)
    assert kinds(lines) == {0: "timeout", 1: "timeout"}
    assert "watchdog" in lines[0]["status"]["reason"] and "after 2 attempts" in lines[0]["status"]["reason"]
    assert len(transport.bodies) == 4 and summary.exit_code == EXIT_FAILED_LINES


def test_a_bug_in_the_engines_own_handling_stops_the_run(tmp_path: Path) -> None:
    """The last resort (_finished): an error escaping a unit stops the run, exit 3, never exit 0."""
    run, clock = make(tmp_path, [b"[[1]]"] * 3, Scripted())

    def broken(seq: int, chunk: list[Item], out: dict[int, Any]) -> None:
        raise RuntimeError("commit bug")

    run._commit = broken  # type: ignore[method-assign]
    summary = finish(run, clock)
    assert summary.exit_code == EXIT_STOPPED and "RuntimeError: commit bug" in (summary.stopped_early or "")


def test_lines_over_max_line_bytes_are_input_too_large(tmp_path: Path) -> None:
    """An item the reader marked over-long, and an over-long line from any other source."""
    items = iter([Item(0, instance_id("B", 0), b"", oversize=5000),
                  Item(1, instance_id("B", 1), b"[[" + b"1," * 60 + b"1]]"),
                  Item(2, instance_id("B", 2), b"[[1]]")])
    run, clock = make(tmp_path, items, Scripted(), total=3, max_line_bytes=100)
    summary = finish(run, clock)
    lines = output(tmp_path)
    assert kinds(lines) == {0: "input_too_large", 1: "input_too_large", 2: None}
    assert lines[0]["status"]["reason"] == "line 1 is 5000 bytes, over --max-line-bytes 100"
    assert lines[1]["status"]["reason"] == "line 2 is 125 bytes, over --max-line-bytes 100"
    assert summary.exit_code == EXIT_FAILED_LINES


def test_lines_without_output_are_never_success() -> None:
    """not_processed > 0 without a stop reason exits 1 and the summary says why."""
    lost = Summary(lines=5, succeeded=3, failed=0, retried=0, not_processed=2, elapsed=1.0, stopped_early=None)
    assert lost.exit_code == EXIT_FAILED_LINES
    assert "2 not processed (these lines have no output line" in lost.text()
    ok = Summary(lines=5, succeeded=5, failed=0, retried=0, not_processed=0, elapsed=1.0, stopped_early=None)
    assert ok.exit_code == EXIT_OK and "no output line" not in ok.text()
    stopped = Summary(lines=5, succeeded=3, failed=0, retried=0, not_processed=2, elapsed=1.0, stopped_early="x")
    assert stopped.exit_code == EXIT_STOPPED


def test_a_run_that_misses_lines_exits_1(tmp_path: Path) -> None:
    """The input had more lines than reached the engine (a count the reader disagrees with)."""
    run, clock = make(tmp_path, iter([Item(0, instance_id("B", 0), b"[[1]]")]), Scripted(), total=2)
    summary = finish(run, clock)
    assert summary.not_processed == 1 and summary.exit_code == EXIT_FAILED_LINES


def test_max_failures_counts_written_error_lines(tmp_path: Path) -> None:
    run, clock = make(tmp_path, [b"x"] * 30, Scripted(), max_failures=3, workers=1)
    summary = finish(run, clock)
    assert summary.exit_code == EXIT_STOPPED and summary.failed == len(output(tmp_path)) >= 3
    assert os.path.getsize(tmp_path / "out") > 0


def test_batch_interval_holds_the_worker_and_a_stop_ends_the_pause_at_once(tmp_path: Path) -> None:
    """``--batch-interval 5`` at one worker: the second unit is sent 5 s after the first; a stop
    during that pause ends it at once (no new unit is sent) and the run ends with exit 3."""
    transport = Scripted()
    run, clock = make(tmp_path, [b"[[1]]"] * 3, transport, workers=1, batch_interval=5.0)
    d = Deferred.fromCoroutine(run.run())
    assert len(transport.bodies) == 1
    clock.advance(4.9)
    assert len(transport.bodies) == 1  # the worker is held for the rest of the interval
    clock.advance(0.2)
    assert len(transport.bodies) == 2
    run.stop("signal")
    assert d.called  # the pause ended with the stop: nothing waits out the interval
    summary = cast(Summary, d.result)
    run._writer.close()
    assert sorted(output(tmp_path)) == [0, 1] and len(transport.bodies) == 2
    assert summary.exit_code == EXIT_STOPPED and summary.not_processed == 1
