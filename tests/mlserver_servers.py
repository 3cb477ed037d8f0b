"""The real MLServer 1.7.1 (Open Inference Protocol / V2) on 127.0.0.1, for tests and benchmarks.

MLServer runs from its own venv (``.venvs/mlserver``, made by scripts/setup-mlserver-venv.sh)
and serves the example model ``examples/mlserver/echo`` (name ``echo``, version ``v1``).
``settings.json`` wins over MLSERVER_* environment variables, so each server gets a temporary
directory holding its own ``settings.json`` (free HTTP, gRPC and metrics ports, host 127.0.0.1,
``parallel_workers: 0`` to keep it to one process) and a link to the model's directory.

Findings against the real server (echo model):
* REST errors are ``{"error": "<message>"}`` with the MLServerError's status (400 here),
  500 for an unexpected exception, 404 ``Model nope not found`` for an unknown model.
* gRPC maps 400 -> INVALID_ARGUMENT, 404 -> NOT_FOUND, other exceptions -> INTERNAL.
* Request headers reach the model in ``parameters.headers`` (REST and gRPC metadata).
* ``mlserver infer`` writes ``parameters.batch_index`` and ``{"error": {"status":
  "preprocessing error", ...}}`` for every failure, and skips lines that are not JSON.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from tests.servers import LOOPBACK, REPO_ROOT, _group_alive, free_ports, http_request, loopback_env, tcp_accepts

MLSERVER_VENV = REPO_ROOT / ".venvs" / "mlserver"
MLSERVER = MLSERVER_VENV / "bin" / "mlserver"
SETUP_SCRIPT = REPO_ROOT / "scripts" / "setup-mlserver-venv.sh"
ECHO_MODEL = REPO_ROOT / "examples" / "mlserver" / "echo"


def ensure_mlserver_venv(timeout: float = 900.0) -> Path:
    """Run scripts/setup-mlserver-venv.sh unless ``.venvs/mlserver`` already has mlserver."""
    if not MLSERVER.exists():
        subprocess.run(["bash", str(SETUP_SCRIPT)], check=True, timeout=timeout, env=loopback_env())
    return MLSERVER


class MLServerError(RuntimeError):
    """MLServer did not start, or not in time."""


class MLServerServer:
    """One MLServer process serving ``model_dirs`` on free loopback ports; stopped by its group id."""

    def __init__(self, model_dirs: Sequence[Path] = (ECHO_MODEL,), *, startup_timeout: float = 90.0,
                 stop_timeout: float = 15.0) -> None:
        self.model_dirs = [Path(d) for d in model_dirs]
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="mlserver-")
        self.root = Path(self._tmp.name)
        self.log_path = self.root / "mlserver.log"
        self._write_settings()

    def _write_settings(self) -> None:
        settings = {"debug": False, "host": LOOPBACK, "http_port": self.http_port, "grpc_port": self.grpc_port,
                    "metrics_port": self.metrics_port, "parallel_workers": 0, "load_models_at_startup": True}
        (self.root / "settings.json").write_text(json.dumps(settings, indent=2))
        models = self.root / "models"
        models.mkdir(exist_ok=True)
        for d in self.model_dirs:
            link = models / d.name
            if not link.exists():
                link.symlink_to(d.resolve(), target_is_directory=True)

    @property
    def rest_host(self) -> str:
        return f"{LOOPBACK}:{self.http_port}"

    @property
    def grpc_host(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> MLServerServer:
        """Start ``mlserver start`` and wait until ``/v2/health/ready`` and the gRPC port answer."""
        if self.running:
            return self
        if not MLSERVER.exists():
            raise MLServerError(f"{MLSERVER} is missing: run scripts/setup-mlserver-venv.sh")
        env = loopback_env()
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([str(MLSERVER), "start", str(self.root)], cwd=str(self.root), env=env,
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        try:
            self.wait_ready(self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def is_ready(self) -> bool:
        try:
            status, _ = http_request("GET", self.rest_host, "/v2/health/ready", timeout=2.0)
        except (OSError, http.client.HTTPException):
            return False
        return status == 200 and tcp_accepts(LOOPBACK, self.grpc_port)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise MLServerError(f"mlserver exited with status {code} before it was ready:\n{self.log_tail()}")
            if self.is_ready():
                return
            time.sleep(0.2)
        raise MLServerError(f"mlserver not ready on {self.rest_host} after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL what is left after ``stop_timeout``."""
        process, self.process = self.process, None
        if process is None:
            return
        pgid = process.pid  # start_new_session: the group id is the leader's pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while time.monotonic() < deadline and _group_alive(pgid):
            process.poll()
            time.sleep(0.1)
        if _group_alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5.0)

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> MLServerServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MLServerServer(rest={self.rest_host}, grpc={self.grpc_host}, running={self.running})"


def run_mlserver_infer(args: Sequence[str], *, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """``mlserver infer ARGS`` (MLServer's own V2 batch client), with no proxy."""
    return subprocess.run([str(MLSERVER), "infer", *args], capture_output=True, text=True, timeout=timeout,
                          env=loopback_env(), stdin=subprocess.DEVNULL, check=False)
