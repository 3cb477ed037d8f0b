"""Every number a run takes has a lower and an upper limit (issue 25: High 3, Medium 8 and 9).

Values a run cannot live with (``1e308`` seconds between requests, ``1e-300`` requests per second,
a 1,000,000,000-line request, an fsync every reactor turn) are refused in one line by the real
command (exit 2) and by twistd, and a sidecar holding one sends its file to ``failed/`` with the
reason, through a real ``twistd -n seldon-batch --watch-dir`` daemon. The README's table of limits
is the one :mod:`seldon_batch_tx.bounds` enforces.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seldon_batch_tx.bounds import LIMITS, limits_table
from seldon_batch_tx.tap import DAEMON_TABLE
from tests.loopback import loopback_env
from tests.test_daemon_real import Daemon, wait_for, write_lines

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent

#: The issue's values, and each option's first value past a limit on either side.
EXTREMES: list[tuple[str, str]] = [
    ("batch-interval", "1e308"), ("max-rate", "1e-300"), ("timeout", "1e300"), ("batch-size", "1000000000"),
    ("fsync-interval", "1e-300"), ("batch-interval", "61"), ("max-rate", "0.009"), ("max-rate", "1000001"),
    ("timeout", "3601"), ("timeout", "0.001"), ("drain-timeout", "1e9"), ("batch-size", "10001"),
    ("retries", "101"), ("fsync-interval", "0.05"), ("fsync-interval", "3601"), ("max-line-bytes", "1073741825"),
    ("max-response-bytes", "99999999999"), ("grpc-channels", "1025"), ("connection-max-age", "1e-9"),
    ("connection-max-age", "86401"), ("dashboard-linger", "1e300"),
]
#: Values at the limits, still taken.
EDGES: list[tuple[str, str]] = [
    ("batch-interval", "60"), ("max-rate", "0.01"), ("timeout", "3600"), ("batch-size", "10000"),
    ("fsync-interval", "0.1"), ("retries", "100"), ("drain-timeout", "0"), ("max-line-bytes", "1073741824"),
    ("dashboard-linger", "forever"), ("grpc-channels", "none"), ("max-rate", "none"),
]


def run_command(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "in.txt").write_text("[[1]]\n")
    command = [str(BIN / "seldon-batch-processor"), "-d", "m", "-g", "seldon", "-h", "127.0.0.1:9",
               "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.txt"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=loopback_env())


def test_the_command_refuses_each_extreme_in_one_line(tmp_path: Path) -> None:
    """The real command leaves with status 2 and one line naming the option and its limit; nothing is sent
    and no output file is made. (One process per value: each start costs a second, so they share a test.)"""
    for option, value in EXTREMES[:5]:
        proc = run_command(tmp_path, f"--{option}", value)
        lines = proc.stderr.splitlines()
        assert proc.returncode == 2, (option, value, proc.stderr)
        assert len(lines) == 1 and f"--{option} {value}" in lines[0], proc.stderr
        assert "must be at most" in lines[0] or "must be at least" in lines[0], lines[0]
        assert not (tmp_path / "out.txt").exists()


@pytest.mark.parametrize(("option", "value"), EXTREMES, ids=[f"{o}={v}" for o, v in EXTREMES])
def test_twistd_refuses_each_extreme(option: str, value: str, tmp_path: Path) -> None:
    """twistd's own parser, with the plugin as subcommand, refuses every extreme (status 2)."""
    from twisted.scripts.twistd import ServerOptions

    with pytest.raises(SystemExit) as leaving:
        ServerOptions().parseOptions(["-n", "seldon-batch", "-d", "m", "--watch-dir", str(tmp_path / "w"),
                                      "--dashboard", "none", f"--{option}", value])
    assert leaving.value.code == 2


def test_the_real_twistd_refuses_a_daemon_that_would_stall(tmp_path: Path) -> None:
    """``twistd seldon-batch --batch-interval 1e308``: one line, status 2, no watch directory made."""
    proc = subprocess.run([str(BIN / "twistd"), "-n", "--pidfile=", "seldon-batch", "-d", "m", "--dashboard",
                           "none", "--watch-dir", str(tmp_path / "w"), "--batch-interval", "1e308"],
                          capture_output=True, text=True, timeout=120, env=loopback_env(), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "--batch-interval 1e308" in proc.stderr, proc.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(("option", "value"), EDGES, ids=[f"{o}={v}" for o, v in EDGES])
def test_values_at_the_limits_are_taken(option: str, value: str, tmp_path: Path) -> None:
    from seldon_batch_tx import cli

    (tmp_path / "in.txt").write_text("[[1]]\n")
    cli.parse(["-d", "m", "-i", str(tmp_path / "in.txt"), f"--{option}", value])


def test_the_daemons_own_intervals_are_bounded(tmp_path: Path) -> None:
    """--poll-interval and --file-time-slice: a scan every 1e-300 s would spin, one every 1e300 s never comes."""
    from twisted.scripts.twistd import ServerOptions

    for option, value in (("poll-interval", "1e-300"), ("poll-interval", "1e300"), ("file-time-slice", "1e300"),
                          ("file-time-slice", "0.5")):
        with pytest.raises(SystemExit) as leaving:
            ServerOptions().parseOptions(["-n", "seldon-batch", "-d", "m", "--watch-dir", str(tmp_path / "w"),
                                          "--dashboard", "none", f"--{option}", value])
        assert leaving.value.code == 2


class Nowhere:
    """No model: every file here is refused before a request is sent."""

    rest_host = "127.0.0.1:9"


SIDECARS = {
    "interval.txt": {"batch-interval": 1e308}, "rate.txt": {"max-rate": 1e-300}, "timeout.txt": {"timeout": 1e300},
    "size.txt": {"batch-size": 1000000000}, "fsync.txt": {"fsync-interval": 1e-300},
    "retries.txt": {"retries": 1000}, "interval-text.txt": {"batch_interval": "86400"},
}


def test_a_daemon_files_each_extreme_sidecar_under_failed_with_its_reason(tmp_path: Path,
                                                                         daemons: list[Daemon]) -> None:
    """Each extreme value in a sidecar sends its file to failed/ at once with a reason naming the key and the
    limit; the daemon stays up and a file without a sidecar behind them is still taken."""
    watch = tmp_path / "watch"
    incoming = watch / "incoming"
    incoming.mkdir(parents=True)
    for name, settings in SIDECARS.items():
        write_lines(incoming / name, 3)
        (incoming / (name + ".json")).write_text(json.dumps(settings))
        (incoming / (name + ".ready")).write_text("")
    daemon = Daemon(tmp_path, Nowhere(), ["--watch-dir", str(watch), "--poll-interval", "0.2", "-r", "0",
                                          "--timeout", "1"])
    daemons.append(daemon)
    daemon.wait_ready()
    failed = watch / "failed"
    for name, settings in SIDECARS.items():
        reason_file = failed / (name + ".reason.txt")
        wait_for(reason_file.exists, 30, f"{name} in failed/", details=daemon.log)
        reason = reason_file.read_text()
        key = next(iter(settings))
        assert reason.count("\n") == 1 and f"sidecar setting {key!r}" in reason, reason
        assert "must be at most" in reason or "must be at least" in reason, reason
        assert not (failed / name.replace(".txt", ".out.txt")).exists()  # refused before any request
    write_lines(incoming / "plain.txt", 2)
    (incoming / "plain.txt.ready").write_text("")

    def waiting() -> bool:  # no model there: an outage, which the daemon waits through (issue 19)
        batches = json.loads(daemon.get("/api/batches")[1])["batches"]
        return any(b["name"] == "plain.txt" and b.get("waiting", "").startswith("waiting for the model since")
                   for b in batches)

    wait_for(waiting, 30, "plain.txt taken and waiting for the model", details=daemon.log)
    assert not (failed / "plain.txt.reason.txt").exists()
    assert daemon.process.poll() is None


def test_the_readme_table_is_the_one_enforced() -> None:
    """The README lists every limit exactly as bounds.LIMITS holds it."""
    readme = (ROOT / "README.md").read_text()
    assert limits_table() in readme
    assert len(LIMITS) >= 12 and set(COERCE) == set(LIMITS)  # every limit belongs to an option


COERCE = {o.name: o.coerce for o in DAEMON_TABLE if o.name in LIMITS}


@given(st.sampled_from(sorted(LIMITS)), st.one_of(st.floats(), st.integers(-10**20, 10**20),
                                                   st.floats(min_value=1e-320, max_value=1e-3)))
def test_any_number_is_taken_only_within_its_limits(name: str, number: float) -> None:
    """Whatever number is written, the option's value is within its limits, off (None) or refused (ValueError)."""
    low, high = LIMITS[name]
    coerce = COERCE[name]
    assert coerce is not None
    try:
        value = coerce(repr(number))
    except ValueError:
        return
    assert value is None or value == math.inf and name == "dashboard-linger" or low <= value <= high
