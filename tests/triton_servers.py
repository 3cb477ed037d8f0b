"""A real Triton Inference Server on 127.0.0.1, for tests and benchmarks.

The server is the ``tritonserver`` binary bundled in the ``nvidia-pytriton`` wheel (Triton 2.5x),
installed in ``.venvs/triton`` by scripts/setup-triton-venv.sh; it serves CPU Python-backend
models from tests/models/triton (each ``config.pbtxt`` plus the shared ``model_template.py``).

What running the bundled binary by hand needs (found by trying; pytriton does the same):
* a backend folder holding the wheel's ``libtriton_python.so`` and the Python stub built for this
  interpreter's version (``python_backend_stubs/3.X/triton_python_backend_stub``);
* ``LD_LIBRARY_PATH`` with the folder of this interpreter's ``libpython3.X.so`` (the stub embeds
  it) and the wheel's ``nvidia_pytriton.libs``;
* the venv's ``bin`` first on ``PATH``: the embedded interpreter finds its ``sys.path`` from the
  ``python3`` it sees there, so models import the venv's numpy (<2, as the stub was built for);
  without it they get another numpy and answer with empty tensors.

No GPU: Triton logs that CUDA is missing and serves the CPU models all the same.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.loopback import LOOPBACK, loopback_env
from tests.processes import ModelServer, ensure_venv
from tests.servers import REPO_ROOT

TRITON_VENV = REPO_ROOT / ".venvs" / "triton"
TRITON_PYTHON = TRITON_VENV / "bin" / "python"
SETUP_SCRIPT = REPO_ROOT / "scripts" / "setup-triton-venv.sh"
MODELS = REPO_ROOT / "tests" / "models" / "triton"
MODEL_TEMPLATE = MODELS / "model_template.py"
#: The test models (``bench_*`` ones are served only when a benchmark asks for them).
ALL_MODELS = tuple(sorted(p.name for p in MODELS.iterdir()
                          if (p / "config.pbtxt").exists() and not p.name.startswith("bench_")))


def ensure_triton_venv(timeout: float = 900.0) -> Path:
    """Run scripts/setup-triton-venv.sh unless ``.venvs/triton`` already has pytriton."""
    binary = _site_packages().joinpath("pytriton", "tritonserver", "bin", "tritonserver")
    ensure_venv(binary, SETUP_SCRIPT, timeout)
    return TRITON_PYTHON


def _site_packages() -> Path:
    found = sorted((TRITON_VENV / "lib").glob("python3*/site-packages"))
    return found[0] if found else TRITON_VENV / "lib" / "python3" / "site-packages"


def _interpreter_facts() -> tuple[str, str]:
    """``(version "3.X", libpython folder)`` of the venv's interpreter."""
    script = ("import sys, sysconfig; print(f'{sys.version_info[0]}.{sys.version_info[1]}'); "
              "print(sysconfig.get_config_var('LIBDIR'))")
    out = subprocess.run([str(TRITON_PYTHON), "-c", script], capture_output=True, text=True, check=True,
                         timeout=60).stdout.split()
    return out[0], out[1]


class TritonServer(ModelServer):
    """One ``tritonserver`` serving ``models`` (names under tests/models/triton) on free loopback ports;
    ready once ``/v2/health/ready`` (every model loaded) and gRPC answer."""

    name = "tritonserver"
    tmp_prefix = "triton-"

    def __init__(self, models: Sequence[str] = ALL_MODELS, *, startup_timeout: float = 120.0,
                 stop_timeout: float = 20.0) -> None:
        self.models = list(models)
        super().__init__(startup_timeout=startup_timeout, stop_timeout=stop_timeout)

    def _layout(self) -> tuple[Path, Path, dict[str, str]]:
        """The model repository, the backend folder and the environment Triton runs with."""
        dist = _site_packages() / "pytriton" / "tritonserver"
        version, libdir = _interpreter_facts()
        backends = self.root / "backends" / "python"
        backends.mkdir(parents=True, exist_ok=True)
        for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
            target = backends / name
            if not target.exists():
                target.symlink_to(dist / "backends" / "python" / name)
        stub = backends / "triton_python_backend_stub"
        if not stub.exists():
            shutil.copy(dist / "python_backend_stubs" / version / stub.name, stub)
        repo = self.root / "models"
        for model in self.models:
            (repo / model / "1").mkdir(parents=True, exist_ok=True)
            shutil.copy(MODELS / model / "config.pbtxt", repo / model / "config.pbtxt")
            shutil.copy(MODEL_TEMPLATE, repo / model / "1" / "model.py")
        env = loopback_env()
        libs = [libdir, str(_site_packages() / "nvidia_pytriton.libs")]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
        env["PATH"] = os.pathsep.join([str(TRITON_VENV / "bin"), env.get("PATH", "/usr/bin:/bin")])
        env.pop("PYTHONPATH", None)
        env.pop("PYTHONHOME", None)
        return repo, self.root / "backends", env

    def launch(self) -> tuple[list[str], dict[str, str]]:
        """The venv (made if missing), the model repository and backend folder, then the command."""
        ensure_triton_venv()
        binary = _site_packages() / "pytriton" / "tritonserver" / "bin" / "tritonserver"
        repo, backends, env = self._layout()
        return [str(binary), f"--model-repository={repo}", f"--backend-directory={backends}",
                f"--http-address={LOOPBACK}", f"--http-port={self.http_port}",
                f"--grpc-address={LOOPBACK}", f"--grpc-port={self.grpc_port}",
                "--allow-metrics=false", "--allow-gpu-metrics=false", "--exit-on-error=true",
                "--strict-readiness=true", "--exit-timeout-secs=5"], env
