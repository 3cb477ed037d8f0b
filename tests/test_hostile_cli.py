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
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.hostile_server import HostileServer
from tests.servers import REPO_ROOT, loopback_env

CLI = str(REPO_ROOT / ".venv" / "bin" / "seldon-batch-processor")
MIB = 1 << 20
#: No case may take longer than this (a hang is the failure this suite exists to catch).
WALL_LIMIT = 40.0
#: Bounded stderr: a few warnings per line at most, never a traceback per chunk of a flood.
STDERR_LIMIT = 64 * 1024
#: Peak RSS allowed for the oversize cases (the 1 MiB limits make anything bigger a leak).
RSS_LIMIT_KB = 200 * 1024
LINES = 4


@attrs.frozen
class Outcome:
    code: int
    elapsed: float
    peak_rss_kb: int
    stderr: str
    stdout: str
    records: list[dict[str, Any]]

    def kinds(self) -> set[str]:
        return {r["status"]["info"] for r in self.records if is_error(r)}

    def describe(self) -> str:
        return (f"exit {self.code} after {self.elapsed:.1f} s, peak {self.peak_rss_kb // 1024} MB, "
                f"kinds {sorted(self.kinds())}; stderr tail: {self.stderr[-1500:]}")


def is_error(record: dict[str, Any]) -> bool:
    status = record.get("status")
    return isinstance(status, dict) and status.get("status") == "FAILURE"


def _no_constants(name: str) -> Any:
    raise ValueError(f"not JSON: {name}")


def peak_rss_kb(pid: int) -> int:
    """The process's VmHWM (peak resident set) in kB, 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def run_cli(args: list[str], tmp: Path, env: dict[str, str] | None = None, wall: float = WALL_LIMIT) -> Outcome:
    """Run the command, sampling its peak RSS until it exits; kill it (and fail) past `wall` seconds."""
    err_path, out_path = tmp / "stderr.txt", tmp / "stdout.txt"
    started = time.monotonic()
    with open(err_path, "wb") as err, open(out_path, "wb") as out:
        process = subprocess.Popen([CLI, *args], stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                   env=env or loopback_env())
    peak = 0
    try:
        deadline = started + wall
        while process.poll() is None and time.monotonic() < deadline:
            peak = max(peak, peak_rss_kb(process.pid))
            time.sleep(0.02)
        if process.poll() is None:
            process.kill()
            process.wait(10)
            pytest.fail(f"{' '.join(args)} still running after {wall} s; stderr: "
                        f"{err_path.read_text(errors='replace')[-2000:]}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    elapsed = time.monotonic() - started
    stderr = err_path.read_bytes()
    assert len(stderr) < STDERR_LIMIT, f"{len(stderr)} bytes of stderr: {stderr[-2000:]!r}"
    return Outcome(process.returncode, elapsed, peak, stderr.decode(errors="replace"),
                   out_path.read_text(errors="replace"), [])


def read_records(out: Path, lines: int) -> list[dict[str, Any]]:
    """Every output line as strict JSON; exactly one per input line, each batch_index once."""
    text = out.read_bytes().decode("utf-8")  # output is UTF-8, whatever came in
    assert text == "" or text.endswith("\n"), "the output ends in a torn line"
    records = [json.loads(line, parse_constant=_no_constants) for line in text.splitlines()]
    indexes = sorted(r["meta"]["tags"]["batch_index"] for r in records)
    assert indexes == list(range(lines)), f"batch indexes {indexes} for {lines} input lines"
    return records


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


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileServer]:
    log = tmp_path_factory.mktemp("hostile") / "requests.jsonl"
    with HostileServer(log, grpc=True, stall_seconds=60) as server:
        yield server


def data_file(path: Path, lines: int = LINES) -> Path:
    path.write_text("".join(f"[[{i}.5, 2.0]]\n" for i in range(lines)))
    return path


def base_args(server: HostileServer, mode: str, source: Path, out: Path, client: str, *extra: str) -> list[str]:
    transport = ["-t", "grpc", "-h", server.grpc_host] if client == "grpc" else \
        ["-h", server.rest_host, "--http-client", client]
    return ["-d", mode, "-g", "istio", "-n", "ns", *transport, "-i", str(source), "-o", str(out),
            "-w", str(LINES), "-r", "1", "--timeout", "2", "-l", "warning", *extra]


# -- hostile answers ------------------------------------------------------------------------------

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
    ("bad_shape", ("-s", "2"), {"response_mismatch", "bad_response"}, False, False),
    ("bad_shape", ("-s", "2", "-p", "tensor"), {"response_mismatch", "bad_response"}, False, False),
    ("wrong_rows", ("-s", "2"), {"response_mismatch"}, False, False),
    ("few_rows", ("-s", "2"), {"response_mismatch"}, False, False),
    ("wrong_rows", ("-s", "2", "-p", "tensor"), {"response_mismatch"}, False, False),
    ("wrong_type", ("-s", "2"), {"response_mismatch", "bad_response"}, False, False),
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
    ("bad_shape", ("-s", "2"), {"response_mismatch", "bad_response"}, False, False),
    ("bad_shape", ("-s", "2", "-p", "tensor"), {"response_mismatch", "bad_response"}, False, False),
    ("wrong_rows", ("-s", "2"), {"response_mismatch"}, False, False),
    ("few_rows", ("-s", "2", "-p", "tensor"), {"response_mismatch"}, False, False),
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


# -- hostile input files --------------------------------------------------------------------------

GOOD = b"[[1.5, 2.0]]"
#: name -> (line bytes, the error kinds it may get; None: it must succeed)
HOSTILE_LINES: dict[str, tuple[bytes, set[str] | None]] = {
    "good": (GOOD, None),
    "deep_array": (b"[" * 100_000 + b"]" * 100_000, {"input_error"}),
    "deep_object": (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, {"input_error"}),
    "invalid_utf8": (b'[[1.5, 2.0]] "\xff\xfe"', {"input_error"}),
    "invalid_utf8_string": (b'"\xc3\x28\xff"', {"input_error"}),
    "nul": (b"[[1.5,\x00 2.0]]", {"input_error"}),
    "nul_only": (b"\x00\x00\x00", {"input_error"}),
    "blank": (b"", {"input_error"}),
    "spaces": (b"   \t ", {"input_error"}),
    "crlf": (b"[[1.5, 2.0]]\r", None),
    "huge_int": (b"[[" + b"9" * 100_000 + b"]]", {"input_error"}),
    "lone_surrogate": (b'"\\ud800"', {"input_error", "bad_response"}),
    "two_values": (b"[[1.5]] [[2.0]]", {"input_error"}),
    "good_again": (GOOD, None),
}


def hostile_input(path: Path, bom: bool = True) -> tuple[Path, list[set[str] | None]]:
    """All the hostile lines in one file (a BOM before the first, good, line); what each may become."""
    lines = list(HOSTILE_LINES.values())
    body = b"\n".join(line for line, _ in lines) + b"\n"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + body)
    return path, [kinds for _, kinds in lines]


def check_lines(records: list[dict[str, Any]], expected: list[set[str] | None], loose: set[int]) -> None:
    """Each line's outcome as expected (lines in `loose` may also succeed, e.g. a str line)."""
    by_index = {r["meta"]["tags"]["batch_index"]: r for r in records}
    names = list(HOSTILE_LINES)
    for index, kinds in enumerate(expected):
        record = by_index[index]
        if kinds is None:
            assert not is_error(record), (names[index], record)
        elif is_error(record):
            assert record["status"]["info"] in kinds, (names[index], record["status"])
        else:
            assert index in loose, (names[index], "succeeded", json.dumps(record)[:300])


@pytest.mark.parametrize(("client", "extra"), [
    ("fast", ()), ("treq", ()), ("grpc", ()),
    ("fast", ("-s", "3")), ("treq", ("-s", "3", "-p", "tensor")), ("grpc", ("-s", "3")),
    ("fast", ("--ordered",)),
])
def test_hostile_input_lines(tmp_path: Path, hostile: HostileServer, client: str, extra: tuple[str, ...]) -> None:
    """Deep, non-UTF-8, NUL, blank, BOM, huge-number lines: each its own output line, the good ones succeed."""
    source, expected = hostile_input(tmp_path / "in.txt")
    out = tmp_path / "out.txt"
    outcome = run_cli(base_args(hostile, "echo", source, out, client, *extra), tmp_path)
    records = read_records(out, len(expected))
    check_lines(records, expected, loose=set())
    assert outcome.code == 1, outcome.describe()


@pytest.mark.parametrize("data_type", ["json", "str", "raw"])
def test_hostile_input_lines_other_data_types(tmp_path: Path, hostile: HostileServer, data_type: str) -> None:
    """The same file with ``-a json|str|raw``: never a lost line; what the type cannot carry is an error line."""
    source, expected = hostile_input(tmp_path / "in.txt")
    out = tmp_path / "out.txt"
    outcome = run_cli(base_args(hostile, "echo", source, out, "fast", "-a", data_type), tmp_path)
    records = read_records(out, len(expected))
    # What is valid for one data type is not for another (any text is a str line): the lines that no
    # type can carry must be errors, the good ones must succeed, the rest may go either way.
    must_fail = {"blank", "spaces"} if data_type == "str" else \
        {"deep_array", "deep_object", "nul_only", "blank", "spaces", "invalid_utf8_string", "huge_int", "nul"}
    names = list(HOSTILE_LINES)
    for record in records:
        name = names[record["meta"]["tags"]["batch_index"]]
        if is_error(record):
            # an array is not a whole SeldonMessage: with -a raw even the good lines are input errors
            assert data_type == "raw" or name not in ("good", "good_again", "crlf"), (name, record["status"])
            assert record["status"]["info"] in {"input_error", "http_400", "bad_response"}, (name, record["status"])
        else:
            assert name not in must_fail, (name, json.dumps(record)[:300])
        if name == "good" and not is_error(record) and data_type == "str":
            assert not record["strData"].startswith("\ufeff"), "the BOM was sent as data"
    assert outcome.code == 1, outcome.describe()


@pytest.mark.parametrize(("client", "data_type"), [("fast", "data"), ("treq", "json"), ("grpc", "data"),
                                                   ("fast", "raw")])
def test_non_finite_numbers_never_make_an_invalid_output_line(tmp_path: Path, hostile: HostileServer,
                                                               client: str, data_type: str) -> None:
    """``1e999``, ``NaN``, ``-Infinity`` in a line: an error line, or a line that is still strict JSON."""
    source, out = tmp_path / "in.txt", tmp_path / "out.txt"
    values = [b"[[1e999, 2.0]]", b"[[NaN, 2.0]]", b"[[-Infinity, 2.0]]", b"[[1.5, 2.0]]"]
    if data_type == "raw":
        values = [b'{"data": {"ndarray": %s}}' % v for v in values]
    source.write_bytes(b"\n".join(values) + b"\n")
    outcome = run_cli(base_args(hostile, "echo", source, out, client, "-a", data_type), tmp_path)
    records = read_records(out, len(values))  # strict: no NaN / Infinity literals
    by_index = {r["meta"]["tags"]["batch_index"]: r for r in records}
    assert not is_error(by_index[3]), by_index[3]
    assert outcome.code == (1 if any(is_error(r) for r in records) else 0), outcome.describe()


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


@pytest.mark.parametrize("client", ["fast", "treq", "grpc"])
def test_line_over_max_line_bytes_is_skipped_in_bounded_memory(tmp_path: Path, hostile: HostileServer,
                                                              client: str) -> None:
    """A 120 MB line with ``--max-line-bytes 1 MiB``: input_too_large, the next lines still go, RSS stays low."""
    source, out = tmp_path / "in.txt", tmp_path / "out.txt"
    with open(source, "wb") as f:
        f.write(GOOD + b"\n")
        f.write(b"[[" + b"1.0, " * (24 * MIB) + b"1.0]]\n")  # 120 MB, no newline inside
        f.write(GOOD + b"\n")
        f.write(b'"' + b"x" * (3 * MIB))  # a last line without newline, over the limit too
    batch_id = f"longline-{client}-{time.monotonic_ns()}"
    outcome = run_cli(base_args(hostile, "echo", source, out, client, "--max-line-bytes", str(MIB), "-u", batch_id),
                      tmp_path)
    records = read_records(out, 4)
    by_index = {r["meta"]["tags"]["batch_index"]: r for r in records}
    assert not is_error(by_index[0]) and not is_error(by_index[2]), outcome.describe()
    for index in (1, 3):
        assert is_error(by_index[index]) and by_index[index]["status"]["info"] == "input_too_large", by_index[index]
        assert len(json.dumps(by_index[index])) < 4096  # the error line does not carry the line
    assert outcome.code == 1, outcome.describe()
    assert outcome.peak_rss_kb < RSS_LIMIT_KB, outcome.describe()
    sent = {r["batch_index"] for r in hostile.received() if r.get("batch_id") == batch_id}
    assert sent == {0, 2}, sorted(sent)


def test_no_request_sent_for_a_hostile_line(tmp_path: Path, hostile: HostileServer) -> None:
    """Lines rejected as input errors never reach the server (the request log is the witness)."""
    source, expected = hostile_input(tmp_path / "in.txt")
    batch_id = f"nosend-{os.getpid()}-{time.monotonic_ns()}"
    out = tmp_path / "out.txt"
    run_cli(base_args(hostile, "echo", source, out, "fast", "-u", batch_id), tmp_path)
    read_records(out, len(expected))
    sent = {r["batch_index"] for r in hostile.received() if r.get("batch_id") == batch_id}
    rejected = {i for i, kinds in enumerate(expected) if kinds is not None}
    assert sent and not sent & rejected, sorted(sent)


# -- usage mistakes: one line, exit 2, nothing sent ----------------------------------------------


@pytest.mark.parametrize(("args", "env", "option"), [
    (["-w", "0"], {}, "--workers"),
    ([], {"SELDON_BATCH_WORKERS": "0"}, "workers"),
    (["-h", "x:abc"], {}, "--host"),
    (["-h", "127.0.0.1:99999"], {}, "--host"),
    (["--call-credentials-token", "a\r\nX-Evil: 1"], {}, "--call-credentials-token"),
    ([], {"SELDON_BATCH_CALL_CREDENTIALS_TOKEN": "a\nb"}, "call-credentials-token"),
    (["--header", "X-A: b\r\nX-Evil: 1"], {}, "--header"),
    (["--max-line-bytes", "0"], {}, "--max-line-bytes"),
    (["--max-response-bytes", "-5"], {}, "--max-response-bytes"),
    (["--timeout", "nan"], {}, "--timeout"),
])
def test_usage_mistakes_are_one_line_exit_2(tmp_path: Path, hostile: HostileServer, args: list[str],
                                           env: dict[str, str], option: str) -> None:
    """A bad flag or environment value: ``PROG: error: <option> <value>: <why>`` on one line, status 2."""
    source, out = data_file(tmp_path / "in.txt"), tmp_path / "out.txt"
    batch_id = f"usage-{time.monotonic_ns()}"
    full = ["-d", "echo", "-g", "istio", "-h", hostile.rest_host, "-i", str(source), "-o", str(out),
            "-u", batch_id, *args]
    outcome = run_cli(full, tmp_path, env={**loopback_env(), **env}, wall=20)
    lines = outcome.stderr.strip().splitlines()
    assert outcome.code == 2, outcome.describe()
    assert len(lines) == 1 and "error:" in lines[0] and option in lines[0], outcome.stderr
    assert "Traceback" not in outcome.stderr
    assert not [r for r in hostile.received() if r.get("batch_id") == batch_id]


# -- resume against hostile outputs ---------------------------------------------------------------


def test_resume_refuses_huge_index_without_allocating(tmp_path: Path, hostile: HostileServer) -> None:
    """An output naming ``batch_index`` 10**15: refused (exit 2) fast, in bounded memory, file unchanged."""
    source, out = data_file(tmp_path / "in.txt"), tmp_path / "out.txt"
    line = {"data": {"ndarray": [[1]]}, "meta": {"tags": {"batch_id": "B", "batch_index": 10 ** 15,
                                                          "batch_instance_id": "x"}}}
    out.write_text(json.dumps(line) + "\n")
    before = out.read_bytes()
    outcome = run_cli(base_args(hostile, "echo", source, out, "fast", "--resume"), tmp_path, wall=20)
    assert outcome.code == 2, outcome.describe()
    assert outcome.peak_rss_kb < RSS_LIMIT_KB, outcome.describe()
    assert out.read_bytes() == before


def test_resume_leaves_a_foreign_file_untouched(tmp_path: Path, hostile: HostileServer) -> None:
    """``--resume`` onto a file that is not an output (no tags, torn tail): refused, not one byte changed."""
    source, out = data_file(tmp_path / "in.txt"), tmp_path / "out.txt"
    out.write_bytes(b"precious line one\nprecious line two\nno newline at the end")
    before = out.read_bytes()
    for flag in ("--resume", "--retry-failed"):
        outcome = run_cli(base_args(hostile, "echo", source, out, "fast", flag), tmp_path, wall=20)
        assert outcome.code == 2, outcome.describe()
        assert out.read_bytes() == before, flag


def test_deep_output_line_is_refused_by_resume_and_reported_by_verify(tmp_path: Path,
                                                                      hostile: HostileServer) -> None:
    """An output line nested 100,000 deep: ``--resume`` refuses (exit 2, no traceback); verify reports it."""
    source, out = data_file(tmp_path / "in.txt"), tmp_path / "out.txt"
    out.write_bytes(b"[" * 100_000 + b"]" * 100_000 + b"\n")
    outcome = run_cli(base_args(hostile, "echo", source, out, "fast", "--resume"), tmp_path, wall=20)
    assert outcome.code == 2 and "Traceback" not in outcome.stderr, outcome.describe()
    verify = subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "seldon-batch"), "verify", str(source), str(out)],
                            capture_output=True, text=True, timeout=30, env=loopback_env(), stdin=subprocess.DEVNULL)
    assert verify.returncode == 1 and "Traceback" not in verify.stderr, verify.stderr[-2000:]


def test_second_run_on_the_same_output_is_refused(tmp_path: Path, hostile: HostileServer) -> None:
    """While one run holds the output, a second one exits 2 and says who holds it; the first still finishes."""
    source, out = data_file(tmp_path / "in.txt", 40), tmp_path / "out.txt"
    first_err = tmp_path / "first.err"
    with open(first_err, "wb") as err:
        first = subprocess.Popen([CLI, *base_args(hostile, "echo", source, out, "fast", "-w", "1",
                                                  "--batch-interval", "0.1")],
                                 stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, env=loopback_env())
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (out.exists() and out.stat().st_size):
            time.sleep(0.05)
        assert first.poll() is None, first_err.read_text()
        second = run_cli(base_args(hostile, "echo", source, out, "fast", "--resume"), tmp_path, wall=20)
        assert second.code == 2, second.describe()
        assert str(first.pid) in second.stderr, second.stderr
        assert first.wait(40) == 0, first_err.read_text()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    read_records(out, 40)


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
