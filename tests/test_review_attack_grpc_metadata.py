"""Review attack: a gRPC V2 server whose ``ModelMetadata`` answer lies about shapes, or that quotes the token.

REST metadata with a dimension below -1, a shape of more than 32 dimensions or more than 1,024
tensors is not used (requests follow the options); the gRPC answer was taken as it came, so every
line became an input error quoting a shape of thousands of dimensions. Both are now read alike.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from seldon_batch_tx.protocols.v2_metadata import from_grpc
from seldon_batch_tx.protos import grpc_service_pb2, v2_metadata_pb2
from tests.loopback import loopback_env
from tests.v2_runs import PROCESSOR

METHOD = "/inference.GRPCInferenceService/ModelMetadata"


def serve(metadata: Any) -> tuple[Any, int]:
    """A real gRPC server on loopback: ready (the run's readiness probe), ``metadata`` for ModelMetadata."""
    def ready(kind: str) -> Any:
        request, response = (getattr(grpc_service_pb2, f"{kind}{part}") for part in ("Request", "Response"))
        return grpc.unary_unary_rpc_method_handler(lambda r, c: response(ready=True),
                                                   request_deserializer=request.FromString,
                                                   response_serializer=response.SerializeToString)

    handler = grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {
        "ServerReady": ready("ServerReady"), "ModelReady": ready("ModelReady"),
        "ModelMetadata": grpc.unary_unary_rpc_method_handler(
            metadata, request_deserializer=v2_metadata_pb2.ModelMetadataRequest.FromString,
            response_serializer=v2_metadata_pb2.ModelMetadataResponse.SerializeToString)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def lying(shape: list[int], inputs: int = 1) -> Any:
    return v2_metadata_pb2.ModelMetadataResponse(name="m", platform="liar", inputs=[
        v2_metadata_pb2.ModelMetadataResponse.TensorMetadata(name=f"IN{i}", datatype="FP32", shape=shape)
        for i in range(inputs)])


@pytest.mark.parametrize("shape,inputs", [([-1, -7], 1), ([-1] + [2] * 5000, 1), ([-1, 2], 2000)])
def test_lying_grpc_metadata_is_refused(shape: list[int], inputs: int) -> None:
    with pytest.raises(ValueError):
        from_grpc(lying(shape, inputs))


@pytest.fixture
def liar() -> Iterator[int]:
    """A real gRPC server on loopback answering ModelMetadata with a 5,000-dimension shape."""
    def metadata(request: Any, context: Any) -> Any:
        return lying([-1] + [2] * 5000)

    server, port = serve(metadata)
    try:
        yield port
    finally:
        server.stop(0).wait(5)


def test_real_run_ignores_lying_grpc_metadata(liar: int, tmp_path: Path) -> None:
    src, out = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text("[1.0, 2.0]\n")
    proc = subprocess.run([PROCESSOR, "--protocol", "v2", "-d", "m", "-g", "seldon", "-t", "grpc",
                           "-h", f"127.0.0.1:{liar}", "-i", str(src), "-o", str(out), "-r", "0", "-l", "info"],
                          capture_output=True, text=True, timeout=120, env=loopback_env())
    assert "V2 model m: metadata not read" in proc.stderr, proc.stderr[-2000:]
    (record,) = [json.loads(x) for x in out.read_text().splitlines()]
    reason = record["status"]["reason"]
    assert "does not fit" not in reason and len(reason) < 1000  # the server's own refusal of ModelInfer
    assert len(proc.stderr) < 20_000


TOKEN = "sekrit-TOKEN-5678"


@pytest.fixture
def quoter() -> Iterator[int]:
    """A real gRPC server refusing ModelMetadata with the X-Auth-Token it was sent quoted in its details."""
    def metadata(request: Any, context: Any) -> Any:
        got = dict(context.invocation_metadata()).get("x-auth-token")
        context.abort(grpc.StatusCode.PERMISSION_DENIED, f"token {got} is not allowed here")

    server, port = serve(metadata)
    try:
        yield port
    finally:
        server.stop(0).wait(5)


def test_twistd_log_never_shows_the_token_a_server_quotes(quoter: int, tmp_path: Path) -> None:
    """twistd's log redacts nothing itself (the CLI's does): the metadata log line is redacted at its source."""
    src, out = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text("[1.0, 2.0]\n")
    twistd = str(Path(PROCESSOR).parent / "twistd")
    proc = subprocess.run([twistd, "-n", "--pidfile=", "seldon-batch", "--protocol", "v2", "-d", "m", "-g", "seldon",
                           "-t", "grpc", "-h", f"127.0.0.1:{quoter}", "--call-credentials-token", TOKEN,
                           "-i", str(src), "-o", str(out), "-r", "0"],
                          capture_output=True, text=True, timeout=120, env=loopback_env(), cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert "no metadata from" in log and "PERMISSION_DENIED: token [redacted] is not allowed here" in log, log[-2000:]
    assert TOKEN not in log + out.read_text()


@pytest.fixture
def refuses_readiness() -> Iterator[int]:
    """A real gRPC server refusing ServerReady with the X-Auth-Token it was sent quoted in its details."""
    def ready(request: Any, context: Any) -> Any:
        got = dict(context.invocation_metadata()).get("x-auth-token")
        context.abort(grpc.StatusCode.PERMISSION_DENIED, f"token {got} refused")

    handler = grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {
        "ServerReady": grpc.unary_unary_rpc_method_handler(
            ready, request_deserializer=grpc_service_pb2.ServerReadyRequest.FromString,
            response_serializer=grpc_service_pb2.ServerReadyResponse.SerializeToString)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(0).wait(5)


@pytest.mark.parametrize("command", ["cli", "twistd"])
def test_readiness_refusal_never_shows_the_token(refuses_readiness: int, tmp_path: Path, command: str) -> None:
    """The one line (exit 4) naming why the model is not reachable redacts what the server said."""
    src = tmp_path / "in.txt"
    src.write_text("[1.0, 2.0]\n")
    start = [str(Path(PROCESSOR).parent / "twistd"), "-n", "--pidfile=", "seldon-batch"] if command == "twistd" \
        else [PROCESSOR]
    proc = subprocess.run([*start, "--protocol", "v2", "-d", "m", "-g", "seldon", "-t", "grpc",
                           "-h", f"127.0.0.1:{refuses_readiness}", "--call-credentials-token", TOKEN,
                           "-i", str(src), "-o", str(tmp_path / "out.txt")],
                          capture_output=True, text=True, timeout=120, env=loopback_env(), cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 4 and "PERMISSION_DENIED: token [redacted] refused" in log, log[-2000:]
    assert TOKEN not in log
