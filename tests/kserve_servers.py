"""A real KServe 0.21 model server on 127.0.0.1 (REST V2 and V2 gRPC), for tests.

It runs tests/models/kserve_model.py (model ``scale``: OUTPUT = 3 * INPUT - 1, FP32 rows of 2)
with the interpreter of ``.venvs/kserve`` (made by scripts/setup-kserve-venv.sh).
"""

from __future__ import annotations

import http.client
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from tests.loopback import LOOPBACK, free_ports, http_request, loopback_env, tcp_accepts
from tests.processes import ManagedProcess
from tests.servers import REPO_ROOT

KSERVE_VENV = REPO_ROOT / ".venvs" / "kserve"
KSERVE_PYTHON = KSERVE_VENV / "bin" / "python"
SETUP_SCRIPT = REPO_ROOT / "scripts" / "setup-kserve-venv.sh"
MODEL_SCRIPT = REPO_ROOT / "tests" / "models" / "kserve_model.py"
MODEL_NAME = "scale"


def ensure_kserve_venv(timeout: float = 900.0) -> Path:
    """Run scripts/setup-kserve-venv.sh unless ``.venvs/kserve`` already exists."""
    if not KSERVE_PYTHON.exists():
        subprocess.run(["bash", str(SETUP_SCRIPT)], check=True, timeout=timeout, env=loopback_env())
    return KSERVE_PYTHON


class KServeError(RuntimeError):
    """The KServe model server did not start, or not in time."""


class KServeServer(ManagedProcess):
    """One KServe model server process on free loopback ports; stopped by its group id."""

    name = "kserve"
    error = KServeError

    def __init__(self, *, startup_timeout: float = 90.0, stop_timeout: float = 15.0) -> None:
        self.http_port, self.grpc_port = free_ports(2)
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="kserve-")
        self.root = Path(self._tmp.name)
        self.log_path = self.root / "kserve.log"

    @property
    def rest_host(self) -> str:
        return f"{LOOPBACK}:{self.http_port}"

    @property
    def grpc_host(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    def where(self) -> str:
        return self.rest_host

    def start(self) -> KServeServer:
        """Start the model server; ready once ``/v2/models/scale/ready`` and the gRPC port answer."""
        if self.running:
            return self
        ensure_kserve_venv()
        env = loopback_env()
        env["PYTHONUNBUFFERED"] = "1"
        self.spawn([str(KSERVE_PYTHON), str(MODEL_SCRIPT), "--http_port", str(self.http_port),
                    "--grpc_port", str(self.grpc_port)], cwd=self.root, env=env)
        self.wait_ready_or_stop(self.startup_timeout)
        return self

    def is_ready(self) -> bool:
        try:
            status, _ = http_request("GET", self.rest_host, f"/v2/models/{MODEL_NAME}/ready", timeout=2.0)
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
        return f"KServeServer(rest={self.rest_host}, grpc={self.grpc_host}, running={self.running})"
