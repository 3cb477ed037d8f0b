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

import http.client
import json
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from tests.loopback import LOOPBACK, free_ports, http_request, loopback_env, tcp_accepts
from tests.processes import ManagedProcess
from tests.servers import REPO_ROOT

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


class MLServerServer(ManagedProcess):
    """One MLServer process serving ``model_dirs`` on free loopback ports; stopped by its group id."""

    name = "mlserver"
    error = MLServerError

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

    def where(self) -> str:
        return self.rest_host

    def start(self) -> MLServerServer:
        """Start ``mlserver start`` and wait until ``/v2/health/ready`` and the gRPC port answer."""
        if self.running:
            return self
        if not MLSERVER.exists():
            raise MLServerError(f"{MLSERVER} is missing: run scripts/setup-mlserver-venv.sh")
        env = loopback_env()
        env["PYTHONUNBUFFERED"] = "1"
        self.spawn([str(MLSERVER), "start", str(self.root)], cwd=self.root, env=env)
        self.wait_ready_or_stop(self.startup_timeout)
        return self

    def is_ready(self) -> bool:
        try:
            status, _ = http_request("GET", self.rest_host, "/v2/health/ready", timeout=2.0)
        except (OSError, http.client.HTTPException):
            return False
        return status == 200 and tcp_accepts(LOOPBACK, self.grpc_port)

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MLServerServer(rest={self.rest_host}, grpc={self.grpc_host}, running={self.running})"


def run_mlserver_infer(args: Sequence[str], *, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """``mlserver infer ARGS`` (MLServer's own V2 batch client), with no proxy."""
    return subprocess.run([str(MLSERVER), "infer", *args], capture_output=True, text=True, timeout=timeout,
                          env=loopback_env(), stdin=subprocess.DEVNULL, check=False)
