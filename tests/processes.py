"""One lifecycle for the server processes tests and bench/ start: spawn in a session of its
own, poll until ready within a bound, stop by the process group (SIGTERM, then SIGKILL).

:class:`ManagedProcess` is the base of tests/servers.py's ``SeldonServer`` and
``NginxGateway``, tests/faultserver.py's ``FaultServer``, tests/hostile_server.py's
``HostileServer`` and bench/servers.py's servers; :class:`ModelServer` (one temporary directory,
REST and gRPC ports, a V2 readiness path) that of the real KServe, MLServer and Triton servers;
:class:`LoopbackPorts` and :func:`http_ready` give them all one way to name their addresses and
to tell when they are ready; :func:`stop_group` and :func:`wait_until` serve the ones that run
several children.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from tests.loopback import LOOPBACK, free_ports, http_request, loopback_env, tcp_accepts


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) pids of process group `pgid`."""
    pids: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            pids.append(int(entry))
    return sorted(pids)


def group_alive(pgid: int) -> bool:
    """True while a process of group `pgid` is alive (zombies don't count)."""
    return bool(group_pids(pgid))


def signal_group(pgid: int, sig: int) -> None:
    """Send `sig` to process group `pgid`; a group that is gone already is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def stop_group(process: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Send `sig` to the group of `process` (started with start_new_session, so the group id is
    its pid), SIGKILL what is left after `timeout`, and return once no process of the group is
    alive (its ports released) or 5 s after the SIGKILL."""
    if process is None:
        return
    pgid = process.pid
    signal_group(pgid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.poll()
        if not group_alive(pgid):
            break
        time.sleep(0.1)
    else:
        signal_group(pgid, signal.SIGKILL)
        kill_deadline = time.monotonic() + 5.0
        while time.monotonic() < kill_deadline and group_alive(pgid):
            process.poll()
            time.sleep(0.05)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5.0)


def wait_until(check: Callable[..., Any], timeout: float, what: str,
               alive: Callable[..., Any] | None = None, interval: float = 0.05) -> None:
    """Poll `check()` every `interval` until true; RuntimeError after `timeout` or once
    `alive()` is false."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if alive is not None and not alive():
            raise RuntimeError(f"{what}: process exited before it was ready")
        time.sleep(interval)
    raise RuntimeError(f"{what}: not ready after {timeout:.0f} s")


def read_stderr_until(process: subprocess.Popen[str], pattern: re.Pattern[str],
                      timeout: float = 60) -> tuple[re.Match[str], list[str]]:
    """Read the child's stderr a line at a time until one matches ``pattern``: the match and the lines read
    (AssertionError, with them, once the stream ends or ``timeout`` passes first)."""
    assert process.stderr is not None
    read: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        read.append(line)
        found = pattern.search(line)
        if found:
            return found, read
    raise AssertionError(f"no line matching {pattern.pattern!r}: " + "".join(read)[-2000:])


def log_tail(path: Path | None, lines: int = 40) -> str:
    """The last `lines` lines of a log file, or "(no log)"."""
    if path is None:
        return "(no log)"
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class Managed:
    """Context-manager plumbing: ``with server:`` starts it and stops it."""

    def start(self) -> Any:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class ManagedProcess(Managed):
    """One server child process in a session of its own.

    Subclasses say what to run in ``start()`` (through :meth:`spawn` then
    :meth:`wait_ready`) and when it is ready in :meth:`is_ready`.  ``stop()`` signals the whole
    group, so workers the server forks go with it.
    """

    name = "server"  # for messages
    error: type[Exception] = RuntimeError  # what a failed start raises
    poll_interval = 0.2
    startup_timeout = 60.0
    stop_timeout = 10.0
    stop_signal: int = signal.SIGTERM
    log_path: Path | None = None  # the child's stdout and stderr, appended; None = inherited

    process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def where(self) -> str:
        """The address the server serves, for messages."""
        return ""

    def is_ready(self) -> bool:
        raise NotImplementedError

    def spawn(self, command: Sequence[str], *, cwd: str | os.PathLike[str] | None = None,
              env: Mapping[str, str] | None = None, stdout: int | IO[Any] | None = None) -> subprocess.Popen[bytes]:
        """Popen `command` in a new session, stdin closed, output appended to ``log_path``
        (or to `stdout` when there is no log)."""
        def popen(out: int | IO[Any] | None) -> subprocess.Popen[bytes]:
            return subprocess.Popen(list(command), cwd=None if cwd is None else str(cwd),
                                    env=None if env is None else dict(env), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT if out is not None else None,
                                    start_new_session=True)

        if self.log_path is None:
            self.process = popen(stdout)
        else:
            with open(self.log_path, "ab") as log:
                self.process = popen(log)
        return self.process

    def wait_ready(self, timeout: float | None = None) -> None:
        """Poll :meth:`is_ready` until true; ``error`` (with the log's tail) once the process
        exits or `timeout` (``startup_timeout``) passes."""
        timeout = self.startup_timeout if timeout is None else timeout
        log = f"; log {self.log_path}" if self.log_path is not None else ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise self.error(f"{self.name} exited with status {code} before it was ready{log}:\n"
                                 f"{self.log_tail()}")
            if self.is_ready():
                return
            time.sleep(self.poll_interval)
        raise self.error(f"{self.name} not ready on {self.where()} after {timeout:.0f} s{log}:\n{self.log_tail()}")

    def wait_ready_or_stop(self, timeout: float | None = None) -> None:
        """:meth:`wait_ready`, stopping the process if it fails (or is interrupted)."""
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, sig: int | None = None) -> None:
        """Send `sig` (``stop_signal``) to the process group, SIGKILL what is left after
        ``stop_timeout``; return once the group is gone."""
        process, self.process = self.process, None
        stop_group(process, self.stop_signal if sig is None else sig, self.stop_timeout)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)


def ensure_venv(made: Path, setup_script: Path, timeout: float = 900.0) -> Path:
    """Run `setup_script` (a scripts/setup-*-venv.sh) unless `made`, a file the venv holds once
    that script has run, already exists; return `made`."""
    if not made.exists():
        subprocess.run(["bash", str(setup_script)], check=True, timeout=timeout, env=loopback_env())
    return made


def http_ready(rest_host: str, path: str, *, grpc_port: int | None = None, body: bytes | None = None,
               timeout: float = 2.0) -> bool:
    """True once ``GET path`` on `rest_host` answers 200 (with `body`, stripped, when given) and,
    when `grpc_port` is given, that port accepts TCP; False while the server is not there yet."""
    try:
        status, got = http_request("GET", rest_host, path, timeout=timeout)
    except (OSError, http.client.HTTPException):
        return False
    if status != 200 or (body is not None and got.strip() != body):
        return False
    return grpc_port is None or tcp_accepts(LOOPBACK, grpc_port)


class ModelServerError(RuntimeError):
    """A model server did not start, or not in time (the message names which)."""


class LoopbackPorts:
    """The addresses of a server on LOOPBACK that serves REST on ``http_port`` and gRPC on
    ``grpc_port``, in the ``host:port`` form ``--host`` takes."""

    http_port: int
    grpc_port: int

    @property
    def rest_host(self) -> str:
        return f"{LOOPBACK}:{self.http_port}"

    @property
    def grpc_host(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    def where(self) -> str:
        return self.rest_host


class ModelServer(LoopbackPorts, ManagedProcess):
    """A real model server (KServe, MLServer, Triton) on free loopback ports, run in a temporary
    directory of its own that holds its log; ready once ``ready_path`` answers 200 and the gRPC
    port accepts.  ``close()`` (or leaving ``with``) stops its group and removes the directory.

    Subclasses say in :meth:`launch` what to run; the directory is named ``tmp_prefix`` (``name-``
    unless said) and the log ``name.log``.
    """

    error = ModelServerError
    tmp_prefix: str | None = None
    ready_path = "/v2/health/ready"

    def __init__(self, *, startup_timeout: float = 90.0, stop_timeout: float = 15.0, extra_ports: int = 0) -> None:
        self.http_port, self.grpc_port, *self.extra_ports = free_ports(2 + extra_ports)
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._tmp = tempfile.TemporaryDirectory(prefix=self.tmp_prefix or f"{self.name}-")
        self.root = Path(self._tmp.name)
        self.log_path = self.root / f"{self.name}.log"

    def launch(self) -> tuple[list[str], dict[str, str]]:
        """Whatever set-up the server needs first; then its command line and environment."""
        raise NotImplementedError

    def start(self) -> Self:
        """Run :meth:`launch`'s command in ``root`` and wait until it is ready (stopped if not)."""
        if self.running:
            return self
        command, env = self.launch()
        self.spawn(command, cwd=self.root, env=env)
        self.wait_ready_or_stop(self.startup_timeout)
        return self

    def is_ready(self) -> bool:
        return http_ready(self.rest_host, self.ready_path, grpc_port=self.grpc_port)

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rest={self.rest_host}, grpc={self.grpc_host}, running={self.running})"
