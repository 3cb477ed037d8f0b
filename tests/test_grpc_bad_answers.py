"""gRPC answers that cannot be read are that line's ``bad_response`` with a printable reason (issue 25, lows).

Bytes that are not the expected protobuf message used to surface as ``internal_error`` with an
``AttributeError`` reason (grpc.aio hands back None); a V2 ``ModelInferResponse`` holding both
``raw_output_contents`` and typed ``contents`` (the protocol allows one or the other) was accepted
silently, as was a raw list that does not match the outputs. Through the real command against a
loopback gRPC fault server (a generic handler answering raw bytes), and the real MLServer and Seldon
microservice for the answers that must still be taken.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from seldon_batch_tx.protos import grpc_service_pb2
from tests.loopback import free_port, loopback_env

CLI = str(Path(sys.executable).parent / "seldon-batch-processor")
SELDON_PREDICT = "/seldon.protos.Seldon/Predict"
V2_INFER = "/inference.GRPCInferenceService/ModelInfer"


def v2_answer(raw: list[bytes], typed: list[float] | None, outputs: int = 1) -> bytes:
    response = grpc_service_pb2.ModelInferResponse(model_name="m", id="x")
    for i in range(outputs):
        tensor = response.outputs.add(name=f"out-{i}", datatype="FP32", shape=[1, 2])
        if typed is not None:
            tensor.contents.fp32_contents.extend(typed)
    response.raw_output_contents.extend(raw)
    return bytes(response.SerializeToString())


#: path -> the bytes every call gets back, by case.
ANSWERS: dict[str, tuple[str, bytes]] = {
    "seldon-undecodable": (SELDON_PREDICT, b"\xff\xff\xff\xff\x0f"),
    "v2-undecodable": (V2_INFER, b"\x0a\xff\xff\xff"),
    "v2-raw-and-typed": (V2_INFER, v2_answer([struct.pack("<2f", 1.0, 2.0)], [1.0, 2.0])),
    "v2-raw-count": (V2_INFER, v2_answer([struct.pack("<2f", 1.0, 2.0)], None, outputs=2)),
}


class FaultServer:
    """An in-process gRPC server answering every call of ``path`` with fixed bytes (no serializer)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.answers: dict[str, bytes] = {}
        self.calls = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers([self])
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")

    def service(self, details: Any) -> Any:
        body = self.answers.get(details.method)
        if body is None:
            return None

        def answer(_request: bytes, _context: Any) -> bytes:
            self.calls += 1
            return body
        identity: Callable[[bytes], bytes] = lambda b: b  # noqa: E731
        return grpc.unary_unary_rpc_method_handler(answer, request_deserializer=identity,
                                                   response_serializer=identity)


@pytest.fixture(scope="module")
def fault() -> Iterator[FaultServer]:
    server = FaultServer()
    server.server.start()
    try:
        yield server
    finally:
        server.server.stop(0).wait(5)


@pytest.mark.parametrize("case", sorted(ANSWERS))
def test_an_unreadable_grpc_answer_is_bad_response(case: str, fault: FaultServer, tmp_path: Path) -> None:
    path, body = ANSWERS[case]
    fault.answers = {path: body}
    v2 = path == V2_INFER
    (tmp_path / "in.txt").write_text("[[1.0, 2.0]]\n[[3.0, 4.0]]\n")
    calls = fault.calls
    proc = subprocess.run([CLI, "-d", "m", "-g", "seldon", "-t", "grpc", "-h", f"127.0.0.1:{fault.port}",
                           "--protocol", "v2" if v2 else "seldon", *(["-p", "FP32"] if v2 else []), "-r", "2",
                           "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.txt")],
                          capture_output=True, text=True, timeout=120, env=loopback_env())
    assert proc.returncode == 1, proc.stderr
    records = [json.loads(line) for line in (tmp_path / "out.txt").read_text().splitlines()]
    assert sorted(r["meta"]["tags"]["batch_index"] for r in records) == [0, 1]
    for record in records:
        status = record["status"]
        assert status["info"] == "bad_response", status
        assert "AttributeError" not in status["reason"] and "NoneType" not in status["reason"]
        assert status["reason"].isprintable() and len(status["reason"]) < 400
    assert fault.calls - calls == 2  # an answer's fault is not retried
    if case == "v2-raw-and-typed":
        assert all("both raw_output_contents and typed contents" in r["status"]["reason"] for r in records)
    if case == "v2-raw-count":
        assert all("1 raw_output_contents for 2 outputs" in r["status"]["reason"] for r in records)
    if case.endswith("undecodable"):
        assert all("not a valid" in r["status"]["reason"] for r in records)
