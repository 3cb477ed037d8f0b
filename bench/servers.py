"""The loopback servers bench/ drives, and `wrk` for their ceilings.

* :class:`NginxServer`: the fast fixed-response server (Debian nginx from a temporary prefix,
  ``daemon off``, 127.0.0.1 only), one port answering one-row bodies and one port answering
  ``rows``-row bodies for mini-batches.  It is never the bottleneck: `wrk` measures its ceiling.
* :class:`LatencyServer`: bench/latency_server.py (10 ms per answer), several processes
  sharing the port with SO_REUSEPORT.
* The real Seldon microservice is tests/servers.py's ``SeldonServer``.
* :func:`wrk_rate`: requests/s that `wrk` reaches with a POST body (a small lua script).

Every process is started in its own session and stopped by its group (tests/processes.py); every
wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import string
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.processes import Managed, ManagedProcess, stop_group, wait_until  # noqa: E402
from tests.servers import LOOPBACK, free_port, free_ports, http_request, loopback_env  # noqa: E402

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
PROJECT_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"


def seldon_body(rows: int) -> dict[str, Any]:
    """What the model answers for `rows` rows of 4 numbers (Seldon protocol)."""
    return {
        "data": {"names": ["t:0", "t:1", "t:2", "t:3"], "ndarray": [[1.0, 2.0, 3.0, 4.0]] * rows},
        "meta": {"tags": {"model": "bench"}},
    }


def v2_body(rows: int) -> dict[str, Any]:
    """The V2 answer for a [rows, 4] FP64 input."""
    return {
        "model_name": "bench",
        "id": "bench",
        "outputs": [{"name": "output-0", "shape": [rows, 4], "datatype": "FP64", "data": [1.0, 2.0, 3.0, 4.0] * rows}],
    }


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def pinged(host: str) -> bool:
    try:
        status, body = http_request("GET", host, "/health/ping", timeout=1.0)
    except OSError:
        return False
    return status == 200 and body.strip() == b"pong"


class NginxServer(ManagedProcess):
    """nginx answering fixed JSON for the Seldon and V2 paths; `workers` worker processes
    (1 or 2 on a 2-core box, to leave CPU for the client)."""

    name = "nginx"
    poll_interval = 0.05

    def __init__(self, workers: int = 1, rows: int = 32, startup_timeout: float = 15.0) -> None:
        self.workers = workers
        self.rows = rows
        self.port, self.batch_port = free_ports(2)
        self.startup_timeout = startup_timeout
        self.prefix: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def batch_host(self) -> str:
        return f"{LOOPBACK}:{self.batch_port}"

    def render(self, prefix: Path) -> str:
        template = string.Template((BENCH_DIR / "nginx.conf.template").read_text())
        text = template.safe_substitute(
            workers=self.workers,
            prefix=str(prefix),
            port=self.port,
            batch_port=self.batch_port,
            rows=self.rows,
            seldon_body=compact(seldon_body(1)),
            v2_body=compact(v2_body(1)),
            seldon_batch_body=compact(seldon_body(self.rows)),
            v2_batch_body=compact(v2_body(self.rows)),
        )
        if "${" in text:
            raise RuntimeError(f"unfilled placeholder in nginx.conf.template: {re.findall(r'[$][{][^}]*}', text)}")
        return text

    def start(self) -> NginxServer:
        self.prefix = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        self.prefix.chmod(0o755)
        conf = self.prefix / "nginx.conf"
        conf.write_text(self.render(self.prefix))
        self.log_path = self.prefix / "stderr.log"
        self.spawn([NGINX, "-p", str(self.prefix), "-c", str(conf), "-e", str(self.prefix / "error.log")])
        self.wait_ready_or_stop()
        return self

    def where(self) -> str:
        return self.host

    def is_ready(self) -> bool:
        return pinged(self.host) and pinged(self.batch_host)

    def stop(self, sig: int | None = None) -> None:
        # nginx's master stops its workers on SIGTERM (fast shutdown) or SIGQUIT (graceful)
        super().stop(sig)
        if self.prefix is not None:
            shutil.rmtree(self.prefix, ignore_errors=True)
            self.prefix = None

    def describe(self) -> str:
        return f"nginx {self.workers} worker(s), fixed body"


class ReusePortServers(Managed):
    """`processes` copies of one bench/ server sharing a port (SO_REUSEPORT); each child
    prints READY on its log when it listens, and is stopped by its own group."""

    label = "server"

    def __init__(self, processes: int, startup_timeout: float) -> None:
        self.processes = processes
        self.port = free_port()
        self.startup_timeout = startup_timeout
        self.children: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        """Once every child said READY: True, or a further check (the port answers)."""
        return True

    def start(self) -> ReusePortServers:
        slug = self.label.lower().replace(" ", "-")
        try:
            for i in range(self.processes):
                fd, name = tempfile.mkstemp(prefix=f"bench-{slug}-{i}-", suffix=".log")
                self.logs.append(Path(name))
                child = subprocess.Popen(
                    self.command(), stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT,
                    start_new_session=True, env=loopback_env(),
                )
                os.close(fd)
                self.children.append(child)
                log = self.logs[-1]
                wait_until(lambda log=log: b"READY" in log.read_bytes(), self.startup_timeout,
                           f"{self.label} #{i} on {self.host}", alive=lambda child=child: child.poll() is None)
            wait_until(self.ready, self.startup_timeout, f"{self.label} on {self.host}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for child in self.children:
            stop_group(child)
        self.children = []
        for log in self.logs:
            with contextlib.suppress(OSError):
                log.unlink()
        self.logs = []


class LatencyServer(ReusePortServers):
    """bench/latency_server.py in `processes` processes sharing one port (SO_REUSEPORT)."""

    label = "latency server"

    def __init__(self, delay: float = 0.01, processes: int = 2, startup_timeout: float = 20.0) -> None:
        super().__init__(processes, startup_timeout)
        self.delay = delay

    def command(self) -> list[str]:
        return [str(PROJECT_PYTHON), str(BENCH_DIR / "latency_server.py"), "--port", str(self.port),
                "--delay", str(self.delay), "--reuseport"]

    def ready(self) -> bool:
        return pinged(self.host)

    def describe(self) -> str:
        return f"latency {self.delay * 1000:.0f} ms, {self.processes} Twisted processes (SO_REUSEPORT)"


WRK_LUA = """\
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
"""

_UNITS = {"": 1.0, "k": 1e3, "m": 1e6}


def wrk_rate(url: str, body: str, connections: int, duration: float = 5.0, threads: int = 1) -> float:
    """Requests/s `wrk` reaches POSTing `body` to `url` with `connections` keep-alive connections
    (0.0 when wrk failed or saw errors on most requests)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_LUA.format(body=json.dumps(body)))
    try:
        threads = max(1, min(threads, connections))
        result = subprocess.run(
            [WRK, f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--timeout", "10s", "-s", script.name, url],
            capture_output=True, text=True, timeout=duration + 30, stdin=subprocess.DEVNULL, env=loopback_env(),
        )
    finally:
        os.unlink(script.name)
    match = re.search(r"Requests/sec:\s*([\d.]+)([kKmM]?)", result.stdout)
    if result.returncode != 0 or match is None:
        return 0.0
    rate = float(match.group(1)) * _UNITS[match.group(2).lower()]
    bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", result.stdout)
    total = re.search(r"(\d+) requests in", result.stdout)
    if bad and total and int(bad.group(1)) > int(total.group(1)) // 2:
        return 0.0
    return rate


class GrpcEchoServer(ReusePortServers):
    """bench/grpc_echo.py serve: a Seldon gRPC echo in `processes` processes sharing the port."""

    label = "gRPC echo server"

    def __init__(self, processes: int = 2, startup_timeout: float = 20.0) -> None:
        super().__init__(processes, startup_timeout)

    def command(self) -> list[str]:
        return [str(PROJECT_PYTHON), str(BENCH_DIR / "grpc_echo.py"), "serve", "--port", str(self.port)]

    def describe(self) -> str:
        return f"gRPC echo (grpc.aio), {self.processes} processes (SO_REUSEPORT)"


def grpc_load_rate(host: str, concurrency: int, duration: float = 5.0) -> float:
    """Requests/s a plain grpc.aio loop (one channel, `concurrency` coroutines) reaches on
    a Seldon gRPC server; 0.0 when it failed or saw errors."""
    result = subprocess.run(
        [str(PROJECT_PYTHON), str(BENCH_DIR / "grpc_echo.py"), "load", "--host", host,
         "--concurrency", str(concurrency), "--duration", str(duration)],
        capture_output=True, text=True, timeout=duration + 60, stdin=subprocess.DEVNULL, env=loopback_env(),
    )
    match = re.search(r"RATE ([\d.]+) ERRORS (\d+)", result.stdout)
    if result.returncode != 0 or match is None or int(match.group(2)) > 0:
        return 0.0
    return float(match.group(1))
