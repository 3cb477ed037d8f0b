"""The engine with --adaptive / --max-rate on a simulated clock: what an overload answer costs a line,
and that a stop or an abandon while lines wait for admission ends the run cleanly.

The real command line against a loopback overload server and the real Seldon microservice is
tests/test_adaptive_cli.py; the limiters' own arithmetic is tests/test_pacing.py.
"""

from __future__ import annotations

from pathlib import Path

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from seldon_batch_tx.pipeline.attempts import OVERLOAD_SPARE
from seldon_batch_tx.pipeline.summary import Summary
from tests.test_engine import Echo, finish, make_run, output

BUSY: list[tuple[int, dict[str, str], bytes]] = [(503, {}, b"busy"), (429, {}, b"slow down")]


def test_under_adaptive_an_overload_answer_costs_no_retry(tmp_path: Path) -> None:
    """Refused 6 times (429/503), line 0 is still answered with --retries 0 under --adaptive; the
    refusals are counted as retries and as overload answers."""
    clock, echo = Clock(), Echo({0: BUSY * 3})
    run, stub, out = make_run(tmp_path, ["[[1]]", "[[2]]"], echo, clock, retries=0, adaptive=True)
    summary = finish(run, stub, clock, rounds=600)
    assert sorted(o["data"]["ndarray"][0][0] for o in output(out)) == [1, 2]
    assert summary.failed == 0 and summary.retried == 6
    assert (run.stats.answers, run.stats.overloads) == (8, 6)
    assert run.pacing is not None and run.pacing.concurrency is not None
    assert run.pacing.concurrency.current == 0  # every permit came back


def test_without_adaptive_the_same_refusals_fail_the_line(tmp_path: Path) -> None:
    clock, echo = Clock(), Echo({0: BUSY * 3})
    # no outage pausing (a 503 without a JSON answer would otherwise wait for the model: issue 19)
    run, stub, out = make_run(tmp_path, ["[[1]]"], echo, clock, retries=0, outage_timeout=0)
    summary = finish(run, stub, clock)
    assert summary.failed == 1 and output(out)[0]["status"]["code"] == 503
    assert run.pacing is None and run.stats.overload_share == 1.0


def test_spare_attempts_are_bounded_and_other_errors_still_count(tmp_path: Path) -> None:
    """A model that always refuses still ends a line: --retries 1 plus OVERLOAD_SPARE attempts; a 500
    (not an overload signal) counts against --retries as before."""
    clock = Clock()
    echo = Echo({0: BUSY * 20, 1: [(500, {}, b"boom")] * 5})
    run, stub, out = make_run(tmp_path, ["[[1]]", "[[2]]"], echo, clock, retries=1, adaptive=True,
                              outage_timeout=0)  # a plain 503 is outage-class otherwise (issue 19)
    summary = finish(run, stub, clock, rounds=1000)
    lines = {o["meta"]["tags"]["batch_index"]: o for o in output(out)}
    assert f"after {2 + OVERLOAD_SPARE} attempts" in lines[0]["status"]["reason"]
    assert "after 2 attempts" in lines[1]["status"]["reason"]
    assert summary.failed == 2
    assert sum(1 for b in echo.seen if b["meta"]["tags"]["batch_index"] == 0) == 2 + OVERLOAD_SPARE


def run_until(run_d: Deferred[Summary], clock: Clock, stub: StubTreq, seconds: float) -> None:
    for _ in range(int(seconds * 10)):
        stub.flush()
        clock.advance(0.1)
        if run_d.called:
            return


def test_a_stop_while_lines_wait_for_the_rate_leaves_them_for_a_resume(tmp_path: Path) -> None:
    """--max-rate 2 with 4 workers: a stop after ~2 s ends the run at once; lines still waiting for
    their slot have no output line (a resume sends them) and no timer is left behind."""
    clock = Clock()
    run, stub, out = make_run(tmp_path, ["[[1]]"] * 20, Echo(), clock, workers=4, max_rate=2.0)
    d = Deferred.fromCoroutine(run.run())
    run_until(d, clock, stub, 2.0)
    assert not d.called
    run.stop("test stop")
    run_until(d, clock, stub, 2.0)
    assert d.called
    run._writer.close()
    written = len(output(out))
    assert 4 <= written <= 6 and run.stats.done == written  # ~2/s for 2 s, the first slot at once
    assert not clock.getDelayedCalls()


def test_abandon_while_waiting_for_admission_writes_nothing_more(tmp_path: Path) -> None:
    clock = Clock()
    run, stub, out = make_run(tmp_path, ["[[1]]"] * 20, Echo(hold=True), clock, workers=4, adaptive=True,
                              max_rate=5.0)
    d = Deferred.fromCoroutine(run.run())
    run_until(d, clock, stub, 1.0)
    run.stop("draining")
    run.abandon()
    run_until(d, clock, stub, 1.0)
    assert d.called
    run._writer.close()
    assert output(out) == [] and run.stats.done == 0
    assert run.pacing is not None and run.pacing.concurrency is not None
    assert run.pacing.concurrency.current == 0 and run.stats.in_flight == 0
