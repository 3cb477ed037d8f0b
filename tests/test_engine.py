"""The engine's promises, with no network: bounded concurrency, retries, one line per input line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.core.items import Item
from seldon_batch_tx.outputs.writer import LineWriter
from seldon_batch_tx.pipeline.attempts import backoff_delay
from seldon_batch_tx.pipeline.engine import BatchRun
from seldon_batch_tx.pipeline.reader import instance_id
from seldon_batch_tx.pipeline.stats import BatchStats
from seldon_batch_tx.pipeline.summary import Summary
from seldon_batch_tx.transports.treq_client import RestTransport
from tests.targets import target_of


class Echo(Resource):
    """Answers like the Seldon echo model, or with scripted statuses for chosen attempts."""

    isLeaf = True

    def __init__(self, script: dict[int, list[tuple[int, dict[str, str], bytes]]] | None = None,
                 hold: bool = False) -> None:
        super().__init__()
        self.script = script or {}
        self.hold = hold
        self.held: list[Request] = []
        self.seen: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []

    def render_POST(self, request: Request) -> bytes | int:
        body = json.loads(request.content.read())
        self.seen.append(body)
        self.headers.append({k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()})
        index = body["meta"]["tags"]["batch_index"]
        steps = self.script.get(index)
        if steps:
            code, headers, payload = steps.pop(0)
            request.setResponseCode(code)
            for k, v in headers.items():
                request.setHeader(k, v)
            return payload
        if self.hold:
            self.held.append(request)
            return NOT_DONE_YET
        return json.dumps(body).encode()

    def release_all(self) -> None:
        held, self.held = self.held, []
        for request in held:
            request.write(json.dumps(json.loads(request.content.getvalue())).encode())
            request.finish()


def make_run(tmp_path: Path, lines: list[str], resource: Resource, clock: Clock,
             **kw: Any) -> tuple[BatchRun, StubTreq, Path]:
    config = BatchConfig(deployment_name="d", input_data_path="in", output_data_path=str(tmp_path / "out"),
                         batch_id="B", gateway_type="seldon", host="model", **kw)
    stub = StubTreq(resource)
    items = iter([Item(i, instance_id("B", i), line.encode()) for i, line in enumerate(lines)])
    writer = LineWriter(config.output_data_path)
    stats = BatchStats("B", "in", total=len(lines))
    transport = RestTransport(config, clock, client=stub, target=target_of(config))
    run = BatchRun(config, items, transport, writer, stats, clock)
    return run, stub, Path(config.output_data_path)


def finish(run: BatchRun, stub: StubTreq, clock: Clock, rounds: int = 200) -> Summary:
    d = Deferred.fromCoroutine(run.run())
    results: list[Summary] = []
    d.addCallback(results.append)
    for _ in range(rounds):
        stub.flush()
        if results:
            break
        clock.advance(1)
    run._writer.close()
    assert results, "run did not finish"
    return results[0]


def output(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_never_more_than_workers_in_flight(tmp_path: Path) -> None:
    """With 3 workers, a server holding every request open sees exactly 3 at a time."""
    clock, echo = Clock(), Echo(hold=True)
    run, stub, out = make_run(tmp_path, ["[[1]]"] * 10, echo, clock, workers=3)
    d = Deferred.fromCoroutine(run.run())
    peak = 0
    for _ in range(20):
        stub.flush()
        peak = max(peak, len(echo.held))
        echo.release_all()
        stub.flush()
        if d.called:
            break
    assert peak == 3
    assert d.called
    run._writer.close()
    assert sorted(o["meta"]["tags"]["batch_index"] for o in output(out)) == list(range(10))


def test_retries_429_and_5xx_but_not_400(tmp_path: Path) -> None:
    """503 and 429 are retried (honouring Retry-After); a 400 fails at once with its status code."""
    clock = Clock()
    echo = Echo({
        0: [(503, {}, b"busy"), (429, {"Retry-After": "5"}, b"slow down")],
        1: [(400, {}, b'{"status": {"info": "bad shape"}}')],
        2: [(500, {}, b"boom")] * 5,
    })
    run, stub, out = make_run(tmp_path, ["[[1]]", "[[2]]", "[[3]]"], echo, clock, retries=2)
    summary = finish(run, stub, clock)
    lines = {o["meta"]["tags"]["batch_index"]: o for o in output(out)}
    assert lines[0]["data"] == {"ndarray": [[1]]}
    assert lines[1]["status"]["code"] == 400 and "HTTP 400" in lines[1]["status"]["reason"]
    assert lines[2]["status"]["code"] == 500 and "after 3 attempts" in lines[2]["status"]["reason"]
    assert sum(1 for b in echo.seen if b["meta"]["tags"]["batch_index"] == 1) == 1
    assert summary.retried == 4 and summary.failed == 2 and summary.exit_code == 1


def test_retry_after_is_honoured() -> None:
    assert backoff_delay(0, 5.0) == 5.0
    assert backoff_delay(10, None) <= 10.0


def test_bad_lines_and_mini_batches_still_give_one_line_each(tmp_path: Path) -> None:
    """Malformed lines fail alone; the rest of their mini-batch is sent and split back."""
    clock, echo = Clock(), Echo()
    lines = ["[[1]]", "oops", "[[3]]", "", "[[5]]", '{"x": 1}', "[[7]]"]
    run, stub, out = make_run(tmp_path, lines, echo, clock, batch_size=3, workers=2)
    summary = finish(run, stub, clock)
    got = {o["meta"]["tags"]["batch_index"]: o for o in output(out)}
    assert sorted(got) == list(range(7)) and len(output(out)) == 7
    assert {i for i, o in got.items() if "status" in o} == {1, 3, 5}
    assert got[2]["data"]["ndarray"] == [[3]]
    assert got[2]["meta"]["tags"]["batch_instance_id"] == instance_id("B", 2)
    assert summary.succeeded == 4 and summary.failed == 3


def test_headers_and_tags_on_every_request(tmp_path: Path) -> None:
    clock, echo = Clock(), Echo()
    run, stub, _ = make_run(tmp_path, ['{"a": 1}'], echo, clock, data_type="json", call_credentials_token="s3")
    finish(run, stub, clock)
    assert echo.seen[0] == {"jsonData": {"a": 1}, "meta": {"tags": {
        "batch_id": "B", "batch_instance_id": instance_id("B", 0), "batch_index": 0}}}
    assert echo.headers[0]["seldon-puid"] == instance_id("B", 0)
    assert echo.headers[0]["x-auth-token"] == "s3"


def test_max_failures_stops_early(tmp_path: Path) -> None:
    """--max-failures stops taking new lines and reports it in the exit status."""
    clock = Clock()
    echo = Echo({i: [(404, {}, b"no such model")] for i in range(50)})
    run, stub, out = make_run(tmp_path, ["[[1]]"] * 50, echo, clock, max_failures=5)
    summary = finish(run, stub, clock)
    assert summary.stopped_early and summary.exit_code == 3
    assert 5 <= summary.failed < 50 and len(output(out)) == summary.failed


class BrokenTransport:
    """A transport with a bug: every send raises something that is not a RequestFailed."""

    def start(self) -> None:
        pass

    def stop(self) -> Deferred[None]:
        return Deferred.fromCoroutine(_nothing())

    def send(self, body: dict[str, Any], puid: str) -> Deferred[dict[str, Any]]:
        raise KeyError("surprise")


async def _nothing() -> None:
    return None


def test_a_transport_bug_still_ends_as_one_error_line_per_input(tmp_path: Path) -> None:
    """Nothing is lost even when a transport raises something unexpected: the lines become error records."""
    clock = Clock()
    config = BatchConfig(deployment_name="d", input_data_path="in", output_data_path=str(tmp_path / "out"),
                         batch_id="B")
    items = iter([Item(i, instance_id("B", i), b"[[1]]") for i in range(4)])
    writer = LineWriter(config.output_data_path)
    run = BatchRun(config, items, BrokenTransport(), writer, BatchStats("B", "in", total=4), clock)
    d = Deferred.fromCoroutine(run.run())
    assert d.called
    writer.close()
    lines = output(tmp_path / "out")
    assert sorted(r["meta"]["tags"]["batch_index"] for r in lines) == [0, 1, 2, 3]
    assert all(r["status"]["info"] == "internal_error" and "surprise" in r["status"]["reason"] for r in lines)
