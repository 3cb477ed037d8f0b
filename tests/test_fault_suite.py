"""Nothing lost: the real CLI through a misbehaving model server, killed with SIGKILL and resumed.

Each scenario runs ``seldon-batch-processor`` as a subprocess against ``tests/faultserver.py``
(500/503/400, 429 with Retry-After, connection resets mid-response, stalls past the timeout,
non-JSON bodies, a server restart mid-batch), SIGKILLs it at seeded random moments, resumes each
time with ``--resume``, and finally checks the output: one line per input line, every
``batch_index`` exactly once, every success byte-identical to a clean run's line. A last
``--resume --retry-failed`` against a well-behaved server must then turn the file into exactly
the clean run's lines. Totals (kills, faults, lines) are printed at the end of each scenario.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from seldon_batch_tx.outputs.verify import verify
from tests.faultserver import FaultServer
from tests.loopback import loopback_env
from tests.servers import REPO_ROOT, SeldonServer

CLI = str(REPO_ROOT / ".venv" / "bin" / "seldon-batch-processor")
BATCH_ID = "fault-suite"
FAULTS = {"fail_500": 0.04, "fail_503": 0.04, "fail_400": 0.01, "rate_429": 0.01, "reset": 0.03,
          "stall": 0.01, "stall_body": 0.01, "not_json": 0.02}
GRPC_FAULTS = {"fail_500": 0.02, "fail_503": 0.05, "fail_400": 0.01, "rate_429": 0.01, "reset": 0.02,
               "stall": 0.01, "not_json": 0.01}
#: Errors a final line may legitimately hold: the server's permanent answers, not lost lines.
PERMANENT_KINDS = {"http_400", "grpc_INVALID_ARGUMENT", "grpc_INTERNAL", "model_failure"}


@attrs.define
class Tally:
    kills: int = 0
    kills_mid_output: int = 0
    torn_tails: int = 0
    restarts: int = 0
    runs: int = 0


def make_input(path: Path, lines: int) -> Path:
    # Floats only: numpy-style promotion in a mini-batch then cannot change a line's numbers.
    path.write_text("".join(f"[[{i * 0.5}, 1.25, -3.0]]\n" for i in range(lines)))
    return path


def cli_args(host: str, source: Path, out: Path, *extra: str, transport: str = "rest") -> list[str]:
    return [CLI, "-d", "model", "-g", "seldon", "-h", host, "-t", transport, "-i", str(source), "-o", str(out),
            "-w", "8", "-r", "8", "--timeout", "1", "-l", "warning", *extra]


def run(args: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=loopback_env(),
                          stdin=subprocess.DEVNULL)


def lines_by_index(path: Path) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for raw in path.read_text().splitlines():
        index = json.loads(raw)["meta"]["tags"]["batch_index"]
        found.setdefault(int(index), []).append(raw)
    return found


def clean_run(host: str, source: Path, out: Path, *extra: str, transport: str = "rest") -> dict[int, str]:
    result = run(cli_args(host, source, out, "-u", BATCH_ID, *extra, transport=transport))
    assert result.returncode == 0, result.stderr[-2000:]
    return {i: lines[0] for i, lines in lines_by_index(out).items()}


def kill_and_resume(server: FaultServer, base: list[str], out: Path, rng: random.Random, kills: int,
                    tally: Tally, restart_on: int | None = None, max_runs: int = 12) -> None:
    """Start, SIGKILL at a random moment, resume; ``kills`` times (bounded), then run to the end."""
    log = out.with_suffix(".log")
    first = True
    restart_pending = restart_on is not None
    for attempt in range(max_runs):
        if tally.kills >= kills:
            break
        args = base + ([] if first else ["--resume"])
        before = out.stat().st_size if out.exists() else 0
        with open(log, "ab") as stream:
            process = subprocess.Popen(args, stdout=stream, stderr=stream, env=loopback_env(),
                                       stdin=subprocess.DEVNULL)
        tally.runs += 1
        first = False
        try:
            # Mostly after some output was written (then 0-1.5 s later), sometimes during start-up.
            early = rng.random() < 0.2
            delay = rng.uniform(0.1, 0.8) if early else rng.uniform(0.0, 1.5)
            deadline = time.monotonic() + (delay if early else 30.0)
            restart_at = time.monotonic() + 0.9 if restart_pending and attempt >= (restart_on or 0) else None
            while time.monotonic() < deadline and process.poll() is None:
                if restart_at is not None and time.monotonic() >= restart_at:
                    server.restart(pause=0.3)  # connections in flight die; the CLI retries
                    tally.restarts += 1
                    restart_at, restart_pending = None, False
                if not early and deadline - time.monotonic() > delay and out.exists() \
                        and out.stat().st_size > before:
                    deadline = time.monotonic() + delay
                time.sleep(0.02)
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                tally.kills += 1
                if out.exists() and out.stat().st_size > before:
                    tally.kills_mid_output += 1
            process.wait(timeout=30)
            if process.returncode in (0, 1):
                break  # finished before the kill: nothing left to resume
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        if out.exists() and out.stat().st_size and not out.read_bytes().endswith(b"\n"):
            tally.torn_tails += 1
        elif attempt == 2 and out.exists() and out.stat().st_size:
            # What a kill in the middle of a write leaves: part of a line. The resume must cut it off.
            last = out.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1]
            with open(out, "ab") as f:
                f.write(last[: len(last) // 2])
            tally.torn_tails += 1
        if process.returncode not in (-signal.SIGKILL, 0, 1):
            pytest.fail(f"processor exited with {process.returncode}: {log.read_text()[-2000:]}")
    final = run(base + ["--resume"])
    tally.runs += 1
    assert final.returncode in (0, 1), final.stderr[-2000:]


def same(a: str, b: str) -> bool:
    """Byte-identical, or over gRPC equal as JSON (protobuf map fields come in no fixed order)."""
    return a == b or json.loads(a) == json.loads(b)


def check(source: Path, out: Path, clean: dict[int, str], lines: int) -> dict[str, int]:
    """One line per input line, each index once, successes identical to the clean run."""
    report = verify(str(source), str(out))
    assert report.complete, report.as_dict()
    assert report.lines == lines
    found = lines_by_index(out)
    assert sorted(found) == list(range(lines))
    failures = 0
    for index, (raw,) in found.items():
        record = json.loads(raw)
        if "status" in record:
            failures += 1
            assert record["status"]["info"] in PERMANENT_KINDS, raw
        else:
            assert same(raw, clean[index]), (raw, clean[index])
    return {"lines": lines, "failed_lines": failures}


def retry_failed_against_clean_server(host: str, base: list[str], out: Path, clean: dict[int, str]) -> None:
    """``--resume --retry-failed`` against a well-behaved server leaves exactly the clean run's lines."""
    args = list(base)
    args[args.index("-h") + 1] = host
    result = run(args + ["--retry-failed"])
    assert result.returncode == 0, result.stderr[-2000:]
    found = lines_by_index(out)
    assert sorted(found) == sorted(clean) and all(len(v) == 1 for v in found.values())
    assert all(same(found[i][0], clean[i]) for i in clean)


@pytest.fixture(scope="module")
def clean_servers() -> Iterator[FaultServer]:
    with FaultServer(grpc=True, delay=0.0) as server:
        yield server


TOTALS: dict[str, Any] = {"kills": 0, "kills_mid_output": 0, "torn_tails": 0, "restarts": 0, "lines": 0,
                          "faults": 0, "runs": 0}


def report_totals(name: str, tally: Tally, server: FaultServer, lines: int, failed: int) -> None:
    faults = server.fault_counts()
    for key in ("kills", "kills_mid_output", "torn_tails", "restarts", "runs"):
        TOTALS[key] += getattr(tally, key)
    TOTALS["lines"] += lines
    TOTALS["faults"] += sum(faults.values())
    print(f"\n[fault-suite] {name}: {lines} lines, {tally.kills} SIGKILLs ({tally.kills_mid_output} while "
          f"output grew), {tally.torn_tails} torn tails, {tally.restarts} server restarts, {tally.runs} runs, "
          f"{sum(faults.values())} faults {faults}, {failed} permanent error lines; totals {TOTALS}")


@pytest.mark.parametrize(("name", "transport", "lines", "extra", "seed", "delay"), [
    ("rest", "rest", 600, (), 1, 0.02),
    ("rest-batch4", "rest", 800, ("--batch-size", "4"), 2, 0.08),
    ("rest-ordered", "rest", 500, ("--ordered",), 3, 0.02),
    ("grpc", "grpc", 600, (), 4, 0.02),
])
def test_kill_resume_under_faults(tmp_path: Path, clean_servers: FaultServer, name: str, transport: str,
                                  lines: int, extra: tuple[str, ...], seed: int, delay: float) -> None:
    """SIGKILLed several times at random moments under faults and a server restart, the resumed
    output still holds every input line exactly once, and every success equals the clean run's."""
    rng = random.Random(seed)
    source = make_input(tmp_path / "in.txt", lines)
    clean_host = clean_servers.grpc_host if transport == "grpc" else clean_servers.rest_host
    clean = clean_run(clean_host, source, tmp_path / "clean.txt", *extra, transport=transport)
    assert len(clean) == lines
    faults = GRPC_FAULTS if transport == "grpc" else FAULTS
    with FaultServer(faults=faults, seed=seed, grpc=transport == "grpc", delay=delay, retry_after=1,
                     fault_log=tmp_path / "faults.log") as server:
        host = server.grpc_host if transport == "grpc" else server.rest_host
        out = tmp_path / "out.txt"
        base = cli_args(host, source, out, "-u", BATCH_ID, *extra, transport=transport)
        tally = Tally()
        kill_and_resume(server, base, out, rng, kills=4, tally=tally, restart_on=1)
        assert tally.kills >= 3 and tally.restarts == 1
        result = check(source, out, clean, lines)
        if "--ordered" in extra:
            order = [json.loads(x)["meta"]["tags"]["batch_index"] for x in out.read_text().splitlines()]
            assert order == sorted(order), "--ordered output is in input order across kills and resumes"
        report_totals(name, tally, server, lines, result["failed_lines"])
    retry_failed_against_clean_server(clean_host, base, out, clean)


def test_sigterm_drains_then_stops_and_resumes(tmp_path: Path, clean_servers: FaultServer) -> None:
    """SIGTERM: no new lines, requests in flight get --drain-timeout, the process exits with
    status 3 and whole lines only; a --resume then completes the file exactly."""
    lines = 400
    source = make_input(tmp_path / "in.txt", lines)
    clean = clean_run(clean_servers.rest_host, source, tmp_path / "clean.txt")
    out = tmp_path / "out.txt"
    with FaultServer(faults={"stall": 0.05, "fail_503": 0.05}, seed=7, delay=0.05, stall_seconds=600) as server:
        base = cli_args(server.rest_host, source, out, "-u", BATCH_ID, "--drain-timeout", "1.5")
        base[base.index("--timeout") + 1] = "20"  # stalled requests outlive the drain limit
        process = subprocess.Popen(base, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=loopback_env(),
                                   stdin=subprocess.DEVNULL, text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (out.exists() and out.stat().st_size > 2000):
            time.sleep(0.02)
        assert process.poll() is None, "the run must still be going when SIGTERM arrives"
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
        took = time.monotonic() - signalled
    assert process.returncode == 3, stderr[-2000:]
    assert took < 1.5 + 3.0, f"drained in {took:.1f} s"
    assert "not processed" in stdout and "stopped early" in stdout
    assert out.read_bytes().endswith(b"\n")
    report = verify(str(source), str(out))
    assert not report.duplicated.count and not report.unreadable_count and report.missing
    with FaultServer(delay=0.0) as server:
        again = cli_args(server.rest_host, source, out, "--resume")
        refused = run(again + ["-u", "another-id"])
        assert refused.returncode == 2 and "written with batch id fault-suite" in refused.stderr
        result = run(again)
        assert result.returncode == 0, result.stderr[-2000:]
    found = lines_by_index(out)
    assert sorted(found) == sorted(clean) and all(len(v) == 1 for v in found.values())
    assert all(same(found[i][0], clean[i]) for i in clean)


def test_clean_runs_match_the_real_seldon_server(tmp_path: Path, clean_servers: FaultServer,
                                                 seldon_server: SeldonServer) -> None:
    """The fault server answers like the real microservice: clean runs against either write the
    same lines, one request per line and mini-batched."""
    source = make_input(tmp_path / "in.txt", 60)
    for extra in ((), ("--batch-size", "4")):
        ours = clean_run(clean_servers.rest_host, source, tmp_path / "fault.txt", *extra)
        real = clean_run(seldon_server.rest_host, source, tmp_path / "real.txt", *extra)
        assert ours == real
    assert os.path.getsize(tmp_path / "real.txt") > 0
