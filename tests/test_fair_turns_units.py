"""The rules of fair turns and of the bytes-in-flight budget, on a task.Clock (no processes).

The real daemon and command prove the behaviour end to end (test_fair_turns.py, test_bytes_in_flight.py);
these pin the edges: a free slot means no one yields, a yielded file waits behind new files but is taken
when nothing else waits, a stop releases a unit waiting for bytes.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.task import Clock

from seldon_batch_tx.daemon.turns import YIELDED, Turns
from seldon_batch_tx.pipeline.budget import ByteBudget


class FakeBatch:
    def __init__(self) -> None:
        self.stops: list[tuple[str, float | None]] = []

    def stop(self, reason: str, grace: float | None = None) -> None:
        self.stops.append((reason, grace))


def job(name: str) -> Any:
    return SimpleNamespace(name=name, batch=FakeBatch(), kept=False, entry=SimpleNamespace(stats=SimpleNamespace(
        reason=None)))


def test_a_file_yields_only_after_its_turn_and_only_when_others_wait_for_a_slot() -> None:
    clock = Clock()
    turns = Turns(10.0, clock, stop_grace=2.0)
    a = job("a")
    turns.begin(a)
    clock.advance(9.9)
    turns.take([a], others_wait=True, slots=1)
    assert a.batch.stops == []  # its turn is not over
    clock.advance(0.2)
    turns.take([a], others_wait=False, slots=1)
    assert a.batch.stops == []  # nobody waits: it goes on
    turns.take([a], others_wait=True, slots=2)
    assert a.batch.stops == []  # a free slot: the waiting file just starts there
    turns.take([a], others_wait=True, slots=1)
    turns.take([a], others_wait=True, slots=1)
    assert len(a.batch.stops) == 1 and a.batch.stops[0][1] == 2.0 and turns.yielding(a)
    a.kept = True
    turns.end(a)
    assert a.entry.stats.reason == YIELDED and not turns.yielding(a)


def test_a_yielded_file_goes_behind_new_ones_and_returns_when_none_wait() -> None:
    clock = Clock()
    turns = Turns(1.0, clock)
    a, b = job("a"), job("b")
    turns.begin(a)
    clock.advance(2)
    turns.take([a], others_wait=True, slots=1)
    a.kept = True
    turns.end(a)
    orphans = [a, b]  # a taken up again from processing/, b left there by a restart
    assert turns.next_orphan(orphans, others_wait=True) is b and orphans == [a]
    assert turns.next_orphan(orphans, others_wait=True) is None  # a new file in incoming/ goes first
    assert turns.next_orphan(orphans, others_wait=False) is a and orphans == []
    turns.begin(a)
    assert turns.next_orphan([a], others_wait=True) is a  # its new turn cleared its place behind


def test_a_file_that_finished_while_yielding_is_not_kept_behind() -> None:
    turns = Turns(1.0, Clock())
    a = job("a")
    turns.begin(a)
    turns._clock.advance(5)  # type: ignore[attr-defined]
    turns.take([a], others_wait=True, slots=1)
    turns.end(a)  # done (not kept): nothing to resume
    assert a.entry.stats.reason is None and turns.next_orphan([a], others_wait=True) is a


def test_the_budget_admits_by_bytes_and_a_stop_releases_the_waiting() -> None:
    budget = ByteBudget(100)
    assert budget.fits(1000)  # nothing in flight: any unit runs alone
    assert budget.try_take(60) and budget.in_flight == 60
    assert not budget.try_take(60)  # 120 > 100: the engine waits for bytes to be given back
    freed = budget.freed()
    budget.give(60)
    assert freed.called and budget.try_take(60) and budget.in_flight == 60
    assert not budget.try_take(50)
    waiting = budget.freed()
    budget.stop()
    assert waiting.called and not budget.try_take(0) and budget.in_flight == 60  # a stop: nothing more held
