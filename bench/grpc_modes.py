"""Throughput of GrpcTransport's two modes against the real Seldon microservice on loopback.

    .venv/bin/python bench/grpc_modes.py [--requests 2000] [--workers 50] [--rounds 3]
        [--grpc-workers 1] [--grpc-threads 10] [--modes futures,threads]

Starts the real seldon-core 1.18.2 microservice (EchoModel, tests/servers.py), then for each
round runs every mode once (alternating, so drift hits both): ``--workers`` coroutines share
one iterator of ``--requests`` ndarray requests and send them through one transport.
Prints requests/s per run and the median per mode.

Note: one channel is one HTTP/2 connection, and the microservice's processes share the
port with SO_REUSEPORT per connection, so all traffic of a run lands on ONE server process
whatever ``--grpc-workers`` is (measured: 2 workers, same ~760 req/s as 1).

Measured on a 2-core box under load from other work (medians of 3-5 rounds, req/s, client CPU):
    grpc_threads=1 : futures 1008 / 0.39 ms, threads 909 / 0.47 ms
    grpc_threads=1 : futures  729 / 0.48 ms, threads 749 / 0.46 ms   (load avg ~6)
    grpc_threads=1, 4000 req: futures 777 / 0.48 ms, threads 750 / 0.58 ms
    grpc_threads=10: futures  715 / 0.45 ms, threads 789 / 0.50 ms
    grpc_threads=10: futures  602 / 0.46 ms, threads 645 / 0.53 ms
Throughput is server-bound and equal within noise; futures costs less client CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import task  # noqa: E402
from twisted.internet.defer import DeferredList, ensureDeferred  # noqa: E402

from seldon_batch_tx.config import BatchConfig  # noqa: E402
from seldon_batch_tx.core.failures import RequestFailed  # noqa: E402
from seldon_batch_tx.transports.grpc_client import MODES, GrpcTransport  # noqa: E402
from tests.servers import SeldonServer  # noqa: E402
from tests.targets import target_of  # noqa: E402


def body(i: int) -> dict[str, Any]:
    """One small request like the engine builds for `-a data -p ndarray`."""
    return {
        "data": {"ndarray": [[i, 2.5, 3, 4]]},
        "meta": {"tags": {"batch_id": "bench", "batch_instance_id": f"id-{i}", "batch_index": i}},
    }


async def run_once(
    reactor: Any, config: BatchConfig, mode: str, requests: int
) -> tuple[float, float, int]:
    """Send ``requests`` requests with ``config.workers`` in flight.

    Returns (requests/s, client CPU ms per request, failures): with a 2-core box the server is
    the bottleneck, so the client's CPU cost per request tells the modes apart better.
    """
    transport = GrpcTransport(config, reactor, mode=mode, target=target_of(config))
    transport.start()
    items = iter(range(requests))
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for i in items:
            try:
                await transport.send(body(i), f"id-{i}")
            except RequestFailed:
                failures += 1

    # warm the channel up (connection, HTTP/2 settings) outside the timed part
    await transport.send(body(-1), "warmup")
    start, cpu_start = time.perf_counter(), time.process_time()
    await DeferredList([ensureDeferred(worker()) for _ in range(config.workers)], fireOnOneErrback=True)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    await transport.stop()
    return requests / elapsed, 1000 * cpu / requests, failures


async def main(reactor: Any, args: argparse.Namespace) -> None:
    modes = [m for m in args.modes.split(",") if m]
    for mode in modes:
        if mode not in MODES:
            raise SystemExit(f"unknown mode {mode!r}; choose from {MODES}")
    with SeldonServer(
        "EchoModel", grpc_workers=args.grpc_workers, grpc_threads=args.grpc_threads
    ) as server:
        config = BatchConfig(
            deployment_name="bench",
            input_data_path="-",
            output_data_path="-",
            gateway_type="seldon",
            host=server.grpc_host,
            transport="grpc",
            workers=args.workers,
            timeout=30.0,
        )
        results: dict[str, list[float]] = {m: [] for m in modes}
        cpu_ms: dict[str, list[float]] = {m: [] for m in modes}
        for round_no in range(1, args.rounds + 1):
            for mode in modes if round_no % 2 else reversed(modes):
                rate, cpu, failures = await run_once(reactor, config, mode, args.requests)
                results[mode].append(rate)
                cpu_ms[mode].append(cpu)
                print(
                    f"round {round_no} {mode:8s} {rate:8.0f} req/s  client CPU {cpu:.3f} ms/req"
                    f"  failures={failures}",
                    flush=True,
                )
        print(
            f"\n{args.requests} requests, {args.workers} workers, server grpc_workers="
            f"{args.grpc_workers} grpc_threads={args.grpc_threads}"
        )
        for mode in modes:
            rates = results[mode]
            runs = ", ".join(f"{r:.0f}" for r in rates)
            print(
                f"{mode:8s} median {statistics.median(rates):8.0f} req/s  (runs: {runs});"
                f"  client CPU median {statistics.median(cpu_ms[mode]):.3f} ms/req"
            )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--grpc-workers", type=int, default=1)
    parser.add_argument("--grpc-threads", type=int, default=10)
    parser.add_argument("--modes", default=",".join(MODES))
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    task.react(lambda reactor: ensureDeferred(main(reactor, arguments)))
