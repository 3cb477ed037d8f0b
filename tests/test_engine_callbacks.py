"""The per-line path on plain Deferred callbacks (issue 22), attacked at each moment a unit can be in.

Transports that answer at once (success or failure), raise instead of returning, hang, answer after
the watchdog gave up, or fire but wait on another Deferred; stop() and abandon() while a unit is in
flight, backing off, waiting out an outage, pausing (``--batch-interval``) or being split. Always: at
most one output line per input line (exactly one unless stopped), ``--ordered`` in input order, the
run ends (at once on abandon), nothing left behind. No network: a fake clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import Clock

from seldon_batch_tx.core.failures import RequestFailed
from seldon_batch_tx.exits import EXIT_FAILED_LINES, EXIT_OK, EXIT_STOPPED
from seldon_batch_tx.outputs.writer import LineWriter
from seldon_batch_tx.pipeline.attempts import watchdog_seconds
from seldon_batch_tx.pipeline.engine import BatchRun
from seldon_batch_tx.pipeline.outage import STREAK
from seldon_batch_tx.pipeline.summary import Summary
from tests.test_engine_guarantee import Scripted, finish, kinds, make, output

JSONDict = dict[str, Any]


def index_of(body: JSONDict) -> int:
    return cast(int, body["meta"]["tags"]["batch_index"])


def echo(body: JSONDict) -> JSONDict:
    return cast(JSONDict, json.loads(json.dumps(body)))


def clean(run: BatchRun, requests: bool = True) -> None:
    """Nothing of the run is left behind: no request counted in flight, no deadline, no pause.
    (``requests=False``: a retry whose canceller raised when abandoned stays counted in flight.)"""
    attempts = run._attempts
    assert not requests or run.stats.in_flight == 0 and not attempts._deadlines and not attempts._expired
    assert not attempts._pauses and not run._pauses and not run._feed._in_flight and not run._feed._sizes


def in_order(tmp_path: Path) -> list[int]:
    return [index_of(json.loads(x)) for x in (tmp_path / "out").read_text().splitlines()]


# -- transports that fire at once, raise, or never end ----------------------------------------------


def test_answers_given_at_once_raised_or_failed_each_make_their_line(tmp_path: Path) -> None:
    """A Deferred already fired (answer, retryable failure then answer, refusal), a RequestFailed
    raised instead of returned, a bug raised or failed: each line its own outcome, nothing leaks."""
    tries: dict[int, int] = {}

    def answer(body: JSONDict) -> Deferred[JSONDict]:
        i = index_of(body)
        tries[i] = tries.get(i, 0) + 1
        if i == 1 and tries[i] == 1:
            return fail(RequestFailed("http_503", "HTTP 503", code=503, retryable=True, info="http_503"))
        if i == 2:
            return fail(RequestFailed("http_400", "HTTP 400: refused", code=400, info="http_400"))
        if i == 3:
            raise RequestFailed("connection", "refused at once", retryable=False, info="connection")
        if i == 4:
            raise ZeroDivisionError("transport bug")
        if i == 5:
            return fail(KeyError("later bug"))
        return succeed(echo(body))

    run, clock = make(tmp_path, [b"[[1]]"] * 6, Scripted(answer), retries=2, outage_timeout=0)
    summary = finish(run, clock)
    lines = output(tmp_path)
    assert kinds(lines) == {0: None, 1: None, 2: "http_400", 3: "connection", 4: "internal_error",
                            5: "internal_error"}
    assert lines[3]["status"]["reason"] == "refused at once"
    assert lines[4]["status"]["reason"] == "ZeroDivisionError: transport bug"
    assert (summary.succeeded, summary.failed, summary.exit_code) == (2, 4, EXIT_FAILED_LINES)
    assert tries == {0: 1, 1: 2, 2: 1, 3: 1, 4: 1, 5: 1}
    clean(run)


def test_an_answer_after_the_watchdog_gave_up_is_ignored(tmp_path: Path) -> None:
    """The watchdog cancels a request whose transport has no canceller; the retry answers; the
    transport's late answer to the first attempt then changes nothing (one line, a success)."""
    transport = Scripted()
    late: list[Deferred[JSONDict]] = []

    def answer(body: JSONDict) -> Deferred[JSONDict]:
        if late:
            return succeed(echo(body))
        late.append(Deferred())
        return late[0]

    transport.answer = answer
    run, clock = make(tmp_path, [b"[[1]]"], transport, timeout=5.0, retries=1)
    summary = finish(run, clock, rounds=int(watchdog_seconds(5.0)) + 20)
    late[0].callback({"data": {"ndarray": ["too late"]}})
    run._writer.close()
    assert kinds(output(tmp_path)) == {0: None} and summary.exit_code == EXIT_OK
    assert len(transport.bodies) == 2 and run.stats.succeeded == 1
    clean(run)


def fired_but_waiting(body: JSONDict) -> Deferred[JSONDict]:
    """A transport Deferred that fired but waits for ever on another one (its body never read)."""
    d: Deferred[JSONDict] = Deferred()
    d.addCallback(lambda _: Deferred())
    d.callback({})
    return d


def test_the_watchdog_ends_a_request_that_fired_but_waits_for_ever(tmp_path: Path) -> None:
    """``called`` is not ``ended``: a Deferred paused on an inner one that never fires is a request
    its transport never ended, and the watchdog ends it like any other (timeout lines)."""
    run, clock = make(tmp_path, [b"[[1]]", b"[[2]]"], Scripted(fired_but_waiting), timeout=5.0, retries=0)
    summary = finish(run, clock, rounds=2 * int(watchdog_seconds(5.0)) + 20)
    lines = output(tmp_path)
    assert kinds(lines) == {0: "timeout", 1: "timeout"} and "watchdog" in lines[0]["status"]["reason"]
    assert summary.exit_code == EXIT_FAILED_LINES
    clean(run)


def test_a_transport_that_returns_no_deferred_fails_its_line_only(tmp_path: Path) -> None:
    """``send`` returning None (a transport bug): that line is internal_error, the request is not
    counted in flight for ever, and the watchdog goes on guarding the other requests."""
    transport = Scripted()

    def answer(body: JSONDict) -> Any:
        return None if index_of(body) == 0 else transport.hang(body)

    transport.answer = answer
    run, clock = make(tmp_path, [b"[[1]]", b"[[2]]"], transport, timeout=5.0, retries=0, workers=2)
    summary = finish(run, clock, rounds=int(watchdog_seconds(5.0)) + 20)
    assert kinds(output(tmp_path)) == {0: "internal_error", 1: "timeout"}
    assert summary.exit_code == EXIT_FAILED_LINES
    clean(run)


@pytest.mark.parametrize("extra", [1, -1], ids=["one-too-many", "one-too-few"])
def test_a_codec_giving_the_wrong_number_of_records_fails_every_line_of_the_request(
        tmp_path: Path, extra: int) -> None:
    """No line of that request is written as a success with a record that may be another line's
    answer (too many: all were; too few: the first ones were): each gets an internal_error line."""
    run, clock = make(tmp_path, [b"[[1]]"] * 3, Scripted(), batch_size=3)
    results = run.codec.results

    def wrong(response: Any, members: Any) -> Any:
        records = results(response, members)
        return records + records[:1] if extra > 0 else records[:-1]

    run.codec.results = wrong  # type: ignore[method-assign]
    summary = finish(run, clock)
    lines = output(tmp_path)
    assert kinds(lines) == {0: "internal_error", 1: "internal_error", 2: "internal_error"}
    assert lines[0]["status"]["reason"] == f"ValueError: the codec gave {3 + extra} records for 3 lines"
    assert summary.failed == 3 and summary.succeeded == 0
    clean(run)


def test_a_stop_while_the_model_comes_back_releases_every_outage_waiter_once(tmp_path: Path) -> None:
    """The outage reopens and the first waiter released stops the run (``--max-failures``), which
    cancels the other waiters: reopening must not fire them a second time (AlreadyCalledError)."""
    run, clock = make(tmp_path, [b"[[1]]"], Scripted(), outage_timeout=60.0)
    outage = run.outage
    assert outage is not None
    for _ in range(STREAK):
        outage.failed(RequestFailed("connection", "connection refused", retryable=True, info="connection"))
    first, second = outage.wait(), outage.wait()
    first.addCallback(lambda _: second.cancel())
    second.addErrback(lambda f: f.trap(CancelledError))
    outage.answered()
    assert first.called and second.called and not outage.closed
    outage.end()


# -- stop() and abandon() at each moment a unit can be in -------------------------------------------

MOMENTS = ["in_flight", "backoff", "outage", "interval", "splitting"]


def moment(tmp_path: Path, where: str) -> tuple[BatchRun, Clock, Scripted]:
    """A run of 4 units (``--ordered``, 4 workers) whose first units are held at ``where``
    (unit 0 only in flight, units 0 and 1 otherwise); the others answered at once."""
    transport = Scripted()

    def answer(body: JSONDict) -> Deferred[JSONDict]:
        first = index_of(body)
        if first >= (1 if where == "in_flight" else 2) or where == "interval":
            return succeed(echo(body))
        if where == "in_flight":
            return transport.hang(body)
        if where == "backoff":
            return fail(RequestFailed("http_503", "HTTP 503", code=503, retryable=True, retry_after=30.0))
        if where == "outage":
            return fail(RequestFailed("connection", "connection refused", retryable=True, info="connection"))
        if len(transport.bodies) == 1:  # splitting: the pair refused together, then line 0 hangs
            return fail(RequestFailed("http_400", "HTTP 400: bad value", code=400, info="http_400"))
        return transport.hang(body) if first == 0 else succeed(echo(body))

    transport.answer = answer
    options: dict[str, Any] = {"retries": 3, "outage_timeout": 600.0, "timeout": 100.0,
                               "batch_interval": 50.0 if where == "interval" else 0.0,
                               "batch_size": 2 if where == "splitting" else 1}
    lines = [b"[[1]]"] * (8 if where == "splitting" else 4)
    run, clock = make(tmp_path, lines, transport, workers=4, ordered=True, **options)
    if run.outage is not None:
        run.outage.probe = lambda: succeed("still down")
    return run, clock, transport


def held(where: str, clock: Clock, transport: Scripted, run: BatchRun) -> None:
    """Advance 10 s to the moment; check unit 0 is held there."""
    for _ in range(20):
        clock.advance(0.5)
    if where == "backoff":
        assert run._attempts._pauses  # retries back off (up to 10 s each): some unit is between attempts
    elif where == "outage":
        assert run.outage is not None and run.outage.closed
    elif where == "interval":
        assert run._pauses
    else:
        assert transport.pending


@pytest.mark.parametrize("where", MOMENTS)
def test_a_stop_leaves_the_held_unit_for_resume_and_the_run_ends(tmp_path: Path, where: str) -> None:
    """stop(): what is answered is written, in input order; a unit between attempts, waiting for
    the model or between split requests keeps its lines for ``--resume``; a pause ends at once."""
    run, clock, transport = moment(tmp_path, where)
    d = Deferred.fromCoroutine(run.run())
    held(where, clock, transport, run)
    run.stop("signal")
    if where == "in_flight":  # a request in flight still ends and is written
        transport.pending[0].callback(echo(transport.bodies[0]))
    elif where == "splitting":
        for p in transport.pending:
            p.callback(echo(transport.bodies[1]))
    assert d.called, f"a stop at {where} did not end the run"
    summary = cast(Summary, d.result)
    run._writer.close()
    written = in_order(tmp_path)
    assert written == sorted(written) and len(set(written)) == len(written)
    expect = {"in_flight": 4, "backoff": 2, "outage": 2, "interval": 4, "splitting": 7}[where]
    assert len(written) == expect and summary.not_processed == run.stats.total - expect
    assert summary.exit_code == EXIT_STOPPED
    clean(run)


@pytest.mark.parametrize("where", MOMENTS)
def test_abandon_ends_the_run_at_once_and_ordered_never_waits_for_the_abandoned_unit(
        tmp_path: Path, where: str) -> None:
    run, clock, transport = moment(tmp_path, where)
    d = Deferred.fromCoroutine(run.run())
    held(where, clock, transport, run)
    run.stop("signal")
    run.abandon()
    assert d.called, f"abandon at {where} did not end the run"
    summary = cast(Summary, d.result)
    run._writer.close()
    written = in_order(tmp_path)
    expect = {"in_flight": [1, 2, 3], "backoff": [2, 3], "outage": [2, 3], "interval": [0, 1, 2, 3],
              "splitting": [2, 3, 4, 5, 6, 7]}[where]
    assert written == expect and summary.exit_code == EXIT_STOPPED
    clean(run)
    clock.advance(1000)  # nothing of the run fires later (timers, late answers)
    assert in_order(tmp_path) == expect


def test_abandon_ends_the_run_when_a_transports_canceller_raises(tmp_path: Path) -> None:
    """The unit's Deferred is the transport's own at its first attempt: a canceller that raises
    must not leave abandon() half done (the other units not cancelled, the run never ending)."""
    run, clock = make(tmp_path, [b"[[1]]"] * 2, Scripted(lambda body: Deferred(lambda d: 1 / 0)), workers=2)
    d = Deferred.fromCoroutine(run.run())
    run.stop("signal")
    run.abandon()
    assert d.called and cast(Summary, d.result).not_processed == 2
    clean(run)


def test_an_output_failing_at_the_first_line_stops_pauses_and_ordered_runs(tmp_path: Path) -> None:
    writer = LineWriter("/dev/full", append=True, max_buffered=1)
    run, clock = make(tmp_path, [b"[[1]]"] * 6, Scripted(), writer=writer, workers=2, ordered=True,
                      batch_interval=30.0)
    summary = finish(run, clock, close=False)
    with pytest.raises(OSError):
        writer.close()
    assert summary.exit_code == EXIT_STOPPED and "cannot write the output" in (summary.stopped_early or "")
    assert summary.not_processed >= 4
    clean(run)


# -- random schedules ------------------------------------------------------------------------------

#: What the transport does with one request (``arg``: seconds, or whether a failure is retryable).
behaviours = st.one_of(
    st.just(("ok_now", 0)), st.just(("ok_now", 0)), st.tuples(st.just("ok_later"), st.integers(0, 30)),
    st.tuples(st.just("fail_now"), st.booleans()), st.tuples(st.just("fail_later"), st.integers(0, 30)),
    st.just(("raise_failed", 0)), st.just(("raise_bug", 0)), st.just(("fail_bug", 0)),
    st.just(("hang", 0)), st.just(("fired_but_waiting", 0)), st.just(("outage", 0)),
    st.tuples(st.just("late_no_canceller"), st.integers(10, 30)), st.just(("cancel_answers", 0)),
    st.just(("cancel_raises", 0)),
    st.just(("refused", 0)))


class Schedule(Scripted):
    """Request n does ``plan[n % len(plan)]``; a later answer has a canceller, like a real transport."""

    def __init__(self, plan: list[tuple[str, Any]], clock: Clock) -> None:
        super().__init__()
        self.plan, self.clock = plan, clock
        self.answer = self.act

    def act(self, body: JSONDict) -> Deferred[JSONDict]:
        kind, arg = self.plan[(len(self.bodies) - 1) % len(self.plan)]
        if kind == "ok_now":
            return succeed(echo(body))
        if kind in ("ok_later", "fail_later"):
            outcome: Callable[[Deferred[JSONDict]], Any] = (
                (lambda d: d.callback(echo(body))) if kind == "ok_later" else
                (lambda d: d.errback(RequestFailed("http_503", "HTTP 503", code=503, retryable=True))))
            call = self.clock.callLater(arg, lambda: outcome(d))
            d: Deferred[JSONDict] = Deferred(lambda _: call.cancel())
            return d
        if kind == "late_no_canceller":  # may answer after the watchdog gave up on it
            late: Deferred[JSONDict] = Deferred()
            self.clock.callLater(arg, late.callback, echo(body))
            return late
        if kind == "cancel_answers":  # a canceller that fires the Deferred with an answer
            return Deferred(lambda d: d.callback(echo(body)))
        if kind == "cancel_raises":  # a canceller bug: the watchdog and abandon() still end it
            return Deferred(lambda d: 1 / 0)
        if kind == "fail_now":
            return fail(RequestFailed("http_503", "HTTP 503", code=503, retryable=arg, info="http_503"))
        if kind == "raise_failed":
            raise RequestFailed("http_429", "HTTP 429", code=429, retryable=True, info="http_429")
        if kind == "raise_bug":
            raise ZeroDivisionError("bug")
        if kind == "fail_bug":
            return fail(KeyError("bug"))
        if kind == "outage":
            return fail(RequestFailed("connection", "connection refused", retryable=True, info="connection"))
        if kind == "refused":
            return fail(RequestFailed("http_400", "HTTP 400: bad value", code=400, info="http_400"))
        return fired_but_waiting(body) if kind == "fired_but_waiting" else self.hang(body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_schedules_keep_one_line_per_line(tmp_path_factory: pytest.TempPathFactory,
                                                 data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 8), label="lines")
    plan = data.draw(st.lists(behaviours, min_size=1, max_size=6), label="plan")
    options = {"workers": data.draw(st.integers(1, 3)), "batch_size": data.draw(st.integers(1, 3)),
               "retries": data.draw(st.integers(0, 2)), "ordered": data.draw(st.booleans()),
               "batch_interval": data.draw(st.sampled_from([0.0, 3.0])), "timeout": 2.0,
               "outage_timeout": data.draw(st.sampled_from([0.0, 40.0])),
               "max_failures": data.draw(st.sampled_from([None, 2]))}
    stop_at = data.draw(st.none() | st.integers(0, 60), label="stop at")
    abandon = stop_at is not None and data.draw(st.booleans(), label="abandon")
    tmp = tmp_path_factory.mktemp("schedule")
    transport = Schedule(plan, Clock())
    run, clock = make(tmp, [b"[[%d]]" % i for i in range(n)], transport, **options)
    transport.clock = clock  # the run's own clock
    if run.outage is not None:
        run.outage.probe = lambda: succeed(None)  # ready again: the model's next answers decide
    d = Deferred.fromCoroutine(run.run())
    for second in range(5000):
        if d.called:
            break
        if second == stop_at:
            run.stop("signal")
            if abandon:
                run.abandon()
                assert d.called, "abandon did not end the run at once"
        clock.advance(1)
    assert d.called, "the run did not end"
    summary = cast(Summary, d.result)
    clock.advance(200)  # late answers and timers after the end write nothing
    run._writer.close()
    written = in_order(tmp)
    assert len(set(written)) == len(written), "a line has two output lines"
    if options["ordered"]:
        assert written == sorted(written)
    assert summary.succeeded + summary.failed == len(written) and summary.not_processed == n - len(written)
    if summary.stopped_early is None:
        assert sorted(written) == list(range(n))
    lines = output(tmp)
    if "internal_error" in kinds(lines).values():  # a transport bug's line, never the engine's
        assert {k for k, _ in plan} & {"raise_bug", "fail_bug", "cancel_raises"}, repr(lines)
    clean(run, requests=not (abandon and ("cancel_raises", 0) in plan))

