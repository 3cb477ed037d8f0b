"""Issue 19, property: random mixes of good and bad lines, batch sizes and row limits.

Whatever the mix, every input line gets exactly one output line; an error line comes exactly for
the lines that are bad (not JSON, refused by the model, answered with a row that cannot be
carried), each good line gets its own rows back, and no request passes ``--max-batch-rows``
unless it holds a single line.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, fail, succeed

from seldon_batch_tx.core.failures import RequestFailed
from tests.test_isolation_units import Model, failures, run_lines, seldon_rows

JSONDict = dict[str, Any]
REFUSED, UNCARRIED = 666, 999


def request_rows(body: JSONDict) -> list[list[Any]]:
    if "inputs" in body:
        tensor = body["inputs"][0]
        n, data = tensor["shape"][0], tensor["data"]
        width = len(data) // n
        return [data[i * width:(i + 1) * width] for i in range(n)]
    return seldon_rows(body)


def answer(body: JSONDict) -> Deferred[JSONDict]:
    """A model refusing (400) any request holding 666 and answering 999 with a row no line can carry."""
    values = {x for row in request_rows(body) for x in row}
    if REFUSED in values:
        return fail(RequestFailed("http_400", "HTTP 400: refused", code=400, info="http_400"))
    if UNCARRIED in values:
        return fail(RequestFailed("bad_response", "answer holds a number JSON cannot carry (NaN or Infinity)",
                                  code=200, info="bad_response"))
    if "inputs" in body:
        return succeed({"outputs": [{**body["inputs"][0], "name": "out"}]})
    return succeed(json.loads(json.dumps(body)))


good = st.builds(lambda rows, width, v: ("good", [[v] * width] * rows),
                 st.integers(1, 3), st.integers(2, 3), st.integers(0, 9))
bad = st.sampled_from([("refused", [[REFUSED, 1]]), ("uncarried", [[1, UNCARRIED, 1]]), ("broken", None)])
lines_strategy = st.lists(st.one_of(good, good, bad), min_size=1, max_size=30)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=lines_strategy, batch_size=st.integers(1, 9), max_rows=st.one_of(st.none(), st.integers(1, 10)),
       kind=st.sampled_from(["ndarray", "tensor", "v2"]))
def test_error_lines_exactly_for_the_bad_lines(lines: list[tuple[str, Any]], batch_size: int, max_rows: int | None,
                                              kind: str) -> None:
    text = [json.dumps(rows) if rows is not None else "{not json" for _, rows in lines]
    model = Model(answer)
    options: dict[str, Any] = ({"protocol": "v2"} if kind == "v2" else {"payload_type": kind})
    with tempfile.TemporaryDirectory() as tmp:
        _, out, _ = run_lines(Path(tmp), text, model, batch_size=batch_size, max_batch_rows=max_rows, **options)
    bad_lines = {i for i, (what, _) in enumerate(lines) if what != "good"}
    assert set(failures(out)) == bad_lines
    for i, (what, rows) in enumerate(lines):
        if what == "good":
            record = out[i]
            got = request_rows({"inputs": record["outputs"]}) if kind == "v2" else seldon_rows(record)
            assert got == rows
    for body in model.bodies:
        rows_sent = request_rows(body)
        assert len({len(r) for r in rows_sent}) == 1  # never a ragged request
        if max_rows is not None and len(rows_sent) > max_rows:
            assert any(rows_sent == r for _, r in lines), "only a line alone may pass the limit"
