"""The real ``seldon-batch-processor`` against hostile input files (issue 11): every hostile line is
its own error line (in each data type), no request is sent for it, a non-finite number never makes
an invalid output line, and a line past --max-line-bytes is skipped in bounded memory.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests import hostile_cli_helpers
from tests.hostile_cli_helpers import (
    MIB,
    RSS_LIMIT_KB,
    base_args,
    is_error,
    read_records,
    run_cli,
)
from tests.hostile_server import HostileServer

hostile = hostile_cli_helpers.hostile  # a fixture shared with this topic's other files


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
