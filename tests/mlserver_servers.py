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

import functools
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.loopback import LOOPBACK, loopback_env
from tests.processes import ModelServer, ensure_venv
from tests.servers import REPO_ROOT

MLSERVER_VENV = REPO_ROOT / ".venvs" / "mlserver"
MLSERVER = MLSERVER_VENV / "bin" / "mlserver"
SETUP_SCRIPT = REPO_ROOT / "scripts" / "setup-mlserver-venv.sh"
ECHO_MODEL = REPO_ROOT / "examples" / "mlserver" / "echo"


#: Run scripts/setup-mlserver-venv.sh unless ``.venvs/mlserver`` already has mlserver.
ensure_mlserver_venv = functools.partial(ensure_venv, MLSERVER, SETUP_SCRIPT)


class MLServerServer(ModelServer):
    """One MLServer process serving ``model_dirs`` on free loopback ports; stopped by its group id."""

    name = "mlserver"

    def __init__(self, model_dirs: Sequence[Path] = (ECHO_MODEL,), *, startup_timeout: float = 90.0,
                 stop_timeout: float = 15.0) -> None:
        self.model_dirs = [Path(d) for d in model_dirs]
        super().__init__(startup_timeout=startup_timeout, stop_timeout=stop_timeout, extra_ports=1)
        (self.metrics_port,) = self.extra_ports
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

    def launch(self) -> tuple[list[str], dict[str, str]]:
        """``mlserver start``; ready once ``/v2/health/ready`` and the gRPC port answer."""
        if not MLSERVER.exists():
            raise self.error(f"{MLSERVER} is missing: run scripts/setup-mlserver-venv.sh")
        env = loopback_env()
        env["PYTHONUNBUFFERED"] = "1"
        return [str(MLSERVER), "start", str(self.root)], env


def run_mlserver_infer(args: Sequence[str], *, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """``mlserver infer ARGS`` (MLServer's own V2 batch client), with no proxy."""
    return subprocess.run([str(MLSERVER), "infer", *args], capture_output=True, text=True, timeout=timeout,
                          env=loopback_env(), stdin=subprocess.DEVNULL, check=False)
