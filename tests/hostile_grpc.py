"""The hostile server's gRPC side: Seldon and V2 services answering by the ``seldon`` metadata's mode
(oversized, deep, stalled, non-finite answers).
"""

from __future__ import annotations

import argparse
import time
from concurrent import futures
from typing import Any

from tests.hostile_answers import (
    LOOPBACK,
    RequestLog,
    Scripts,
)


def make_grpc_server(args: argparse.Namespace, scripts: Scripts, requests: RequestLog) -> Any:
    import grpc
    from google.protobuf import json_format

    from seldon_batch_tx.protos import prediction_pb2, prediction_pb2_grpc

    def tags_of(request: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in request.meta.tags.items():
            kind = value.WhichOneof("kind")
            out[key] = int(value.number_value) if kind == "number_value" else getattr(value, kind or "string_value")
        return out

    def echo_message(request: Any, extra: int) -> Any:
        response = prediction_pb2.SeldonMessage()
        response.CopyFrom(request)
        if extra and response.data.WhichOneof("data_oneof") == "ndarray":
            values = response.data.ndarray.values
            if extra > 0:
                values.add().CopyFrom(values[0])
            elif len(values):
                del values[len(values) - 1]
        elif extra and response.data.WhichOneof("data_oneof") == "tensor":
            tensor = response.data.tensor
            row = len(tensor.values) // tensor.shape[0] if tensor.shape and tensor.shape[0] else 0
            if extra > 0:
                tensor.values.extend(tensor.values[:row])
                tensor.shape[0] += 1
            elif tensor.shape:
                tensor.shape[0] = max(0, tensor.shape[0] - 1)
                del tensor.values[row * tensor.shape[0]:]
        return response

    class Hostile(prediction_pb2_grpc.SeldonServicer, prediction_pb2_grpc.ModelServicer):  # type: ignore[misc]
        def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802
            metadata = dict(context.invocation_metadata())
            tags = tags_of(request)
            mode: Any = metadata.get("seldon", args.mode)
            if mode == "script":
                mode = scripts.spec(tags)
            spec = mode if isinstance(mode, dict) else {"mode": mode}
            name = spec.get("mode", "echo")
            requests.record(proto="grpc", mode=spec, batch_id=tags.get("batch_id"),
                            batch_index=tags.get("batch_index"), auth=metadata.get("x-auth-token"),
                            bytes=request.ByteSize(), head=str(request)[:2000])
            if name in ("echo", "wrong_rows", "few_rows"):
                extra = {"wrong_rows": 1, "few_rows": -1}.get(name, int(spec.get("extra_rows", 0)))
                return echo_message(request, extra)
            response = prediction_pb2.SeldonMessage()
            response.meta.CopyFrom(request.meta)
            if name == "failure":
                response.status.code = -1
                response.status.info = "boom"
                response.status.status = prediction_pb2.Status.FAILURE
            elif name == "bad_shape":
                response.data.tensor.shape.append(2)
                response.data.tensor.values.append(5)
            elif name in ("oversize_body", "oversize"):
                response.strData = "x" * int(spec.get("bytes", 8 << 20))
            elif name == "stall":
                deadline = time.monotonic() + args.stall_seconds
                while context.is_active() and time.monotonic() < deadline:
                    time.sleep(0.02)
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "stalled")
            elif name == "deep":
                # Past protobuf's parse recursion limit (100) on the client, cheap to build here.
                inner: dict[str, Any] | list[Any] = [1.0]
                for _ in range(int(spec.get("depth", 150))):
                    inner = [inner]
                json_format.ParseDict({"data": {"ndarray": inner}}, response)
            elif name == "huge_float":
                json_format.ParseDict({"data": {"ndarray": [[1.0, 2.0]]}}, response)
                response.data.ndarray.values[0].list_value.values[0].number_value = float("inf")
            elif name == "json":
                try:
                    json_format.ParseDict(spec.get("value"), response)
                except (json_format.ParseError, TypeError, ValueError, AttributeError):
                    context.abort(grpc.StatusCode.INTERNAL, "scripted answer is not a SeldonMessage")
            else:
                context.abort(grpc.StatusCode.INTERNAL, f"hostile mode {name}")
            return response

    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=options)
    prediction_pb2_grpc.add_SeldonServicer_to_server(Hostile(), server)
    prediction_pb2_grpc.add_ModelServicer_to_server(Hostile(), server)
    server.add_insecure_port(f"{LOOPBACK}:{args.grpc_port}")
    return server
