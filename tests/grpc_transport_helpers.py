"""What the gRPC transport tests share: configs, one call through a fresh transport, and a loopback gRPC
server on 127.0.0.1 that records what it receives and answers as a test tells it.
"""

from __future__ import annotations

import datetime
import ipaddress
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.defer import Deferred

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.protos import prediction_pb2, prediction_pb2_grpc
from seldon_batch_tx.transports.grpc_client import GrpcTransport
from tests.targets import target_of


def the_reactor() -> Any:
    """The reactor pytest-twisted installed (imported late so the plugin chooses it)."""
    from twisted.internet import reactor

    return reactor


def make_config(host: str, **changes: Any) -> BatchConfig:
    settings: dict[str, Any] = {
        "deployment_name": "mymodel",
        "input_data_path": "in.txt",
        "output_data_path": "out.txt",
        "gateway_type": "seldon",
        "namespace": "models",
        "host": host,
        "transport": "grpc",
        "workers": 4,
        "timeout": 10.0,
    }
    settings.update(changes)
    return BatchConfig(**settings)


async def send_once(config: BatchConfig, body: dict[str, Any], *, mode: str = "aio", **kw: Any) -> Any:
    """Start a transport, send one body, stop it (also when the send fails)."""
    transport = GrpcTransport(config, the_reactor(), mode=mode, **kw, target=target_of(config))
    transport.start()
    try:
        return await transport.send(body, "puid-1")
    finally:
        await transport.stop()


async def failure_of(d: Deferred[Any]) -> BaseException:
    """The exception a Deferred fails with (the test fails if it succeeds)."""
    try:
        result = await d
    except BaseException as exc:  # noqa: BLE001 - that is the point
        return exc
    raise AssertionError(f"expected a failure, got {result!r}")


class Recorder(prediction_pb2_grpc.SeldonServicer):
    """Echoes, records metadata and peers; ``strData`` commands make it stall, abort or fail."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []
        self.peers: set[str] = set()
        self.lock = threading.Lock()

    def _record(self, context: grpc.ServicerContext) -> None:
        with self.lock:
            self.metadata.append({k: str(v) for k, v in context.invocation_metadata()})
            self.peers.add(context.peer())

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - gRPC's name
        self._record(context)
        command = request.strData
        if command.startswith("stall:"):
            end = time.monotonic() + float(command.split(":")[1])
            while context.is_active() and time.monotonic() < end:
                time.sleep(0.02)
            return request
        if command.startswith("abort:"):
            context.abort(getattr(grpc.StatusCode, command.split(":")[1]), "told to fail")
        if command == "failure":
            return prediction_pb2.SeldonMessage(
                status=prediction_pb2.Status(
                    code=500, info="model exploded", reason="MICROSERVICE_INTERNAL_ERROR",
                    status=prediction_pb2.Status.FAILURE,
                )
            )
        return request

    def SendFeedback(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self._record(context)
        return prediction_pb2.SeldonMessage(strData="feedback received")


class LoopbackServer:
    """A grpc.server on 127.0.0.1 serving :class:`Recorder`, plain or with TLS."""

    def __init__(self, credentials: grpc.ServerCredentials | None = None, port: int = 0) -> None:
        self.recorder = Recorder()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        prediction_pb2_grpc.add_SeldonServicer_to_server(self.recorder, self.server)
        if credentials is None:
            self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        else:
            self.port = self.server.add_secure_port(f"127.0.0.1:{port}", credentials)
        self.server.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(grace=None)


async def deferLater(seconds: float) -> None:  # noqa: N802 - Twisted's spelling
    from twisted.internet import task

    await task.deferLater(the_reactor(), seconds, lambda: None)


def self_signed(tmp_path: Path, *, dns: list[str], ips: list[str]) -> tuple[bytes, bytes, Path]:
    """A self-signed EC certificate for the given names; (key PEM, cert PEM, cert file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0] if dns else ips[0])])
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    alt += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    path = tmp_path / "server.crt"
    path.write_bytes(cert_pem)
    return key_pem, cert_pem, path
