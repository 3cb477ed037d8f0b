"""A fast Seldon gRPC echo server, and the plain ``grpc.aio`` load loop that gives a gRPC server's ceiling.

    .venv/bin/python bench/grpc_echo.py serve --port PORT
    .venv/bin/python bench/grpc_echo.py load --host 127.0.0.1:PORT --concurrency 50 --duration 5

``serve``: ``seldon.protos.Seldon/Predict`` and ``seldon.protos.Model/Predict`` answer the request
message itself (like the Seldon EchoModel, without the Flask/numpy cost), on 127.0.0.1 with
gRPC's default SO_REUSEPORT, so bench/servers.py runs several processes on one port (each new
connection goes to one of them; one channel is one connection).  Prints ``READY <port>``.

``load``: `concurrency` coroutines share ONE channel and send small ndarray requests for
`duration` seconds; prints ``RATE <requests/s> ERRORS <n>``.  This is the ceiling a lean client
reaches on the server, against which the batch processors' gRPC rows are compared.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402
from google.protobuf import struct_pb2  # noqa: E402

from seldon_batch_tx.protos import prediction_pb2, prediction_pb2_grpc  # noqa: E402


class Echo(prediction_pb2_grpc.SeldonServicer):
    """Predict answers the request as it came; so does the Model service."""

    async def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method name
        return request


class ModelEcho(prediction_pb2_grpc.ModelServicer):
    async def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method name
        return request


async def serve(port: int) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1), ("grpc.max_concurrent_streams", 10_000)])
    prediction_pb2_grpc.add_SeldonServicer_to_server(Echo(), server)  # type: ignore[no-untyped-call]
    prediction_pb2_grpc.add_ModelServicer_to_server(ModelEcho(), server)  # type: ignore[no-untyped-call]
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"READY {bound}", flush=True)
    await server.wait_for_termination()


def request(i: int) -> Any:
    message = prediction_pb2.SeldonMessage()
    message.data.ndarray.values.add().list_value.values.extend(
        [struct_pb2.Value(number_value=v) for v in (i, 2.5, 3, 4)]
    )
    message.meta.tags["batch_index"].number_value = i
    return message


async def load(host: str, concurrency: int, duration: float) -> tuple[float, int]:
    """Requests/s that `concurrency` coroutines on one channel reach in `duration` seconds."""
    done = errors = 0
    async with grpc.aio.insecure_channel(host) as channel:
        stub = prediction_pb2_grpc.SeldonStub(channel)  # type: ignore[no-untyped-call]
        await stub.Predict(request(0), timeout=10)  # connect outside the timed part
        start = time.perf_counter()
        stop = start + duration

        async def worker(w: int) -> None:
            nonlocal done, errors
            message = request(w)
            for _ in range(10_000_000):  # bounded; the clock ends it first
                if time.perf_counter() >= stop:
                    return
                try:
                    await stub.Predict(message, timeout=10)
                    done += 1
                except grpc.aio.AioRpcError:
                    errors += 1

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.perf_counter() - start
    return done / elapsed, errors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    ld = sub.add_parser("load")
    ld.add_argument("--host", required=True)
    ld.add_argument("--concurrency", type=int, default=50)
    ld.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args(argv)
    if args.command == "serve":
        asyncio.run(serve(args.port))
    else:
        rate, errors = asyncio.run(load(args.host, args.concurrency, args.duration))
        print(f"RATE {rate:.1f} ERRORS {errors}", flush=True)


if __name__ == "__main__":
    main()
