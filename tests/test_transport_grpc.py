"""GrpcTransport against the real Seldon microservice and against loopback gRPC servers.

The real seldon-core 1.18.2 microservice (tests/servers.py) proves the wire format and every
data type; small in-test gRPC servers on 127.0.0.1 prove metadata, TLS, deadlines and the
mapping of gRPC status codes, which the real server cannot be made to produce on demand.
"""

from __future__ import annotations

import datetime
import ipaddress
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.defer import Deferred

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.core.failures import RequestFailed
from seldon_batch_tx.protos import prediction_pb2, prediction_pb2_grpc
from seldon_batch_tx.transports.grpc_client import MODES, GrpcTransport
from tests.servers import SeldonServer, free_port, tftensor_request
from tests.targets import grpc_transport, target_of

TAGS = {"batch_id": "b-1", "batch_instance_id": "i-1", "batch_index": 3}


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


# --- the real microservice --------------------------------------------------------------

REAL_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "ndarray-ints",
        {"data": {"names": ["a", "b"], "ndarray": [[1, 2], [3, 4]]}, "meta": {"tags": TAGS}},
        {"data": {"names": ["t:0", "t:1"], "ndarray": [[1, 2], [3, 4]]}, "meta": {"tags": TAGS}},
    ),
    (
        "ndarray-floats",
        {"data": {"ndarray": [[1.5, 2]]}, "meta": {"tags": TAGS}},
        {"data": {"names": ["t:0", "t:1"], "ndarray": [[1.5, 2.0]]}, "meta": {"tags": TAGS}},
    ),
    (
        "tensor",
        {"data": {"tensor": {"shape": [1, 3], "values": [1, 2, 3]}}, "meta": {"tags": TAGS}},
        {
            "data": {"names": ["t:0", "t:1", "t:2"], "tensor": {"shape": [1, 3], "values": [1.0, 2.0, 3.0]}},
            "meta": {"tags": TAGS},
        },
    ),
    ("strData", {"strData": "some text", "meta": {"tags": TAGS}}, {"strData": "some text", "meta": {"tags": TAGS}}),
    (
        "jsonData",
        {"jsonData": {"a": 1, "b": [2.5, None, True, "x"]}, "meta": {"tags": TAGS}},
        {"jsonData": {"a": 1, "b": [2.5, None, True, "x"]}, "meta": {"tags": TAGS}},
    ),
    ("binData", {"binData": "aGVsbG8=", "meta": {"tags": TAGS}}, {"binData": "aGVsbG8=", "meta": {"tags": TAGS}}),
    (
        "raw-custom-tags",
        {"data": {"names": ["a"], "ndarray": [[1]]}, "meta": {"tags": {**TAGS, "customer-id": 7, "score": 0.5}}},
        {"data": {"names": ["t:0"], "ndarray": [[1]]}, "meta": {"tags": {**TAGS, "customer-id": 7, "score": 0.5}}},
    ),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("case", "body", "expected"), REAL_CASES, ids=[c[0] for c in REAL_CASES])
@pytest_twisted.ensureDeferred
async def test_real_server_echoes_every_data_type(
    seldon_server: SeldonServer, mode: str, case: str, body: dict[str, Any], expected: dict[str, Any]
) -> None:
    """The real microservice answers each data type; ints in ndarray and tags come back as ints."""
    response = await send_once(make_config(seldon_server.grpc_host), body, mode=mode)
    assert response == expected
    assert type(response["meta"]["tags"]["batch_index"]) is int


@pytest.mark.parametrize("service", ["Seldon", "Model"])
@pytest_twisted.ensureDeferred
async def test_real_server_serves_both_services(seldon_server: SeldonServer, service: str) -> None:
    """The Python microservice answers on seldon.protos.Seldon and seldon.protos.Model alike."""
    body = {"data": {"ndarray": [[1, 2]]}, "meta": {"tags": TAGS}}
    response = await send_once(make_config(seldon_server.grpc_host), body, service=service)
    assert response["data"]["ndarray"] == [[1, 2]]


@pytest.mark.parametrize("mode", MODES)
@pytest_twisted.ensureDeferred
async def test_real_server_feedback(seldon_server: SeldonServer, mode: str) -> None:
    """method=feedback calls SendFeedback; EchoModel answers with the reward it received."""
    config = make_config(seldon_server.grpc_host, method="feedback")
    body = {
        "request": {"data": {"ndarray": [[1, 2]]}, "meta": {"tags": TAGS}},
        "response": {"data": {"ndarray": [[3]]}},
        "reward": 0.5,
        "truth": {"data": {"ndarray": [[3]]}},
    }
    response = await send_once(config, body, mode=mode)
    assert response == {"data": {"ndarray": [0.5]}, "meta": {}}


@pytest_twisted.ensureDeferred
async def test_real_server_model_error_is_grpc_unknown(seldon_server: SeldonServer) -> None:
    """A model exception (shape mismatch) arrives as gRPC UNKNOWN: code 2, not retryable."""
    body = {"data": {"tensor": {"shape": [2, 3], "values": [1, 2, 3]}}}
    exc = await failure_of(Deferred.fromCoroutine(send_once(make_config(seldon_server.grpc_host), body)))
    assert isinstance(exc, RequestFailed)
    assert (exc.kind, exc.code, exc.retryable, exc.info) == ("grpc_UNKNOWN", 2, False, "UNKNOWN")
    assert exc.reason.startswith("gRPC UNKNOWN: Exception calling application:")


@pytest_twisted.ensureDeferred
async def test_real_server_without_tensorflow_rejects_tftensor(seldon_server: SeldonServer) -> None:
    """Without TensorFlow the real server cannot read a tftensor: an UNKNOWN error, not a hang."""
    body = {"data": {"tftensor": {"dtype": "DT_DOUBLE", "tensorShape": {"dim": [{"size": "1"}]}, "doubleVal": [1]}}}
    exc = await failure_of(Deferred.fromCoroutine(send_once(make_config(seldon_server.grpc_host), body)))
    assert isinstance(exc, RequestFailed) and exc.kind == "grpc_UNKNOWN"


@pytest.fixture(scope="module")
def tftensor_server() -> Iterator[SeldonServer]:
    """The real microservice with the launcher's numpy stand-in for TensorFlow."""
    with SeldonServer("EchoModel", tftensor_shim=True) as server:
        yield server


@pytest.mark.parametrize("mode", MODES)
@pytest_twisted.ensureDeferred
async def test_real_server_tftensor(tftensor_server: SeldonServer, mode: str) -> None:
    """A tftensor request is read by the server; the answer keeps dtype and shape (packed content)."""
    body = tftensor_request(TAGS)
    response = await send_once(make_config(tftensor_server.grpc_host), body, mode=mode)
    tensor = response["data"]["tftensor"]
    assert tensor["dtype"] == "DT_DOUBLE"
    assert tensor["tensorShape"] == {"dim": [{"size": "1"}, {"size": "3"}]}
    # 1.0, 2.0, 3.0 as little-endian float64, as TensorFlow packs more than one value
    assert tensor["tensorContent"] == "AAAAAAAA8D8AAAAAAAAAQAAAAAAAAAhA"
    assert response["meta"]["tags"] == TAGS


@pytest.mark.parametrize("mode", MODES)
@pytest_twisted.ensureDeferred
async def test_concurrent_calls_share_one_transport(seldon_server: SeldonServer, mode: str) -> None:
    """Many calls in flight at once on one transport all get their own answer."""
    transport = grpc_transport(make_config(seldon_server.grpc_host, workers=8), the_reactor(), mode=mode)
    transport.start()
    try:
        ds = [
            transport.send({"data": {"ndarray": [[i]]}, "meta": {"tags": {"batch_index": i}}}, f"p{i}")
            for i in range(40)
        ]
        responses = [await d for d in ds]
    finally:
        await transport.stop()
    assert [r["data"]["ndarray"] for r in responses] == [[[i]] for i in range(40)]
    assert [r["meta"]["tags"]["batch_index"] for r in responses] == list(range(40))


# --- loopback servers we control ---------------------------------------------------------


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


@pytest.fixture
def loopback() -> Iterator[LoopbackServer]:
    server = LoopbackServer()
    yield server
    server.stop()


@pytest_twisted.ensureDeferred
async def test_gateway_metadata(loopback: LoopbackServer) -> None:
    """Through istio/ambassador each call carries seldon, namespace, seldon-puid and the token."""
    for gateway in ("istio", "ambassador"):
        config = make_config(loopback.host, gateway_type=gateway, call_credentials_token="s3cret")
        await send_once(config, {"strData": "hi"})
    for seen in loopback.recorder.metadata:
        assert seen["seldon"] == "mymodel"
        assert seen["namespace"] == "models"
        assert seen["seldon-puid"] == "puid-1"
        assert seen["x-auth-token"] == "s3cret"


@pytest_twisted.ensureDeferred
async def test_direct_metadata_has_only_puid(loopback: LoopbackServer) -> None:
    """With gateway seldon (the service itself) only seldon-puid is sent: no routing headers, no token."""
    await send_once(make_config(loopback.host, gateway_type="seldon"), {"strData": "hi"}, mode="threads")
    (seen,) = loopback.recorder.metadata
    assert seen["seldon-puid"] == "puid-1"
    assert "seldon" not in seen and "namespace" not in seen and "x-auth-token" not in seen


@pytest_twisted.ensureDeferred
async def test_feedback_metadata(loopback: LoopbackServer) -> None:
    """SendFeedback carries the same metadata as Predict."""
    config = make_config(loopback.host, gateway_type="istio", method="feedback")
    response = await send_once(config, {"request": {"strData": "x"}, "reward": 1.0})
    assert response == {"strData": "feedback received"}
    assert loopback.recorder.metadata[0]["seldon"] == "mymodel"


@pytest.mark.parametrize(("mode", "channels", "expected"), [(m, None, 16) for m in MODES] + [("aio", 3, 3)])
@pytest_twisted.ensureDeferred
async def test_calls_spread_over_the_channels(loopback: LoopbackServer, mode: str, channels: int | None,
                                              expected: int) -> None:
    """Calls go over ``--grpc-channels`` connections (default: twice the workers, at least 8), each
    its own: the server sees that many client peers (grpcio's global subchannel pool would merge them)."""
    config = make_config(loopback.host, workers=8, grpc_channels=channels, connection_max_age=None)
    transport = GrpcTransport(config, the_reactor(), mode=mode, target=target_of(config))
    transport.start()
    try:
        ds = [transport.send({"strData": f"n{i}"}, f"p{i}") for i in range(60)]
        for d in ds:
            await d
    finally:
        await transport.stop()
    assert len(loopback.recorder.peers) == expected


@pytest.mark.parametrize("mode", MODES)
@pytest_twisted.ensureDeferred
async def test_deadline_exceeded_without_blocking_the_reactor(loopback: LoopbackServer, mode: str) -> None:
    """A stalled server hits the deadline (config.timeout): DEADLINE_EXCEEDED, retryable;
    meanwhile the reactor keeps running."""
    reactor = the_reactor()
    ticks: list[float] = []
    start = time.monotonic()
    ticker = reactor.callLater(0.05, lambda: ticks.append(time.monotonic() - start))
    config = make_config(loopback.host, timeout=0.5)
    exc = await failure_of(Deferred.fromCoroutine(send_once(config, {"strData": "stall:5"}, mode=mode)))
    elapsed = time.monotonic() - start
    assert isinstance(exc, RequestFailed)
    assert (exc.kind, exc.code, exc.retryable, exc.info) == ("grpc_DEADLINE_EXCEEDED", 4, True, "DEADLINE_EXCEEDED")
    assert 0.4 < elapsed < 3
    assert ticks and ticks[0] < 0.4, "the reactor was blocked during the call"
    assert not ticker.active()


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        (grpc.StatusCode.UNAVAILABLE, True),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, True),
        (grpc.StatusCode.INVALID_ARGUMENT, False),
        (grpc.StatusCode.NOT_FOUND, False),
        (grpc.StatusCode.UNAUTHENTICATED, False),
        (grpc.StatusCode.INTERNAL, False),
    ],
)
@pytest_twisted.ensureDeferred
async def test_status_code_mapping(loopback: LoopbackServer, code: grpc.StatusCode, retryable: bool) -> None:
    """Each gRPC status becomes RequestFailed(kind grpc_<NAME>, numeric code, retryable as documented)."""
    body = {"strData": f"abort:{code.name}"}
    exc = await failure_of(Deferred.fromCoroutine(send_once(make_config(loopback.host), body)))
    assert isinstance(exc, RequestFailed)
    assert exc.kind == f"grpc_{code.name}"
    assert exc.code == code.value[0]
    assert exc.retryable is retryable
    assert exc.info == code.name
    assert exc.reason == f"gRPC {code.name}: told to fail"


@pytest_twisted.ensureDeferred
async def test_failure_status_is_model_failure(loopback: LoopbackServer) -> None:
    """A SeldonMessage with status FAILURE fails the request with its code, info and reason."""
    exc = await failure_of(Deferred.fromCoroutine(send_once(make_config(loopback.host), {"strData": "failure"})))
    assert isinstance(exc, RequestFailed)
    assert (exc.kind, exc.code, exc.retryable) == ("model_failure", 500, False)
    assert (exc.info, exc.reason) == ("model exploded", "MICROSERVICE_INTERNAL_ERROR")


@pytest.mark.parametrize("mode", MODES)
@pytest_twisted.ensureDeferred
async def test_server_down_is_retryable_unavailable(mode: str) -> None:
    """Nothing listening: UNAVAILABLE, retryable (the engine retries later)."""
    config = make_config(f"127.0.0.1:{free_port()}", timeout=5.0)
    exc = await failure_of(Deferred.fromCoroutine(send_once(config, {"strData": "x"}, mode=mode)))
    assert isinstance(exc, RequestFailed)
    assert (exc.kind, exc.code, exc.retryable) == ("grpc_UNAVAILABLE", 14, True)


@pytest_twisted.ensureDeferred
async def test_malformed_body_is_a_non_retryable_input_error(loopback: LoopbackServer) -> None:
    """A body gRPC cannot encode never reaches the server; it fails as that line's input error."""
    exc = await failure_of(Deferred.fromCoroutine(send_once(make_config(loopback.host), {"data": {"ndarry": [[1]]}})))
    assert isinstance(exc, RequestFailed) and "ndarry" in exc.reason
    assert (exc.kind, exc.retryable) == ("input_error", False)
    assert loopback.recorder.metadata == []


@pytest.mark.parametrize("mode", MODES)
@pytest_twisted.ensureDeferred
async def test_stop_cancels_calls_in_flight(loopback: LoopbackServer, mode: str) -> None:
    """stop() closes the channel: a call in flight fails (CANCELLED, not retried) and stop() fires."""
    transport = grpc_transport(make_config(loopback.host, timeout=10.0), the_reactor(), mode=mode)
    transport.start()
    d = transport.send({"strData": "stall:5"}, "p")
    while not loopback.recorder.metadata:  # wait until the call reached the server
        await deferLater(0.02)
    start = time.monotonic()
    await transport.stop()
    exc = await failure_of(d)
    assert time.monotonic() - start < 3
    assert isinstance(exc, RequestFailed) and exc.kind == "grpc_CANCELLED" and not exc.retryable


async def deferLater(seconds: float) -> None:  # noqa: N802 - Twisted's spelling
    from twisted.internet import task

    await task.deferLater(the_reactor(), seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_cancelling_the_deferred_cancels_the_call(loopback: LoopbackServer) -> None:
    """In futures mode, cancelling the Deferred cancels the gRPC call at once."""
    from twisted.internet.defer import CancelledError

    transport = grpc_transport(make_config(loopback.host), the_reactor())
    transport.start()
    try:
        d = transport.send({"strData": "stall:5"}, "p")
        while not loopback.recorder.metadata:
            await deferLater(0.02)
        d.cancel()
        exc = await failure_of(d)
        assert isinstance(exc, CancelledError)
        # the transport still works afterwards
        assert await transport.send({"strData": "again"}, "p") == {"strData": "again"}
    finally:
        await transport.stop()


# --- TLS ---------------------------------------------------------------------------------


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


def tls_server(key_pem: bytes, cert_pem: bytes) -> LoopbackServer:
    return LoopbackServer(grpc.ssl_server_credentials([(key_pem, cert_pem)]))


@pytest.mark.parametrize("mode", MODES)
@pytest_twisted.ensureDeferred
async def test_tls_with_ca_cert(tmp_path: Path, mode: str) -> None:
    """use_ssl with ca_cert: the server's self-signed certificate is verified; metadata arrives."""
    key_pem, cert_pem, cert_path = self_signed(tmp_path, dns=["localhost"], ips=["127.0.0.1"])
    server = tls_server(key_pem, cert_pem)
    try:
        config = make_config(
            server.host, use_ssl=True, ca_cert=str(cert_path), gateway_type="istio", call_credentials_token="tok"
        )
        assert await send_once(config, {"strData": "over tls"}, mode=mode) == {"strData": "over tls"}
        assert server.recorder.metadata[0]["x-auth-token"] == "tok"
    finally:
        server.stop()


@pytest_twisted.ensureDeferred
async def test_tls_verification_fails_without_trust(tmp_path: Path) -> None:
    """use_ssl with verification and no ca_cert: an untrusted certificate is refused (UNAVAILABLE)."""
    key_pem, cert_pem, _ = self_signed(tmp_path, dns=["localhost"], ips=["127.0.0.1"])
    server = tls_server(key_pem, cert_pem)
    try:
        config = make_config(server.host, use_ssl=True, timeout=5.0)
        exc = await failure_of(Deferred.fromCoroutine(send_once(config, {"strData": "x"})))
        assert isinstance(exc, RequestFailed) and exc.kind == "grpc_UNAVAILABLE"
        assert server.recorder.metadata == []
    finally:
        server.stop()


@pytest.mark.parametrize(("dns", "ips"), [(["seldon.example.test"], []), ([], ["127.0.0.1"])])
@pytest_twisted.ensureDeferred
async def test_tls_without_verification_trusts_the_presented_certificate(
    tmp_path: Path, dns: list[str], ips: list[str]
) -> None:
    """ssl_verify=False and no ca_cert: the certificate the server presents is trusted,
    even when it does not name the host we dialled."""
    key_pem, cert_pem, _ = self_signed(tmp_path, dns=dns, ips=ips)
    server = tls_server(key_pem, cert_pem)
    try:
        config = make_config(server.host, use_ssl=True, ssl_verify=False)
        transport = GrpcTransport(config, the_reactor(), target=target_of(config))
        transport.start()
        try:
            # sent while the certificate may still be being fetched: queued, not lost
            ds = [transport.send({"strData": f"n{i}"}, "p") for i in range(3)]
            assert [await d for d in ds] == [{"strData": f"n{i}"} for i in range(3)]
        finally:
            await transport.stop()
    finally:
        server.stop()


@pytest_twisted.ensureDeferred
async def test_tls_without_verification_server_down(tmp_path: Path) -> None:
    """If the certificate cannot be fetched, sends fail with a retryable connection error
    instead of hanging, and a later send tries again (here: once the server is up)."""
    port = free_port()
    config = make_config(f"127.0.0.1:{port}", use_ssl=True, ssl_verify=False, timeout=2.0)
    transport = GrpcTransport(config, the_reactor(), target=target_of(config))
    transport.start()
    server = None
    try:
        exc = await failure_of(transport.send({"strData": "x"}, "p"))
        assert isinstance(exc, RequestFailed)
        assert (exc.kind, exc.retryable) == ("connection", True)
        key_pem, cert_pem, _ = self_signed(tmp_path, dns=["localhost"], ips=[])
        server = LoopbackServer(grpc.ssl_server_credentials([(key_pem, cert_pem)]), port=port)
        assert await transport.send({"strData": "y"}, "p") == {"strData": "y"}
    finally:
        await transport.stop()
        if server is not None:
            server.stop()
