"""The real ``seldon-batch-processor`` against hostile answers and hostile input files (issue 11).

Each case runs the installed command as a subprocess against ``tests/hostile_server.py`` (the
deployment name picks the hostile answer) over the fast REST client, ``--http-client treq`` and,
where the answer exists there, gRPC, and checks the promise the tool makes whatever the server or
the file holds: exactly one output line per input line (each ``batch_index`` once, every line strict
JSON), the documented exit status, a wall time well under a minute, a bounded stderr and, for the
oversize cases run with lowered ``--max-response-bytes`` / ``--max-line-bytes``, a bounded peak RSS
(``VmHWM`` read from /proc while the process runs).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests import hostile_cli_helpers
from tests.hostile_cli_helpers import (
    CLI,
    LINES,
    MIB,
    RSS_LIMIT_KB,
    Outcome,
    base_args,
    data_file,
    is_error,
    read_records,
    run_cli,
)
from tests.hostile_server import HostileServer
from tests.loopback import loopback_env

hostile = hostile_cli_helpers.hostile  # a fixture shared with this topic's other files


def expect(outcome: Outcome, kinds: set[str] | None, *, may_succeed: bool = False) -> None:
    """Error lines only of `kinds` (None: every line succeeds); exit 1 with error lines, else 0."""
    found = outcome.kinds()
    errors = sum(1 for r in outcome.records if is_error(r))
    if kinds is None:
        assert errors == 0, outcome.describe()
    else:
        assert found <= kinds, outcome.describe()
        if not may_succeed:
            assert errors == len(outcome.records), outcome.describe()
    for record in outcome.records:
        if is_error(record):
            assert record["status"]["reason"], record
    assert outcome.code == (1 if errors else 0), outcome.describe()


ONE_MIB = ("--max-response-bytes", str(MIB))
TRANSPORT_ERRORS = {"connection", "bad_response", "timeout"}
#: A server that answers readiness but drops every request is an outage (the run would pause, then stop
#: with exit 3): these cases check the error lines of ``--outage-timeout 0``, no pausing.
NO_PAUSE = ("--outage-timeout", "0")

#: mode, extra options, error kinds allowed (None: success), may some lines succeed, RSS checked
ANSWERS: list[tuple[str, tuple[str, ...], set[str] | None, bool, bool]] = [
    ("echo", (), None, False, False),
    ("echo", ("-s", "2"), None, False, False),
    ("deep", (), {"bad_response"}, False, False),
    ("deep", ("-s", "2"), {"bad_response"}, False, False),
    # A mini-batch answer that does not split back into rows is split (issue 19): each line is sent
    # alone and gets the answer the server gives it alone, as at -s 1 (a one-line answer is not cut).
    ("bad_shape", ("-s", "2"), None, False, False),
    ("bad_shape", ("-s", "2", "-p", "tensor"), None, False, False),
    ("wrong_rows", ("-s", "2"), None, False, False),
    ("few_rows", ("-s", "2"), None, False, False),
    ("wrong_rows", ("-s", "2", "-p", "tensor"), None, False, False),
    ("wrong_type", ("-s", "2"), None, False, False),
    ("not_object", (), {"bad_response"}, False, False),
    ("not_json", (), {"bad_response"}, False, False),
    ("truncated", NO_PAUSE, TRANSPORT_ERRORS, False, False),
    ("reset", NO_PAUSE, TRANSPORT_ERRORS, False, False),
    ("close", NO_PAUSE, TRANSPORT_ERRORS, False, False),
    ("garbage", NO_PAUSE, TRANSPORT_ERRORS, False, False),
    ("stall", (), {"timeout"}, False, False),
    ("trickle", (), {"timeout"}, False, False),
    ("trickle_headers", (), {"timeout", "bad_response"}, False, False),
    ("oversize_length", ONE_MIB, {"response_too_large"}, False, True),
    ("oversize_body", ONE_MIB, {"response_too_large"}, False, True),
    ("oversize_chunked", ONE_MIB, {"response_too_large"}, False, True),
    ("oversize_chunked", (*ONE_MIB, "-s", "2"), {"response_too_large"}, False, True),
    ("flood_headers", ONE_MIB, {"response_too_large", "bad_response"}, False, True),
    ("oversize_body", (), None, False, False),  # 8 MiB is under the 64 MiB default: a success
    ("huge_int", (), {"bad_response"}, True, False),
    ("huge_float", (), {"bad_response"}, True, False),
    ("non_utf8", (), {"bad_response"}, True, False),
    ("status_201", (), None, False, False),
    ("status_204", (), {"bad_response"}, False, False),
    ("status_302", (), {"http_302"}, False, False),
    ("status_418", (), {"http_418"}, False, False),
    ("failure", (), {"model_failure"}, False, False),
    ("failure", ("-s", "2"), {"model_failure"}, False, False),
]


def _answer_id(case: tuple[str, tuple[str, ...], Any, bool, bool]) -> str:
    return "-".join([case[0], *(x.lstrip("-") for x in case[1] if x != str(MIB))])


@pytest.mark.parametrize("client", ["fast", "treq"])
@pytest.mark.parametrize("case", ANSWERS, ids=[_answer_id(c) for c in ANSWERS])
def test_hostile_answer_rest(tmp_path: Path, hostile: HostileServer, client: str,
                             case: tuple[str, tuple[str, ...], set[str] | None, bool, bool]) -> None:
    """Whatever the server answers: one line per input line, the right exit, bounded time, memory, logs."""
    mode, extra, kinds, may_succeed, check_rss = case
    source, out = data_file(tmp_path / "in.txt"), tmp_path / "out.txt"
    outcome = run_cli(base_args(hostile, mode, source, out, client, *extra), tmp_path)
    outcome = attrs.evolve(outcome, records=read_records(out, LINES))
    expect(outcome, kinds, may_succeed=may_succeed)
    if check_rss:
        assert outcome.peak_rss_kb < RSS_LIMIT_KB, outcome.describe()


GRPC_ANSWERS: list[tuple[str, tuple[str, ...], set[str] | None, bool, bool]] = [
    ("echo", (), None, False, False),
    ("echo", ("-s", "2"), None, False, False),
    ("failure", (), {"model_failure"}, False, False),
    ("bad_shape", ("-s", "2"), None, False, False),  # split, each line answered alone (issue 19)
    ("bad_shape", ("-s", "2", "-p", "tensor"), None, False, False),
    ("wrong_rows", ("-s", "2"), None, False, False),
    ("few_rows", ("-s", "2", "-p", "tensor"), None, False, False),
    # A message nested past protobuf's recursion limit: the client cannot decode it.
    ("deep", (), {"bad_response", "grpc_INTERNAL", "grpc_UNKNOWN"}, False, False),
    ("huge_float", (), {"bad_response"}, True, False),
    ("stall", (), {"timeout", "grpc_DEADLINE_EXCEEDED"}, False, False),
    ("abort_internal", (), {"grpc_INTERNAL"}, False, False),
    ("oversize_body", ONE_MIB, {"response_too_large", "grpc_RESOURCE_EXHAUSTED"}, False, True),
]


@pytest.mark.parametrize("case", GRPC_ANSWERS, ids=[_answer_id(c) for c in GRPC_ANSWERS])
def test_hostile_answer_grpc(tmp_path: Path, hostile: HostileServer,
                             case: tuple[str, tuple[str, ...], set[str] | None, bool, bool]) -> None:
    """The same promise over gRPC, for the answers a gRPC server can give."""
    mode, extra, kinds, may_succeed, check_rss = case
    source, out = data_file(tmp_path / "in.txt"), tmp_path / "out.txt"
    outcome = run_cli(base_args(hostile, mode, source, out, "grpc", *extra), tmp_path)
    outcome = attrs.evolve(outcome, records=read_records(out, LINES))
    expect(outcome, kinds, may_succeed=may_succeed)
    if check_rss:
        assert outcome.peak_rss_kb < RSS_LIMIT_KB, outcome.describe()


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileServer]:
    """A second server a hostile answer tries to send the client (and its token) to."""
    log = tmp_path_factory.mktemp("elsewhere") / "requests.jsonl"
    with HostileServer(log) as server:
        yield server


@pytest.mark.parametrize("client", ["fast", "treq"])
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_not_followed_with_the_token(tmp_path: Path, hostile: HostileServer,
                                                  elsewhere: HostileServer, client: str, status: int) -> None:
    """A redirect to another host is an ``http_3xx`` error line; nothing (no line, no token) reaches that host."""
    batch_id = f"redirect-{client}-{status}-{time.monotonic_ns()}"
    target = f"http://{elsewhere.rest_host}/seldon/ns/echo/api/v1.0/predictions"
    hostile.script(batch_id, default={"mode": "raw", "status": status, "headers": [["Location", target]]})
    source, out = data_file(tmp_path / "in.txt"), tmp_path / "out.txt"
    outcome = run_cli(base_args(hostile, "script", source, out, client, "-u", batch_id,
                                "--call-credentials-token", "s3cret-token"), tmp_path)
    leaked = [r for r in elsewhere.received() if r.get("batch_id") == batch_id or r.get("auth")]
    assert leaked == [], leaked[:2]
    outcome = attrs.evolve(outcome, records=read_records(out, LINES))
    expect(outcome, {f"http_{status}"})


@pytest.mark.parametrize(("client", "mode"), [("fast", "trickle"), ("treq", "trickle"), ("fast", "trickle_headers"),
                                              ("grpc", "stall")])
def test_sigterm_during_a_hostile_answer_stops_within_the_drain_timeout(tmp_path: Path, hostile: HostileServer,
                                                                       client: str, mode: str) -> None:
    """SIGTERM while every request is held by a hostile answer (long --timeout): exit 3 within the drain time,
    whole lines only, no line written twice."""
    source, out = data_file(tmp_path / "in.txt", 20), tmp_path / "out.txt"
    batch_id = f"sigterm-{client}-{mode}-{time.monotonic_ns()}"
    args = [CLI, *base_args(hostile, mode, source, out, client, "--timeout", "60", "--drain-timeout", "1", "-w", "4",
                            "-u", batch_id)]
    with open(tmp_path / "err.txt", "wb") as err:
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                                   env=loopback_env())
    try:
        batch_seen = time.monotonic() + 20
        while time.monotonic() < batch_seen and process.poll() is None \
                and not [r for r in hostile.received() if r.get("batch_id") == batch_id]:
            time.sleep(0.05)
        time.sleep(0.3)  # the answer is under way: the run is waiting on it
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = process.wait(15)
        assert time.monotonic() - started < 6, "did not stop within the drain timeout"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert code == 3, (tmp_path / "err.txt").read_text()[-2000:]
    text = out.read_text() if out.exists() else ""
    assert text == "" or text.endswith("\n")
    indexes = [json.loads(line)["meta"]["tags"]["batch_index"] for line in text.splitlines()]
    assert len(indexes) == len(set(indexes)) and len(indexes) < 20
