"""Requests/s of each REST transport alone (no reader, codec or writer) against nginx on loopback.

    .venv/bin/python bench/transport_micro.py [-n 20000] [-w 50] [--runs 3] [--clients treq,fast]

Starts nginx (the Debian binary) from a temporary prefix with a minimal config that answers every
POST with a fixed Seldon body, then pushes ``-n`` requests through each transport with ``-w``
concurrent callers and prints requests/s and client CPU ms per 1,000 requests. The spread of
``--runs`` runs is printed; each run uses a fresh transport (fresh connections).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from seldon_batch_tx.config import BatchConfig  # noqa: E402
from seldon_batch_tx.core.failures import RequestFailed  # noqa: E402
from seldon_batch_tx.transports.base import Transport  # noqa: E402
from tests.targets import target_of  # noqa: E402

BODY = '{"data":{"names":["t:0"],"ndarray":[[1]]},"meta":{}}'
NGINX_CONF = """daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 100000000;
    default_type application/json;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 '{body}'; }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def nginx(timeout: float = 10.0) -> Iterator[int]:
    """A throwaway nginx on 127.0.0.1; yields its port and stops it by PID."""
    prefix = tempfile.mkdtemp(prefix="nginx-micro-")
    port = free_port()
    conf = Path(prefix) / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, body=BODY))
    proc = subprocess.Popen(["nginx", "-p", prefix, "-c", str(conf)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.05)
        else:
            raise RuntimeError("nginx did not start listening")
        yield port
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        shutil.rmtree(prefix, ignore_errors=True)


def make(client: str, config: BatchConfig, reactor: Any) -> Transport:
    if client == "fast":
        from seldon_batch_tx.transports.fast import FastHttpTransport

        return FastHttpTransport(config, reactor, target=target_of(config))
    from seldon_batch_tx.transports.treq_client import RestTransport

    return RestTransport(config, reactor, target=target_of(config))


async def run_one(reactor: Any, client: str, port: int, n: int, workers: int) -> tuple[float, float, int]:
    """(requests/s, CPU ms per 1,000 requests, failures) of one run."""
    config = BatchConfig(deployment_name="bench", input_data_path="-", output_data_path="-",
                         gateway_type="seldon", host=f"127.0.0.1:{port}", workers=workers, timeout=10.0)
    transport = make(client, config, reactor)
    transport.start()
    body = {"data": {"ndarray": [[1.0, 2.0, 3.0, 4.0]]}, "meta": {"tags": {"batch_index": 0}}}
    remaining = iter(range(n))
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for i in remaining:
            try:
                await transport.send(body, f"puid-{i}")
            except RequestFailed:
                failures += 1

    from twisted.internet.defer import Deferred, gatherResults

    cpu0, t0 = time.process_time(), time.perf_counter()
    await gatherResults([Deferred.fromCoroutine(worker()) for _ in range(workers)])
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await transport.stop()
    return n / wall, 1e6 * cpu / n, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("-w", "--workers", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", default="treq,fast")
    args = parser.parse_args()

    from twisted.internet import defer, task

    async def body(reactor: Any) -> None:
        with nginx() as port:
            for client in args.clients.split(","):
                rates, cpus = [], []
                for _ in range(args.runs):
                    rate, cpu, failures = await run_one(reactor, client, port, args.n, args.workers)
                    if failures:
                        print(f"  {client}: {failures} failures", flush=True)
                    rates.append(rate)
                    cpus.append(cpu)
                rates.sort()
                print(f"{client:5s} n={args.n} w={args.workers}: median {rates[len(rates) // 2]:8.0f} req/s "
                      f"(min {rates[0]:.0f}, max {rates[-1]:.0f}), {sorted(cpus)[len(cpus) // 2]:.0f} ms CPU "
                      f"per 1,000 requests", flush=True)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS {rss:.0f} MB, pid {os.getpid()}", flush=True)

    task.react(lambda reactor: defer.ensureDeferred(body(reactor)))


if __name__ == "__main__":
    main()
