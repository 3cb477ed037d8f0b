"""--max-rate and --adaptive: seldon_batch_tx.pipeline.pacing (RateLimiter, AdaptiveConcurrency, Pacing).

Simulated runs on task.Clock check the arithmetic (rate held, AIMD settling near a threshold,
never above the maximum, cancellation); two real-clock runs drive treq requests through both
against tests/overload_server.py, a loopback echo model that refuses (429/503) above T at once.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.task import Clock, LoopingCall, deferLater
from twisted.web.client import HTTPConnectionPool

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.core.failures import RequestFailed
from seldon_batch_tx.pipeline.pacing import (
    AdaptiveConcurrency,
    Pacing,
    Permit,
    RateLimiter,
    is_overload,
    outcome_of,
)
from tests.overload_server import OverloadServer

# -- RateLimiter on a simulated clock -------------------------------------------------------------


def test_rate_held_over_a_run_with_late_timers() -> None:
    """A backlog of 2,000 requests at 200/s, the clock advanced in late, uneven steps (as a busy
    reactor fires timers): the run takes 10 s within 1%, and only one timer is ever pending."""
    clock, rng = Clock(), random.Random(1)
    limiter = RateLimiter(200, clock)
    done: list[float] = []
    for _ in range(2000):
        limiter.acquire().addCallback(lambda _: done.append(clock.seconds()))
    for _ in range(100_000):
        if len(done) == 2000:
            break
        assert len(clock.getDelayedCalls()) <= 1  # one timer, never a loop of them
        clock.advance(rng.uniform(0.001, 0.012))
    assert len(done) == 2000
    assert done[-1] == pytest.approx(10.0, rel=0.01)
    per_second = [sum(1 for t in done if s <= t < s + 1) for s in range(9)]
    assert all(180 <= n <= 220 for n in per_second), per_second  # smooth, not bursts


def test_rate_held_with_workers_that_come_back() -> None:
    """64 workers, each waiting for a slot, working 5-50 ms, coming back: 30 s at 50/s -> 1,500 +- 10%."""
    clock, rng = Clock(), random.Random(2)
    limiter = RateLimiter(50, clock)
    sent: list[float] = []

    async def worker() -> None:
        while clock.seconds() < 30:
            await limiter.acquire()
            sent.append(clock.seconds())
            await deferLater(clock, rng.uniform(0.005, 0.05))

    workers = [Deferred.fromCoroutine(worker()) for _ in range(64)]
    for _ in range(40_000):
        if clock.seconds() >= 30:
            break
        clock.advance(0.001 + rng.random() * 0.004)
    limiter.stop()
    clock.advance(1)
    in_run = [t for t in sent if t < 30]
    assert abs(len(in_run) - 1500) <= 150
    ended = [cancelled(w) for w in workers]  # the stop ended those waiting for a slot, the others finished
    assert any(ended) and all(w.called for w in workers) and limiter.waiting == 0


def test_burst_then_spaced() -> None:
    clock = Clock()
    limiter = RateLimiter(10, clock, burst=3)
    clock.advance(100)  # idle: credit for `burst` requests, no more
    ds = [limiter.acquire() for _ in range(5)]
    assert [d.called for d in ds] == [True, True, True, False, False]
    clock.advance(0.1)
    assert ds[3].called and not ds[4].called
    clock.advance(0.1)
    assert ds[4].called


def cancelled(d: Deferred[Any]) -> bool:
    """Whether ``d`` has failed with CancelledError (the failure is then handled)."""
    failures: list[Any] = []
    d.addErrback(failures.append)
    return bool(failures) and failures[0].check(CancelledError) is not None


def test_cancelled_waiter_frees_its_slot_and_stop_cancels_all() -> None:
    clock = Clock()
    limiter = RateLimiter(10, clock)
    first = limiter.acquire()
    second, third, fourth = limiter.acquire(), limiter.acquire(), limiter.acquire()
    assert first.called and limiter.waiting == 3
    second.cancel()
    assert cancelled(second) and limiter.waiting == 2
    clock.advance(0.1)
    assert third.called and not fourth.called  # third got the slot second gave up
    fourth.cancel()
    assert cancelled(fourth) and clock.getDelayedCalls() == []  # the last waiter gone: no timer left
    fifth = limiter.acquire()
    limiter.stop()
    assert cancelled(fifth) and clock.getDelayedCalls() == []
    assert cancelled(limiter.acquire())


@pytest.mark.parametrize("rate, burst", [(0, 1), (-1, 1), (float("inf"), 1), (float("nan"), 1), (5, 0.5)])
def test_rate_limiter_refuses_nonsense(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate, Clock(), burst)


# -- AdaptiveConcurrency on a simulated clock ----------------------------------------------------


def granted(d: Deferred[Permit]) -> Permit:
    """The permit an acquire has already given."""
    assert d.called and isinstance(d.result, Permit)
    return d.result


def simulate(threshold: int, max_workers: int, seconds: float, *, work: float = 0.02,
             seed: int = 3) -> tuple[AdaptiveConcurrency, list[int], list[int]]:
    """``max_workers`` clients against a model that refuses when ``threshold`` requests are in
    it; returns the limiter and, per ms, the model's requests in flight and the limit."""
    clock, rng = Clock(), random.Random(seed)
    limiter = AdaptiveConcurrency(max_workers, clock)
    model = {"in_flight": 0}

    async def client() -> None:
        while clock.seconds() < seconds:
            permit = await limiter.acquire()
            if model["in_flight"] >= threshold:
                await deferLater(clock, 0.001)  # a refusal comes back at once
                limiter.release(permit, "overload")
                await deferLater(clock, rng.uniform(0, 0.01))  # the engine's backoff
                continue
            model["in_flight"] += 1
            await deferLater(clock, work * rng.uniform(0.8, 1.2))
            model["in_flight"] -= 1
            limiter.release(permit, "ok")

    clients = [Deferred.fromCoroutine(client()) for _ in range(max_workers)]
    in_model, limits = [], []
    for _ in range(int(seconds * 1000) + 1000):
        if all(c.called for c in clients):
            break
        clock.advance(0.001)
        in_model.append(model["in_flight"])
        limits.append(limiter.limit)
        assert limiter.current <= limiter.limit or limiter.decreases  # only a decrease leaves more in flight
    assert all(c.called for c in clients)
    return limiter, in_model, limits


@pytest.mark.parametrize("threshold", [4, 10, 25])
def test_aimd_settles_near_the_threshold(threshold: int) -> None:
    limiter, in_model, limits = simulate(threshold, 64, 20.0)
    settled = in_model[5000:]  # after the first 5 s
    mean = sum(settled) / len(settled)
    assert 0.7 * threshold <= mean <= threshold, mean
    assert max(limits) <= 64
    assert 0.6 * threshold <= sum(limits[5000:]) / len(limits[5000:]) <= 1.3 * threshold + 1
    assert limiter.overload_share < 0.2, limiter.snapshot()


def test_threshold_above_max_grows_to_max_and_stays() -> None:
    limiter, in_model, limits = simulate(100, 16, 5.0)
    assert max(limits) == 16 and limits[-1] == 16 and limiter.overloads == 0
    assert max(in_model) == 16


def test_one_burst_of_errors_decreases_once() -> None:
    clock = Clock()
    limiter = AdaptiveConcurrency(40, clock, initial=20)
    permits = [granted(limiter.acquire()) for _ in range(20)]
    for p in permits:
        limiter.release(p, "overload")
    assert limiter.limit == 14 and limiter.decreases == 1 and limiter.overloads == 20
    # a permit granted after that decrease is a new round trip: it may decrease again
    p = granted(limiter.acquire())
    limiter.release(p, "overload")
    assert limiter.limit == 9 and limiter.decreases == 2


def test_lowering_the_limit_lets_in_flight_finish_and_delays_new() -> None:
    clock = Clock()
    limiter = AdaptiveConcurrency(10, clock, initial=10)
    permits = [granted(limiter.acquire()) for _ in range(10)]
    waiting = limiter.acquire()
    limiter.release(permits[0], "overload")  # limit 10 -> 7; 9 still in flight, untouched
    assert limiter.limit == 7 and limiter.current == 9 and not waiting.called
    for p in permits[1:3]:
        limiter.release(p, "ok")
    assert limiter.current == 7 and not waiting.called
    limiter.release(permits[3], "ok")
    assert waiting.called and limiter.current == 7


def test_never_above_max_nor_below_min_under_any_outcomes() -> None:
    clock, rng = Clock(), random.Random(4)
    limiter = AdaptiveConcurrency(12, clock, min_workers=3)
    held: list[Permit] = []
    outcomes = ["ok", "ok", "ok", "overload", "error", "cancelled"]
    for _ in range(20_000):
        d = limiter.acquire()
        if d.called:
            held.append(granted(d))
        else:
            d.addCallback(held.append)
            d.addErrback(lambda f: f.trap(CancelledError))
            if rng.random() < 0.3:
                d.cancel()
        if held and rng.random() < 0.6:
            limiter.release(held.pop(rng.randrange(len(held))), rng.choice(outcomes))  # type: ignore[arg-type]
        clock.advance(0.001)
        assert 3 <= limiter.limit <= 12 and limiter.current <= 12
        assert limiter.current == len(held)


def test_waiter_cancel_release_twice_and_stop() -> None:
    clock = Clock()
    limiter = AdaptiveConcurrency(1, clock)
    first = granted(limiter.acquire())
    second, third = limiter.acquire(), limiter.acquire()
    second.cancel()
    assert cancelled(second)
    limiter.release(first, "ok")
    limiter.release(first, "ok")  # ignored: one permit, one release
    assert third.called and limiter.current == 1 and limiter.answers == 1
    fourth = limiter.acquire()
    limiter.stop()
    assert cancelled(fourth) and cancelled(limiter.acquire())
    limiter.release(granted(third), "ok")  # in flight at the stop: released as usual
    assert limiter.current == 0


@pytest.mark.parametrize("kind, code, retryable, expected", [
    ("http_429", 429, True, True), ("http_503", 503, True, True), ("grpc_UNAVAILABLE", 14, True, True),
    ("grpc_RESOURCE_EXHAUSTED", 8, True, True), ("timeout", None, True, True),
    ("bad_response", 503, True, True),  # a 503 whose body is not JSON is still the server shedding load
    ("grpc_RESOURCE_EXHAUSTED", 8, False, False),  # over the server's size limit: not load
    ("http_500", 500, True, False), ("connection", None, True, False), ("http_400", 400, False, False),
    ("grpc_INTERNAL", 13, True, False), ("model_failure", 503, False, False), ("grpc_UNKNOWN", 14, True, False),
])
def test_is_overload(kind: str, code: int | None, retryable: bool, expected: bool) -> None:
    assert is_overload(kind, code, retryable=retryable) is expected
    failure = RequestFailed(kind, "reason", code=code, retryable=retryable)
    assert outcome_of(failure) == ("overload" if expected else "error")
    assert (outcome_of(None), outcome_of(CancelledError()), outcome_of(ValueError())) == ("ok", "cancelled", "error")


# -- Pacing: what the engine holds ---------------------------------------------------------------


def test_pacing_from_config_only_when_asked() -> None:
    config = BatchConfig(deployment_name="m", input_data_path="in", output_data_path="out", workers=6)
    assert Pacing.from_config(config, Clock()) is None  # neither option: nothing in the way
    # BatchConfig gains max_rate/adaptive at integration; until then a stand-in with those fields
    asked: Any = SimpleNamespace(workers=6, max_rate=5.0, adaptive=True)
    pacing = Pacing.from_config(asked, Clock())
    assert pacing is not None and pacing.snapshot()["rate_limit"] == 5.0
    assert pacing.snapshot()["concurrency_limit"] == 6 and pacing.snapshot()["max_workers"] == 6
    rate_only = Pacing.from_config(SimpleNamespace(workers=6, max_rate=5.0, adaptive=False), Clock())  # type: ignore[arg-type]
    assert rate_only is not None and rate_only.concurrency is None and rate_only.snapshot()["adaptive"] is False


def test_pacing_takes_the_permit_then_the_slot_and_releases_on_cancel() -> None:
    clock = Clock()
    pacing = Pacing(clock, workers=2, max_rate=10, adaptive=True)
    first = Deferred.fromCoroutine(pacing.admit())
    second = Deferred.fromCoroutine(pacing.admit())  # permit now, slot in 0.1 s
    third = Deferred.fromCoroutine(pacing.admit())  # no permit yet: takes no slot
    assert first.called and not second.called and not third.called
    assert pacing.concurrency is not None and pacing.concurrency.current == 2
    second.cancel()  # cancelled while waiting for its slot: its permit goes back
    assert cancelled(second)
    assert pacing.concurrency.current == 2  # third took it, and waits for the slot second left
    clock.advance(0.1)
    assert third.called
    pacing.done(first.result, RequestFailed("http_429", "busy", code=429, retryable=True))
    pacing.done(third.result, None)
    assert pacing.snapshot()["overloads"] == 1 and pacing.snapshot()["answers"] == 1
    waiting = Deferred.fromCoroutine(pacing.admit())
    pacing.stop()
    clock.advance(1)
    assert cancelled(waiting) and pacing.concurrency.current == 0


# -- real clock, real sockets ----------------------------------------------------------------------


@pytest.fixture
def overload_server(tmp_path: Path) -> Iterator[OverloadServer]:
    """Refuses above 8 at once, 50 ms of work each: at most 160 answers/s."""
    with OverloadServer(tmp_path, threshold=8, delay=0.05) as server:
        yield server


async def drive(server: OverloadServer, count: int, *, rate: float | None, workers: int = 32) -> dict[str, Any]:
    """``count`` echo requests from ``workers`` concurrent callers through the limiters, each
    retried on overload (bounded); returns timings, the answers and samples of the limit."""
    pool = HTTPConnectionPool(global_reactor, persistent=True)
    pool.maxPersistentPerHost = workers
    adaptive = AdaptiveConcurrency(workers, global_reactor)
    limiter = RateLimiter(rate, global_reactor) if rate else None
    answers: dict[int, Any] = {}
    sent: list[float] = []
    lines = iter(range(count))

    async def one(index: int) -> None:
        for attempt in range(100):
            permit = await adaptive.acquire()
            if limiter is not None:
                await limiter.acquire()
            sent.append(time.monotonic())
            body = {"data": {"ndarray": [[index, 1.5]]}, "meta": {"tags": {"batch_index": index}}}
            try:
                response = await treq.post(server.url, json=body, pool=pool, timeout=10)
                content = await response.content()
            except Exception:
                adaptive.release(permit, "overload")  # a timeout
                raise
            adaptive.release(permit, outcome_of(None if response.code == 200 else RequestFailed(
                f"http_{response.code}", "", code=response.code, retryable=True)))
            if response.code == 200:
                answers[index] = json.loads(content)
                return
            await deferLater(global_reactor, random.uniform(0, min(1.0, 0.02 * 2 ** attempt)))
        raise AssertionError(f"request {index} still refused after 100 attempts")

    async def caller() -> None:
        for index in lines:
            await one(index)

    limits: list[int] = []
    probe = LoopingCall(lambda: limits.append(adaptive.limit))
    probe.start(0.01)
    started = time.monotonic()
    try:
        await gatherResults([Deferred.fromCoroutine(caller()) for _ in range(workers)], consumeErrors=True)
    finally:
        probe.stop()
        await pool.closeCachedConnections()
    stats = json.loads(await (await treq.get(server.url.replace("/api/v1.0/predictions", "/stats"))).content())
    return {"elapsed": time.monotonic() - started, "answers": answers, "sent": sent, "limits": limits,
            "adaptive": adaptive.snapshot(), "server": stats}


@pytest_twisted.ensureDeferred
async def test_adaptive_settles_near_threshold_and_finishes_every_line(overload_server: OverloadServer) -> None:
    result = await drive(overload_server, 1200, rate=None)
    answers, server = result["answers"], result["server"]
    assert sorted(answers) == list(range(1200))
    assert all(answers[i]["meta"]["tags"]["batch_index"] == i for i in answers)
    assert server["answers"] == 1200 and server["max_in_flight"] <= 8
    settled = result["limits"][len(result["limits"]) // 4:]
    mean_limit = sum(settled) / len(settled)
    print(f"adaptive: {1200 / result['elapsed']:.0f} answers/s, mean limit {mean_limit:.1f}, "
          f"server mean in flight {server['mean_in_flight']:.1f}, {result['adaptive']}")
    assert 5 <= mean_limit <= 11, result["adaptive"]
    assert server["mean_in_flight"] >= 3.2  # the model was kept busy (lower only when CPU-starved)
    assert result["adaptive"]["overload_share"] < 0.25


@pytest.fixture
def roomy_server(tmp_path: Path) -> Iterator[OverloadServer]:
    """Capacity far above the rate asked (32 at once, 10 ms each): the rate alone holds requests back."""
    with OverloadServer(tmp_path, threshold=32, delay=0.01) as server:
        yield server


@pytest_twisted.ensureDeferred
async def test_max_rate_held_within_ten_percent(roomy_server: OverloadServer) -> None:
    result = await drive(roomy_server, 480, rate=120)
    sent = result["sent"]
    assert sorted(result["answers"]) == list(range(480))
    span = sent[-1] - sent[0]
    measured = (len(sent) - 1) / span
    print(f"max-rate 120: {measured:.1f} requests/s over {span:.2f} s, {result['adaptive']}")
    assert abs(measured - 120) <= 12
    windows = [sum(1 for t in sent if sent[0] + s <= t < sent[0] + s + 1) for s in range(int(span))]
    assert all(96 <= n <= 144 for n in windows), windows  # smooth second by second, not bursts
