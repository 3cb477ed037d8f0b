"""Issue 19, isolation in mini-batches, in the engine: a scripted transport and a fake clock.

What each request held is recorded, so the tests check both the output lines (only the offending
lines fail) and the requests (no ragged array, no request over the row limit, splits bounded,
splitting not spent from --retries).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.core.failures import RequestFailed
from seldon_batch_tx.core.items import Item
from seldon_batch_tx.outputs.writer import LineWriter
from seldon_batch_tx.pipeline.engine import BatchRun
from seldon_batch_tx.pipeline.reader import instance_id
from seldon_batch_tx.pipeline.stats import BatchStats
from seldon_batch_tx.pipeline.summary import Summary

JSONDict = dict[str, Any]


class Model:
    """A transport answering like a model: ``answer(body)`` per request, every body kept."""

    def __init__(self, answer: Callable[[JSONDict], Deferred[JSONDict]]) -> None:
        self.answer = answer
        self.bodies: list[JSONDict] = []

    def start(self) -> None:
        pass

    def stop(self) -> Deferred[None]:
        return succeed(None)

    def send(self, body: JSONDict, puid: str) -> Deferred[JSONDict]:
        self.bodies.append(json.loads(json.dumps(body)))
        return self.answer(body)


def seldon_rows(body: JSONDict) -> list[Any]:
    data = body["data"]
    if "ndarray" in data:
        return list(data["ndarray"])
    shape, values = data["tensor"]["shape"], data["tensor"]["values"]
    width = len(values) // shape[0]
    return [values[i * width:(i + 1) * width] for i in range(shape[0])]


def seldon_echo(refuse: object = 666) -> Callable[[JSONDict], Deferred[JSONDict]]:
    """Echo the request, refusing (HTTP 400) any request holding ``refuse``."""
    def answer(body: JSONDict) -> Deferred[JSONDict]:
        if any(refuse in row for row in seldon_rows(body)):
            return fail(RequestFailed("http_400", f"HTTP 400: {refuse} is refused", code=400, info="http_400"))
        return succeed(json.loads(json.dumps(body)))
    return answer


def v2_echo(body: JSONDict) -> Deferred[JSONDict]:
    tensor = body["inputs"][0]
    return succeed({"model_name": "m", "outputs": [{**tensor, "name": "out"}]})


def run_lines(tmp_path: Path, lines: list[str], model: Model, stop_after: int | None = None,
              **kw: Any) -> tuple[Summary, dict[int, JSONDict], BatchRun]:
    config = BatchConfig(deployment_name="d", input_data_path="in", output_data_path=str(tmp_path / "out"),
                         batch_id="B", **kw)
    items = iter([Item(i, instance_id("B", i), line.encode()) for i, line in enumerate(lines)])
    stats = BatchStats("B", "in", total=len(lines))
    clock = Clock()
    run = BatchRun(config, items, model, LineWriter(config.output_data_path), stats, clock)  # type: ignore[arg-type]
    if stop_after is not None:
        answer = model.answer

        def stopping(body: JSONDict) -> Deferred[JSONDict]:
            if len(model.bodies) == stop_after:
                run.stop("test stop")
            return answer(body)
        model.answer = stopping
    got: list[Summary] = []
    Deferred.fromCoroutine(run.run()).addCallback(got.append)
    for _ in range(300):
        if got:
            break
        clock.advance(1)
    assert got, "the run did not end"
    out = [json.loads(line) for line in Path(config.output_data_path).read_text().splitlines()]
    indexes = [r["meta"]["tags"]["batch_index"] for r in out]
    assert len(indexes) == len(set(indexes)), "at most one output line per input line"
    if stop_after is None:
        assert sorted(indexes) == list(range(len(lines)))
    return got[0], dict(zip(indexes, out, strict=True)), run


def failures(out: dict[int, JSONDict]) -> dict[int, str]:
    return {i: r["status"]["info"] for i, r in out.items() if r.get("status", {}).get("status") == "FAILURE"}


def test_v2_a_line_of_another_shape_first_goes_alone(tmp_path: Path) -> None:
    """The issue's V2 case: a 3-column line first in a unit of 8 no longer fails the 7 after it."""
    lines = ["[1, 2, 3]"] + [f"[{i}, 1, 1, 1]" for i in range(7)]
    model = Model(v2_echo)
    summary, out, _ = run_lines(tmp_path, lines, model, protocol="v2", batch_size=8)
    assert not failures(out) and summary.exit_code == 0
    assert [b["inputs"][0]["shape"] for b in model.bodies] == [[1, 3], [7, 4]]
    assert out[3]["outputs"][0]["data"] == [2, 1, 1, 1]


def test_v2_datatypes_that_differ_share_no_request(tmp_path: Path) -> None:
    lines = ['["a", "b"]', "[1, 2]", '["c", "d"]', "[true, false]", "[3, 4]"]
    model = Model(v2_echo)
    _, out, _ = run_lines(tmp_path, lines, model, protocol="v2", batch_size=8)
    assert not failures(out)
    assert sorted(b["inputs"][0]["datatype"] for b in model.bodies) == ["BOOL", "BYTES", "INT64"]


def test_seldon_ndarray_never_sends_a_ragged_array(tmp_path: Path) -> None:
    """Lines of 3 and 4 columns, a ragged line, a 2-row line: every request is rectangular."""
    lines = ["[[1, 2], [3]]", "[1, 2, 3, 4]", "[1, 2, 3]", "[5, 6, 7, 8]", "[[1, 2], [3]]",
             "[[1, 1, 1, 1], [2, 2, 2, 2]]", "[9, 9, 9]", '["a", "b", "c", "d"]']
    model = Model(seldon_echo())
    _, out, _ = run_lines(tmp_path, lines, model, batch_size=8)
    assert not failures(out)
    for body in model.bodies:
        array = body["data"]["ndarray"]
        if array == [[1, 2], [3]]:
            continue  # the ragged line itself, alone
        assert len({json.dumps([len(r) if isinstance(r, list) else -1 for r in row]) if isinstance(row[0], list)
                    else len(row) for row in array}) == 1, array
    assert out[0]["data"]["ndarray"] == out[4]["data"]["ndarray"] == [[1, 2], [3]]  # each alone, as it was
    assert out[5]["data"]["ndarray"] == [[1, 1, 1, 1], [2, 2, 2, 2]]
    assert out[7]["data"]["ndarray"] == [["a", "b", "c", "d"]]
    assert len(model.bodies) == 5  # ragged, 4 columns of numbers (3 lines), 3 columns (2), ragged, texts


def test_seldon_ndarray_stacks_only_lines_of_one_kind(tmp_path: Path) -> None:
    """Numbers, texts and booleans each share their own request (never one array of strings); a line
    of mixed or nested leaves goes alone; every answer keeps its own values."""
    lines = ["[[1.5, 2.5]]", '[["a", "b"]]', "[[3, 4]]", "[[true, false]]", '[["c", "d"]]', "[[1, null]]",
             "[[1, [2]]]", "[[false, true]]", '[[5, "e"]]', "[6, 7]", "[[9007199254740993, 1]]"]
    model = Model(seldon_echo())
    _, out, _ = run_lines(tmp_path, lines, model, batch_size=16)
    assert not failures(out)
    assert [out[i]["data"]["ndarray"] for i in range(len(lines))] == [
        json.loads(line) if line.startswith("[[") else [json.loads(line)] for line in lines]
    assert sorted(len(b["data"]["ndarray"]) for b in model.bodies) == [1, 1, 1, 1, 2, 2, 3]  # the big int alone


def test_a_400_is_split_until_the_bad_line_stands_alone(tmp_path: Path) -> None:
    """One refused line of 8: 7 requests (8, 4+4, 2+2, 1+1: halves depth first), no retry spent,
    only that line fails."""
    lines = [f"[{i}, 1]" for i in range(5)] + ["[666, 1]"] + [f"[{i}, 1]" for i in range(6, 8)]
    model = Model(seldon_echo())
    summary, out, run = run_lines(tmp_path, lines, model, batch_size=8, payload_type="tensor")
    assert failures(out) == {5: "http_400"}
    assert out[5]["status"]["code"] == 400 and "666 is refused" in out[5]["status"]["reason"]
    assert [len(seldon_rows(b)) for b in model.bodies] == [8, 4, 4, 2, 1, 1, 2]
    assert run.stats.retries == 0 and summary.failed == 1


def test_every_line_refused_costs_at_most_2n_minus_1_requests(tmp_path: Path) -> None:
    lines = [f"[666, {i}]" for i in range(8)]
    model = Model(seldon_echo())
    _, out, _ = run_lines(tmp_path, lines, model, batch_size=8)
    assert failures(out) == dict.fromkeys(range(8), "http_400")
    assert len(model.bodies) == 15


def test_grpc_invalid_argument_is_split_too(tmp_path: Path) -> None:
    def answer(body: JSONDict) -> Deferred[JSONDict]:
        if any(2 in row for row in seldon_rows(body)):
            return fail(RequestFailed("grpc_INVALID_ARGUMENT", "gRPC INVALID_ARGUMENT: no 2", code=3, info="x"))
        return succeed(body)
    _, out, _ = run_lines(tmp_path, [f"[{i}]" for i in range(6)], Model(answer), batch_size=6)
    assert failures(out) == {2: "grpc_INVALID_ARGUMENT"}


def test_a_server_fault_is_retried_not_split(tmp_path: Path) -> None:
    """A 500 is the server's fault: the request is retried whole (--retries 2), never split."""
    model = Model(lambda body: fail(RequestFailed("http_500", "HTTP 500", code=500, retryable=True,
                                                  info="http_500")))
    _, out, run = run_lines(tmp_path, ["[1]", "[2]", "[3]", "[4]"], model, batch_size=4, retries=2)
    assert failures(out) == dict.fromkeys(range(4), "http_500")
    assert [len(seldon_rows(b)) for b in model.bodies] == [4, 4, 4]
    assert run.stats.retries == 2


def test_an_answer_that_cannot_be_carried_fails_that_line_only(tmp_path: Path) -> None:
    """A row the transport refuses to carry (``inf``: bad_response) or rows that do not add up."""
    def answer(body: JSONDict) -> Deferred[JSONDict]:
        rows = seldon_rows(body)
        if any(999 in row for row in rows):
            return fail(RequestFailed("bad_response", "answer holds a number JSON cannot carry (NaN or Infinity)",
                                      code=200, info="bad_response"))
        if len(rows) > 1 and any(7 in row for row in rows):
            return succeed({"data": {"ndarray": rows[:-1]}})  # a row lost: response_mismatch
        return succeed(body)
    lines = ["[1]", "[999]", "[3]", "[4]", "[5]", "[6]", "[7]", "[8]"]
    _, out, _ = run_lines(tmp_path, lines, Model(answer), batch_size=8)
    assert failures(out) == {1: "bad_response"}
    assert out[6]["data"]["ndarray"] == [[7]]


def test_max_batch_rows_caps_every_request(tmp_path: Path) -> None:
    """Lines of 1-3 rows at -s 8 and --max-batch-rows 16: requests of at most 16 rows; a line of 20
    rows is sent alone (the model decides)."""
    lines = [json.dumps([[i, 1]] * (1 + i % 3)) for i in range(40)]
    lines.insert(17, json.dumps([[0, 0]] * 20))
    for protocol, answer in (("seldon", seldon_echo()), ("v2", v2_echo)):
        model = Model(answer)
        _, out, _ = run_lines(tmp_path, lines, model, protocol=protocol, batch_size=8, max_batch_rows=16)
        assert not failures(out)
        sizes = [b["inputs"][0]["shape"][0] if protocol == "v2" else len(seldon_rows(b)) for b in model.bodies]
        assert sizes.count(20) == 1 and all(n <= 16 for n in sizes if n != 20), sizes
        assert max(n for n in sizes if n != 20) >= 12  # still mini-batched
        (tmp_path / "out").unlink()


def test_a_stop_during_a_split_leaves_the_rest_for_resume(tmp_path: Path) -> None:
    """A stop while a unit is being split: the requests not yet sent write nothing (--resume sends them)."""
    lines = [f"[{i}]" for i in range(7)] + ["[666]"]
    model = Model(seldon_echo())
    summary, out, _ = run_lines(tmp_path, lines, model, stop_after=2, batch_size=8)
    assert [len(seldon_rows(b)) for b in model.bodies] == [8, 4]
    assert sorted(out) == [0, 1, 2, 3] and not failures(out)
    assert summary.exit_code != 0


def test_a_model_exception_after_a_retry_still_splits_the_unit(tmp_path: Path) -> None:
    """A unit's first attempt meets a server fault (503, retried), its retry a model exception on one line
    (``split_first``): the unit is split and only that line fails, as when the exception comes first."""
    faults = iter([RequestFailed("http_503", "HTTP 503: busy", code=503, retryable=True, info="http_503")])
    echo = seldon_echo()

    def answer(body: JSONDict) -> Deferred[JSONDict]:
        fault = next(faults, None)
        if fault is not None:
            return fail(fault)
        if any(777 in row for row in seldon_rows(body)):
            return fail(RequestFailed("http_500", "HTTP 500: the model raised", code=500, retryable=True,
                                      info="http_500", split_first=True))
        return echo(body)

    lines = ["[1, 1]", "[777, 1]", "[2, 2]", "[3, 3]"]
    _, out, _ = run_lines(tmp_path, lines, Model(answer), batch_size=4, retries=1)
    assert failures(out) == {1: "http_500"}


def test_a_unit_of_lines_the_model_raises_on_costs_2n_minus_1_requests_and_their_retries(tmp_path: Path) -> None:
    """Every line makes the model raise (HTTP 500 MICROSERVICE_INTERNAL_ERROR): halving isolates them in 15
    requests for 8 lines (the unit is not retried whole), then each line alone gets its -r retries."""
    def answer(body: JSONDict) -> Deferred[JSONDict]:
        return fail(RequestFailed("http_500", "HTTP 500: the model raised", code=500, retryable=True,
                                  info="http_500", split_first=True))

    model = Model(answer)
    _, out, run = run_lines(tmp_path, [f"[777, {i}]" for i in range(8)], model, batch_size=8, retries=3)
    assert failures(out) == {i: "http_500" for i in range(8)}
    assert len(model.bodies) == 15 + 8 * 3 and run.stats.retries == 8 * 3


def test_integers_past_2_53_stack_only_with_integers(tmp_path: Path) -> None:
    """Timestamps in nanoseconds stack together (int64 holds them); with a float line they never share a
    request (a float array would round them); a large float beside small integers is just a number."""
    lines = ["[[1700000000000000001, 1]]", "[[1700000000000000002, 2]]", "[[0.5, 1]]", "[[9007199254740993, 1.5]]",
             "[[1, 1e20]]", "[[2, 1e20]]"]
    model = Model(seldon_echo())
    _, out, _ = run_lines(tmp_path, lines, model, batch_size=8)
    assert not failures(out)
    assert sorted(b["data"]["ndarray"] for b in model.bodies) == sorted([
        [[1700000000000000001, 1], [1700000000000000002, 2]], [[0.5, 1], [1, 1e20], [2, 1e20]],
        [[9007199254740993, 1.5]]])
