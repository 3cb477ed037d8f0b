"""A real KServe 0.21 model server on 127.0.0.1 (REST V2 and V2 gRPC), for tests.

It runs tests/models/kserve_model.py (model ``scale``: OUTPUT = 3 * INPUT - 1, FP32 rows of 2)
with the interpreter of ``.venvs/kserve`` (made by scripts/setup-kserve-venv.sh).
"""

from __future__ import annotations

import functools

from tests.loopback import loopback_env
from tests.processes import ModelServer, ensure_venv
from tests.servers import REPO_ROOT

KSERVE_VENV = REPO_ROOT / ".venvs" / "kserve"
KSERVE_PYTHON = KSERVE_VENV / "bin" / "python"
SETUP_SCRIPT = REPO_ROOT / "scripts" / "setup-kserve-venv.sh"
MODEL_SCRIPT = REPO_ROOT / "tests" / "models" / "kserve_model.py"
MODEL_NAME = "scale"


#: Run scripts/setup-kserve-venv.sh unless ``.venvs/kserve`` already exists.
ensure_kserve_venv = functools.partial(ensure_venv, KSERVE_PYTHON, SETUP_SCRIPT)


class KServeServer(ModelServer):
    """One KServe model server process on free loopback ports; stopped by its group id."""

    name = "kserve"
    ready_path = f"/v2/models/{MODEL_NAME}/ready"

    def launch(self) -> tuple[list[str], dict[str, str]]:
        """The model server's command; ready once ``/v2/models/scale/ready`` and the gRPC port answer."""
        ensure_kserve_venv()
        env = loopback_env()
        env["PYTHONUNBUFFERED"] = "1"
        return [str(KSERVE_PYTHON), str(MODEL_SCRIPT), "--http_port", str(self.http_port),
                "--grpc_port", str(self.grpc_port)], env
