"""The daemon under twistd as a new user meets it (issue 23): its pid file in the watch directory by default, a
second daemon on the same directory refused in one line with exit 2 (wherever it was started), inputs named by
their path, each summary logged once, no listening-port chatter, and ``--log-level`` applied to twistd's log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.loopback import free_port, loopback_env
from tests.processes import stop_group
from tests.servers import SeldonServer
from tests.test_daemon_real import wait_for, write_lines

TWISTD = str(Path(sys.executable).parent / "twistd")


def start(cwd: Path, server: SeldonServer, watch: Path, *extra: str, port: int | None = None,
          log: Path | None = None) -> subprocess.Popen[bytes]:
    """``twistd -n seldon-batch`` as the README shows it: no ``--pidfile``."""
    cwd.mkdir(exist_ok=True)
    command = [TWISTD, "-n", "seldon-batch", "-d", "echo", "-g", "seldon", "-h", server.rest_host, "--watch-dir",
               str(watch), "--poll-interval", "0.2", "--dashboard", f"tcp:{port or free_port()}:interface=127.0.0.1",
               *extra]
    env = loopback_env()
    env["PYTHONUNBUFFERED"] = "1"
    with open(log or os.devnull, "wb") as out:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def test_one_daemon_per_watch_dir_with_its_pid_file_and_a_quiet_log(tmp_path: Path,
                                                                     seldon_server: SeldonServer) -> None:
    watch = tmp_path / "watch"
    log = tmp_path / "first.log"
    first = start(tmp_path / "a", seldon_server, watch, log=log)
    try:
        pidfile = watch / "twistd.pid"
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() == str(first.pid), 30, "the pid file")
        wait_for(lambda: (watch / "incoming").is_dir(), 30, "incoming/")
        assert not (tmp_path / "a" / "twistd.pid").exists()

        # from another directory (another pid file) as from the same one: refused by the directory's lock
        for cwd in (tmp_path / "b", tmp_path / "a"):
            cwd.mkdir(exist_ok=True)
            second = subprocess.run([TWISTD, "-n", "seldon-batch", "-d", "echo", "-g", "seldon", "-h",
                                     seldon_server.rest_host, "--watch-dir", str(watch), "--dashboard", "none"],
                                    cwd=cwd, env=loopback_env(), capture_output=True, text=True, timeout=60)
            assert second.returncode == 2, second.stdout + second.stderr
            assert second.stdout == "" and len(second.stderr.splitlines()) == 1, second.stderr
            assert second.stderr.startswith(f"twistd seldon-batch: error: --watch-dir {watch}: another daemon")
        assert pidfile.read_text().strip() == str(first.pid) and first.poll() is None

        write_lines(watch / "incoming" / "scores.txt", 30)
        (watch / "incoming" / "scores.txt.ready").touch()
        wait_for(lambda: (watch / "done" / "scores.txt.summary.json").exists(), 60, "scores.txt in done/")
        first.send_signal(signal.SIGTERM)
        first.wait(30)
    finally:
        stop_group(first, signal.SIGKILL)
    text = log.read_text()
    assert f"30 lines from {watch}/processing/scores.txt to echo" in text, text
    assert "/proc/self/fd" not in text
    assert text.count("30 lines: 30 succeeded") == 1, text  # the summary, once
    assert "starting on" not in text and "Closed)" not in text, text
    assert "dashboard listening on" in text  # where it listens is still said, once

    # the lock died with the daemon: a new one takes the directory over
    again = start(tmp_path / "c", seldon_server, watch, log=tmp_path / "again.log")
    try:
        wait_for(lambda: (watch / "twistd.pid").exists() and (watch / "twistd.pid").read_text().strip()
                 == str(again.pid), 30, "the new daemon's pid file")
        assert again.poll() is None
    finally:
        stop_group(again)


def test_log_level_applies_to_twistd_log(tmp_path: Path, seldon_server: SeldonServer) -> None:
    watch = tmp_path / "watch"
    log = tmp_path / "quiet.log"
    daemon = start(tmp_path / "a", seldon_server, watch, "--log-level", "warning", log=log)
    try:
        wait_for(lambda: (watch / "incoming").is_dir(), 30, "incoming/")
        write_lines(watch / "incoming" / "x.txt", 3)
        (watch / "incoming" / "x.txt.ready").touch()
        wait_for(lambda: (watch / "done" / "x.txt.summary.json").exists(), 60, "x.txt in done/")
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    finally:
        stop_group(daemon, signal.SIGKILL)
    text = log.read_text()
    assert "#info]" not in text and "[-]" not in text, text


def test_two_one_file_runs_from_one_directory_and_one_summary_each(tmp_path: Path,
                                                                    seldon_server: SeldonServer) -> None:
    """Under ``-n`` a one-file run writes no pid file, so two (e.g. shards) started from one directory both run,
    where twistd's default ``twistd.pid`` refused the second; each logs its summary once."""
    runs = []
    for name in ("a", "b"):
        write_lines(tmp_path / f"{name}.txt", 20)
        runs.append(subprocess.Popen([TWISTD, "-n", "seldon-batch", "-d", "echo", "-g", "seldon", "-h",
                                      seldon_server.rest_host, "-i", f"{name}.txt", "--dashboard", "none", "-w", "1",
                                      "--batch-interval", "0.1"], cwd=tmp_path, env=loopback_env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True))
    try:
        outputs = [run.communicate(timeout=120)[0] for run in runs]
    finally:
        for run in runs:
            stop_group(run, signal.SIGKILL)
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output
        assert output.count("20 lines: 20 succeeded") == 1, output
        assert "Another twistd server" not in output
    assert not (tmp_path / "twistd.pid").exists()
