"""Property: whatever the input lines and whatever the answers, one output line per input line.

Hypothesis generates input files (JSON of any depth, invalid UTF-8, NUL, BOM, huge numbers,
blank and over-long lines) and, per request, what the "model" does (echo, random JSON, wrong
row counts, wrong types, deep or unwritable answers, RequestFailed of any kind, exceptions raised
by the transport at once or later). Each run goes through the real reader (with a small
``--max-line-bytes``), the real codecs and engine and the real writer, on a fake clock, for both
protocols and for single and mini-batch requests. Every example must give exactly one output
line per input line with that line's ``batch_index`` and ``batch_instance_id``, counts that
match the error lines, and exit status 0 when all succeeded, else 1.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.core.failures import RequestFailed
from seldon_batch_tx.exits import EXIT_FAILED_LINES, EXIT_OK
from seldon_batch_tx.outputs.writer import LineWriter
from seldon_batch_tx.pipeline.engine import BatchRun
from seldon_batch_tx.pipeline.reader import instance_id, read_items
from seldon_batch_tx.pipeline.stats import BatchStats
from seldon_batch_tx.pipeline.summary import Summary

JSONDict = dict[str, Any]
MAX_LINE = 400

# Keys from letters that can never spell "status": an answer's own keys cannot fake an error line.
keys = st.text(alphabet='[]{}"\\abc', max_size=4)
scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(alphabet='[]{}"\\ab,:\u00e9\u2028', max_size=6))
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(keys, c, max_size=3),
                           max_leaves=12)
numbers = st.integers(-1000, 1000) | st.floats(-1e6, 1e6, allow_nan=False)


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


@st.composite
def rows(draw: st.DrawFn) -> bytes:
    """A good array line: flat, or 1-3 rows of 2 numbers."""
    if draw(st.booleans()):
        return json.dumps(draw(st.lists(numbers, min_size=2, max_size=2))).encode()
    return json.dumps(draw(st.lists(st.lists(numbers, min_size=2, max_size=2), min_size=1, max_size=3))).encode()


lines = st.one_of(
    rows(), rows(), rows(),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda v: json.dumps({"data": {"ndarray": v}, "meta": {"tags": {"a": 1}}}).encode(),
              st.lists(numbers, min_size=1, max_size=3)),
    st.builds(lambda v: json.dumps({"inputs": [{"name": "x", "shape": [len(v)], "datatype": "FP64", "data": v}]})
              .encode(), st.lists(numbers, min_size=1, max_size=3)),
    st.integers(1, 300).map(_deep), st.just(_deep(100_000)), st.just(b"[" * 100_000),
    st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")),  # invalid UTF-8, NUL...
    st.sampled_from([b"", b"   ", b"\r", b"\x00", b"[1]\x00", b"\xef\xbb\xbf[1, 2]", b"\xff\xfe[1]",
                     b"1" * 5000, b"[1e999, 2]", b"[-1e999]", b"NaN", b"[NaN, 1]", b"[Infinity]",
                     b"[1" + b"0" * 400 + b".5]", b'"\\ud800"', b"[1] [2]"]),
    st.integers(MAX_LINE - 2, MAX_LINE + 2).map(lambda n: b"[" + b"1," * ((n - 3) // 2) + b"1" * (2 - n % 2) + b"]"),
    st.just(b"[" + b"7," * 100_000 + b"7]"),  # very long
)


def not_json(name: str) -> Any:
    """Output lines are strict JSON: no NaN or Infinity."""
    raise AssertionError(f"{name} in an output line")


class Exploding(Exception):
    """A transport bug that is not a RequestFailed."""


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def v2_echo(body: JSONDict) -> JSONDict:
    return {"id": body.get("id"), "outputs": [dict(t) for t in body.get("inputs", [])]}


def apply(mode: tuple[str, Any], body: JSONDict, protocol: str) -> Deferred[JSONDict]:
    """What the model (or the transport) does with one request."""
    kind, arg = mode
    echo = json.loads(json.dumps(body))
    if protocol == "v2":
        echo = v2_echo(echo)
    if kind == "echo":
        return succeed(echo)
    if kind == "value":
        return succeed(arg)
    if kind == "drop_row":  # one row fewer (or more) than asked for
        if protocol == "v2":
            for out in echo["outputs"]:
                out["shape"] = [max(out["shape"][0] + arg, 0), *out["shape"][1:]]
        else:
            data = echo.get("data", {})
            if isinstance(data.get("ndarray"), list):
                data["ndarray"] = data["ndarray"][:-1] if arg < 0 else data["ndarray"] + data["ndarray"][:1]
            if isinstance(data.get("tensor"), dict):
                data["tensor"]["shape"][0] += arg
        return succeed(echo)
    if kind == "shape":  # random shapes and values in the right place
        shape, values = arg
        if protocol == "v2":
            return succeed({"outputs": [{"name": "o", "shape": shape, "datatype": "FP64", "data": values}]})
        return succeed({"data": {"tensor": {"shape": shape, "values": values}}})
    if kind == "deep":
        return succeed({"data": {"ndarray": nested(arg)}, "outputs": nested(arg)})
    if kind == "surrogate":
        return succeed({**echo, "extra": "\ud800"})
    if kind == "failed":
        info, retryable = arg
        return fail(RequestFailed(info, f"{info} happened", code=503 if info == "http_503" else None,
                                  retryable=retryable, info=info))
    if kind == "raise_now":
        raise Exploding("at once")
    return fail(Exploding("later"))


modes = st.one_of(
    st.just(("echo", None)), st.just(("echo", None)), st.just(("echo", None)),
    st.tuples(st.just("value"), json_values),
    st.tuples(st.just("drop_row"), st.sampled_from([-1, 1])),
    st.tuples(st.just("shape"), st.tuples(st.lists(st.integers(-1, 4), max_size=3) | json_values,
                                          st.lists(numbers, max_size=8) | json_values)),
    st.tuples(st.just("deep"), st.sampled_from([300, 2000])),
    st.just(("surrogate", None)),
    st.tuples(st.just("failed"), st.tuples(st.sampled_from(["http_503", "connection", "timeout", "bad_response",
                                                            "response_too_large", "grpc_UNAVAILABLE"]),
                                           st.booleans())),
    st.just(("raise_now", None)), st.just(("raise_later", None)),
)


class ModelTransport:
    """Answers request n with ``modes[n % len(modes)]``."""

    def __init__(self, modes: list[tuple[str, Any]], protocol: str) -> None:
        self.modes = modes
        self.protocol = protocol
        self.sent = 0

    def start(self) -> None:
        pass

    def stop(self) -> Deferred[None]:
        return succeed(None)

    def send(self, body: JSONDict, puid: str) -> Deferred[JSONDict]:
        mode = self.modes[self.sent % len(self.modes)]
        self.sent += 1
        return apply(mode, body, self.protocol)


DATA_TYPES = {"seldon": [("data", "ndarray"), ("data", "tensor"), ("json", "ndarray"), ("raw", "ndarray")],
              "v2": [("data", "ndarray"), ("raw", "ndarray"), ("str", "ndarray")]}


# One test per protocol and batch size, not pytest.mark.parametrize: pytest-twisted rebinds a
# @given test's inner function per item, which breaks parametrized hypothesis tests.
SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(data=st.data())
def test_seldon_single_requests(data: st.DataObject) -> None:
    check_one_line_per_input_line("seldon", 1, data)


@SETTINGS
@given(data=st.data())
def test_seldon_mini_batches(data: st.DataObject) -> None:
    check_one_line_per_input_line("seldon", 3, data)


@SETTINGS
@given(data=st.data())
def test_v2_single_requests(data: st.DataObject) -> None:
    check_one_line_per_input_line("v2", 1, data)


@SETTINGS
@given(data=st.data())
def test_v2_mini_batches(data: st.DataObject) -> None:
    check_one_line_per_input_line("v2", 3, data)


def check_one_line_per_input_line(protocol: str, batch_size: int, data: st.DataObject) -> None:
    inputs = data.draw(st.lists(lines, min_size=1, max_size=12), label="lines")
    answers = data.draw(st.lists(modes, min_size=1, max_size=6), label="answers")
    data_type, payload_type = data.draw(st.sampled_from(DATA_TYPES[protocol]), label="data type")
    workers = data.draw(st.integers(1, 4), label="workers")
    retries = data.draw(st.integers(0, 2), label="retries")
    ordered = data.draw(st.booleans(), label="ordered")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        config = BatchConfig(deployment_name="m", input_data_path="in", output_data_path=str(out), batch_id="B",
                             protocol=protocol, data_type=data_type, payload_type=payload_type,
                             batch_size=batch_size, workers=workers, retries=retries, ordered=ordered,
                             max_line_bytes=MAX_LINE, outage_timeout=0)  # pausing: test_outage_props.py
        stream = io.BufferedReader(io.BytesIO(b"".join(line + b"\n" for line in inputs)))  # type: ignore[arg-type]
        writer = LineWriter(config.output_data_path)
        clock = Clock()
        run = BatchRun(config, read_items(stream, "B", max_line_bytes=MAX_LINE),
                       ModelTransport(answers, protocol), writer, BatchStats("B", "in", total=len(inputs)), clock)
        done = Deferred.fromCoroutine(run.run())
        got: list[Summary] = []
        done.addCallback(got.append)
        for _ in range(600):  # backoff is at most 10 s a retry: far more than enough fake seconds
            if got:
                break
            clock.advance(1)
        writer.close()
        assert got, "the run did not finish"
        summary = got[0]
        records = [json.loads(x, parse_constant=not_json) for x in out.read_bytes().split(b"\n") if x]

    indexes = sorted(r["meta"]["tags"]["batch_index"] for r in records)
    assert indexes == list(range(len(inputs)))
    for r in records:
        assert r["meta"]["tags"]["batch_instance_id"] == instance_id("B", r["meta"]["tags"]["batch_index"])
    errors = [r["status"]["info"] for r in records
              if isinstance(r.get("status"), dict) and r["status"].get("status") == "FAILURE"]
    for kind in sorted(set(errors)):
        event(f"error line: {kind}")  # what the examples covered (--hypothesis-show-statistics)
    failed = len(errors)
    assert (summary.failed, summary.succeeded, summary.not_processed) == (failed, len(inputs) - failed, 0)
    assert summary.stopped_early is None
    assert summary.exit_code == (EXIT_FAILED_LINES if failed else EXIT_OK)
