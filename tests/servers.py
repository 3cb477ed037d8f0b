"""Real servers for integration tests and benchmarks, on 127.0.0.1 only.

Starts the real Seldon Core v1 model microservice (seldon-core 1.18.2, in its own
venv `.venvs/seldon`, made by scripts/setup-seldon-venv.sh) through
scripts/seldon_loopback.py, and runs the original `seldon-batch-processor`.

Findings, measured against the real servers (EchoModel, seldon-core 1.18.2):

Microservice over REST (`POST /api/v1.0/predictions`):
- ndarray `[[1, 2, 3]]` comes back `[[1, 2, 3]]`: ints stay ints, floats stay floats,
  mixed rows (`["a", 1, {"x": 1}]`) come back as sent.  `names` is always replaced by
  `["t:0", "t:1", ...]` (one per column; `[]` for a 1-d result).
- tensor `{"shape": [1, 3], "values": [1, 2, 3]}` comes back with the same shape and
  values, ints kept in the JSON.  A shape that does not match the values gives
  HTTP 500 `MICROSERVICE_INTERNAL_ERROR` ("cannot reshape array of size 3 into shape (2,3)").
- tftensor: TensorFlow is not installed, so EVERY tftensor request gets HTTP 500
  `{"status": {"code": -1, "info": "name 'TensorProto' is not defined",
  "reason": "MICROSERVICE_INTERNAL_ERROR", "status": 1}}`.  With
  `SeldonServer(tftensor_shim=True)` the launcher stands in for tf with numpy and the
  answer follows TensorFlow's rules: more than one number -> packed
  `"tensorContent": "<base64 of little-endian values>"` (float64 for DT_DOUBLE, int64 for
  DT_INT64), a single number -> `"doubleVal": [1.5]`; dtype and tensorShape are kept.
- strData `"some text"` -> `{"strData": "some text", "meta": {...}}`.
- jsonData: a dict comes back as jsonData unchanged (ints kept); a LIST comes back as
  `{"data": {"names": [], "tensor": {"shape": [3], "values": [1, 2, 3]}}}` (the model's
  list is turned into a tensor); a string comes back as strData.
- binData (base64) comes back as the same base64 binData.
- `meta.tags` are echoed exactly (types kept: `"batch_index": 3` stays an int, keys
  sorted); no meta -> `"meta": {}`; `meta.puid` is echoed; empty tags are dropped.
- Errors are SeldonMessages with `status` and `code: -1`: body not JSON -> HTTP 400
  `"Can't find JSON in data"`, `{"foo": 1}` -> HTTP 400 `"Invalid request data type: ..."`,
  both with reason `MICROSERVICE_BAD_DATA`; model errors -> HTTP 500
  `MICROSERVICE_INTERNAL_ERROR`.  Shape: `{"status": {"code": -1, "info": "...",
  "reason": "...", "status": 1}}` (`status` is the number 1 = FAILURE, not "FAILURE").
- Feedback (`POST /api/v1.0/feedback`, body `{"request": ..., "response": ...,
  "reward": r, "truth": ...}`): EchoModel.send_feedback answers with the reward, so the
  body is `{"data": {"ndarray": [r]}, "meta": {}}` for an ndarray request, or
  `{"data": {"tensor": {"shape": [1], "values": [r]}}, "meta": {}}` otherwise; request
  tags are NOT echoed.  A SeldonMessage posted to /feedback gives HTTP 400
  `MICROSERVICE_BAD_DATA` ('Message type "seldon.protos.Feedback" has no field named "data"').
  Without a send_feedback method the answer would be `{"data": {"ndarray": []}, "meta": {}}`.
- `GET /health/ping` -> `pong`.

Microservice over gRPC (`seldon.protos.Seldon/Predict`, also `seldon.protos.Model`):
- Same echo, but every number goes through protobuf Value/double: ndarray `[[1.0, 2.0,
  3.0]]`, tags `{"batch_index": 3.0}`, jsonData `{"a": 1.0}`.
- A model error is a gRPC error, StatusCode.UNKNOWN, details
  "Exception calling application: <message>"; SendFeedback answers like REST.

Original `seldon-batch-processor` (one JSON object per output line, `json.dumps`
default separators `", "` and `": "`; lines in completion order, exit status 0 even
when every line failed):
- `--transport grpc` is the spelling that works; `-t grpc` fails with exit status 2
  ("Invalid value for '--batch-interval' / '-t': 'grpc' is not a valid float.").
- REST `-a data -p ndarray` success line:
  `{"data": {"names": ["t:0", "t:1", "t:2"], "ndarray": [[0.0, 2.0, 3.5]]}, "meta": {"tags":
  {"batch_id": "<uuid1>", "batch_index": 0.0, "batch_instance_id": "<uuid1>"}}}`
  (ints become floats, batch_index too).  With `-a raw` over REST ints are kept
  (`"batch_index": 0`, `"ndarray": [[1]]`) and the line's own tags are merged in.
- gRPC `-a data` success line: `{"meta": {}, "data": {"names": [...], "ndarray": [[0.0, 2.0, 3.5]]}}`:
  no tags at all (the seldon gateway over gRPC sends none).  gRPC `-a raw`: `{"meta": {"tags":
  {"customer-id": 7.0, "batch_id": ..., "batch_instance_id": ..., "batch_index": 0.0}}, "data": ...}`.
- Error line (after 3 tries, no delay), tags flat under `meta`, batch_index an int:
  `{"status": {"info": "FAILURE", "reason": "<message>", "status": 1}, "meta": {"batch_id":
  "<uuid1>", "batch_instance_id": "<uuid1>", "batch_index": 0}}`.  `reason` is
  - server down over REST: "HTTPConnectionPool(host='127.0.0.1', port=P): Max retries exceeded
    with url: /api/v1.0/predictions (Caused by NewConnectionError(... [Errno 111] Connection refused'))",
  - an HTTP error answer (400/500) over REST: "" (status code lost),
  - anything over gRPC (server down or model error): "",
  - an input line that is not JSON: "Expecting value: line 1 column 1 (char 0)".
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.loopback import (
    LOOPBACK,
    free_ports,
    loopback_env,
    port_is_free,
)

# free_port, post_json, NginxGateway and self_signed_cert moved to tests/loopback.py and
# tests/nginx_gateway.py; still importable from here for test files written before the move.
from tests.loopback import free_port as free_port
from tests.loopback import http_request as http_request  # bench/servers.py imports it from here
from tests.loopback import post_json as post_json
from tests.nginx_gateway import NginxGateway as NginxGateway
from tests.nginx_gateway import self_signed_cert as self_signed_cert
from tests.processes import LoopbackPorts, ManagedProcess, http_ready

REPO_ROOT = Path(__file__).resolve().parent.parent
SELDON_VENV = REPO_ROOT / ".venvs" / "seldon"
SELDON_PYTHON = SELDON_VENV / "bin" / "python"
SELDON_BATCH_PROCESSOR = SELDON_VENV / "bin" / "seldon-batch-processor"
SETUP_SCRIPT = REPO_ROOT / "scripts" / "setup-seldon-venv.sh"
LAUNCHER = REPO_ROOT / "scripts" / "seldon_loopback.py"
MODELS_DIR = REPO_ROOT / "examples" / "models"


def ensure_seldon_venv(timeout: float = 900.0) -> Path:
    """Run scripts/setup-seldon-venv.sh unless `.venvs/seldon` is already complete;
    return the venv's python."""
    if not (SELDON_PYTHON.exists() and SELDON_BATCH_PROCESSOR.exists()):
        subprocess.run(["bash", str(SETUP_SCRIPT)], check=True, timeout=timeout, env=loopback_env())
    return SELDON_PYTHON


def tftensor_request(tags: Mapping[str, Any]) -> dict[str, Any]:
    """The tftensor request of the findings above (DT_DOUBLE, shape [1, 3], doubleVal 1 2 3)
    with `tags`; a new dict each call, so a test may change its copy."""
    return {
        "data": {
            "tftensor": {
                "dtype": "DT_DOUBLE",
                "tensorShape": {"dim": [{"size": "1"}, {"size": "3"}]},
                "doubleVal": [1, 2, 3],
            }
        },
        "meta": {"tags": dict(tags)},
    }


class SeldonServerError(RuntimeError):
    """The microservice did not start, or not in time."""


class SeldonServer(LoopbackPorts, ManagedProcess):
    """The real Seldon Core v1 model microservice on 127.0.0.1 (REST, gRPC, metrics).

    Ports are chosen once (free ports unless given) and kept across stop()/start(), so a
    test can stop the server mid-run and start it again at the same address.  The
    server runs in its own process group and is stopped by that group's id.
    """

    name = "seldon microservice"
    error = SeldonServerError

    def __init__(
        self,
        model_name: str = "EchoModel",
        model_dir: str | os.PathLike[str] = MODELS_DIR,
        *,
        workers: int = 1,
        threads: int = 1,
        grpc_workers: int = 1,
        grpc_threads: int = 1,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        tftensor_shim: bool = False,
        startup_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.model_name = model_name
        self.model_dir = Path(model_dir)
        self.workers = workers
        self.threads = threads
        self.grpc_workers = grpc_workers
        self.grpc_threads = grpc_threads
        ports = free_ports(3)
        self.http_port: int = http_port or ports[0]
        self.grpc_port: int = grpc_port or ports[1]
        self.metrics_port: int = metrics_port or ports[2]
        self.tftensor_shim = tftensor_shim
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_env: dict[str, str] = dict(env or {})
        self.extra_args = list(extra_args)
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"seldon-{model_name}-", suffix=".log")
            os.close(fd)
            log_path = name
        self.log_path: Path = Path(log_path)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def where(self) -> str:
        return f"{self.rest_host} / {self.grpc_host}"

    # addresses (rest_host and grpc_host from LoopbackPorts) --------------------------
    @property
    def metrics_host(self) -> str:
        return f"{LOOPBACK}:{self.metrics_port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.rest_host}"

    @property
    def predict_url(self) -> str:
        return f"{self.rest_url}/api/v1.0/predictions"

    @property
    def feedback_url(self) -> str:
        return f"{self.rest_url}/api/v1.0/feedback"

    # lifecycle -----------------------------------------------------------------
    def command(self) -> list[str]:
        cmd = [str(SELDON_PYTHON), str(LAUNCHER), "--model-dir", str(self.model_dir)]
        if self.tftensor_shim:
            cmd.append("--tftensor-shim")
        cmd += [
            self.model_name,
            "--service-type",
            "MODEL",
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            str(self.grpc_port),
            "--metrics-port",
            str(self.metrics_port),
            *self.extra_args,
        ]
        return cmd

    def environment(self) -> dict[str, str]:
        env = loopback_env()
        env.update(
            GUNICORN_WORKERS=str(self.workers),
            GUNICORN_THREADS=str(self.threads),
            GRPC_WORKERS=str(self.grpc_workers),
            GRPC_THREADS=str(self.grpc_threads),
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def start(self) -> SeldonServer:
        """Start the server on its ports and wait until REST and gRPC answer."""
        if self.running:
            return self
        if not SELDON_PYTHON.exists():
            raise SeldonServerError(f"{SELDON_PYTHON} is missing: run scripts/setup-seldon-venv.sh")
        taken = [p for p in (self.http_port, self.grpc_port, self.metrics_port) if not port_is_free(p)]
        if taken:
            raise SeldonServerError(f"ports {taken} on {LOOPBACK} are already in use")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"--- start #{self.starts}: {' '.join(self.command())}\n".encode())
        self.spawn(self.command(), cwd=self.model_dir, env=self.environment())
        self.wait_ready_or_stop(self.startup_timeout)
        return self

    def is_ready(self) -> bool:
        """REST answers `GET /health/ping` with pong and the gRPC port accepts TCP."""
        return http_ready(self.rest_host, "/health/ping", grpc_port=self.grpc_port, body=b"pong")

    def stop(self, sig: int | None = signal.SIGTERM) -> None:
        """Send `sig` (SIGTERM) to the server's process group, SIGKILL what is left after
        stop_timeout, and return once no process of the group is alive (ports released)."""
        super().stop(sig)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL to the whole group), like a crash: in-flight requests fail."""
        self.stop(signal.SIGKILL)

    def restart(self) -> SeldonServer:
        """Stop, then start again on the same ports."""
        self.stop()
        return self.start()

    def __repr__(self) -> str:
        return (
            f"SeldonServer({self.model_name!r}, rest={self.rest_host}, grpc={self.grpc_host},"
            f" pid={self.pid}, running={self.running})"
        )


def run_original_processor(
    args: Sequence[str],
    *,
    timeout: float = 120.0,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run the original `seldon-batch-processor ARGS` from the seldon venv, output
    captured as text.  Say `--transport grpc` (not `-t grpc`) for gRPC."""
    full_env = loopback_env()
    full_env.update(env or {})
    return subprocess.run(
        [str(SELDON_BATCH_PROCESSOR), *args],
        cwd=None if cwd is None else str(cwd),
        env=full_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )
