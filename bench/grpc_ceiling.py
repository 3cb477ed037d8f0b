"""The most any gRPC client can get from a server on this machine: a bare grpc.aio loop.

    .venv/bin/python bench/grpc_ceiling.py HOST:PORT --lines N [--workers W] [--channels C]

It sends what ``seldon-batch-processor --transport grpc`` sends for the lines of
tests/replica_servers.write_input (``Seldon/Predict`` with ``data.ndarray`` ``[[i, 1.5]]``, the
three batch tags in ``meta.tags`` and a ``seldon-puid`` metadata entry), W calls in flight over C
channels with their own subchannels, and nothing else: no file read, no JSON, no output.  On a
machine whose cores the server's processes share with the client (bench/replicas_bench.py), its
rate is the ceiling the server leaves: a real client can approach it, not pass it.

Prints one JSON object: lines, errors, wall seconds, the rate and the answers per serving pid
(``meta.tags.pid`` of tests/models/PidModel.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from seldon_batch_tx.protos import prediction_pb2, prediction_pb2_grpc  # noqa: E402

OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


def request(batch_id: str, index: int) -> prediction_pb2.SeldonMessage:
    message = prediction_pb2.SeldonMessage()
    row = message.data.ndarray.values.add().list_value
    row.values.add().number_value = index
    row.values.add().number_value = 1.5
    tags = message.meta.tags
    tags["batch_id"].string_value = batch_id
    tags["batch_instance_id"].string_value = str(uuid.uuid4())
    tags["batch_index"].number_value = index
    return message


async def run(target: str, lines: int, workers: int, channels: int, timeout: float) -> dict[str, object]:
    opened = [grpc.aio.insecure_channel(target, options=OPTIONS) for _ in range(max(channels, 1))]
    stubs = [prediction_pb2_grpc.SeldonStub(channel) for channel in opened]
    batch_id = str(uuid.uuid4())
    indexes = iter(range(lines))
    pids: Counter[int] = Counter()
    errors = 0

    async def worker() -> None:
        nonlocal errors
        for i in indexes:
            try:
                answer = await stubs[i % len(stubs)].Predict(
                    request(batch_id, i), timeout=timeout, metadata=(("seldon-puid", uuid.uuid4().hex),))
                pids[int(answer.meta.tags["pid"].number_value)] += 1
            except grpc.RpcError:
                errors += 1

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(workers)))
    wall = time.monotonic() - started
    for channel in opened:
        await channel.close()
    return {"lines": lines, "errors": errors, "wall": wall, "rate": lines / wall, "pids": dict(pids)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target")
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline of one call")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args.target, args.lines, args.workers, args.channels, args.timeout))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
