"""Both REST transports (treq's RestTransport and FastHttpTransport) against real loopback servers.

Every behavioural test runs once per transport, so the lean client is held to exactly what the
treq one promises: the same responses, the same error kinds, the same limits. Here: a twisted.web
site in the test's reactor and the real Seldon microservice; raw TCP servers that misbehave on
purpose are in test_transport_http_raw.py, the fast client's own pool in test_fast_client.py.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import time
from pathlib import Path

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import ssl
from twisted.internet.defer import Deferred, gatherResults

from seldon_batch_tx.config import BatchConfig
from seldon_batch_tx.pipeline.batch import Batch
from tests import http_transport_helpers
from tests.http_transport_helpers import (
    OK_BODY,
    REQUEST,
    WebServer,
    config_for,
    failure_of,
    make,
    reactor,
    start_web,
    wait_for,
)
from tests.loopback import free_port
from tests.servers import SeldonServer

client = http_transport_helpers.client  # a fixture shared with this topic's other files
web = http_transport_helpers.web  # a fixture shared with this topic's other files


@pytest_twisted.ensureDeferred
async def test_success_and_headers(client: str, web: WebServer) -> None:
    """A 2xx JSON answer comes back decoded; the server gets the body, puid, token and content type."""
    transport = make(client, config_for(web.port, "ok", call_credentials_token="s3cret"))
    transport.start()
    try:
        assert await transport.send(REQUEST, "puid-1") == OK_BODY
    finally:
        await transport.stop()
    [seen] = web.resource.seen
    assert seen["body"] == REQUEST
    assert seen["path"] == "/seldon/ns/ok/api/v1.0/predictions"
    assert seen["headers"]["seldon-puid"] == "puid-1"
    assert seen["headers"]["x-auth-token"] == "s3cret"
    assert seen["headers"]["content-type"] == "application/json"


@pytest_twisted.ensureDeferred
async def test_keep_alive_reuses_one_connection(client: str, web: WebServer) -> None:
    """Requests one after another share one connection, and stop() closes it."""
    transport = make(client, config_for(web.port, "ok"))
    transport.start()
    try:
        for i in range(20):
            assert await transport.send(REQUEST, f"p{i}") == OK_BODY
    finally:
        await transport.stop()
    assert web.stats["made"] == 1
    await wait_for(lambda: web.stats["open"] == 0, what="the server to see the connection closed")


@pytest_twisted.ensureDeferred
async def test_chunked_response(client: str, web: WebServer) -> None:
    """A chunked body (no Content-Length) is reassembled, and the connection is kept."""
    transport = make(client, config_for(web.port, "chunked"))
    transport.start()
    try:
        for _ in range(3):
            assert await transport.send(REQUEST, "p") == {"data": {"ndarray": [[2]]}, "meta": {}}
    finally:
        await transport.stop()
    assert web.stats["made"] == 1


@pytest.mark.parametrize(("status", "kind", "retryable", "retry_after"), [
    (429, "http_429", True, 7.0), (500, "http_500", True, None), (503, "http_503", True, None),
    (404, "http_404", False, None),
])
@pytest_twisted.ensureDeferred
async def test_error_statuses(client: str, web: WebServer, status: int, kind: str, retryable: bool,
                              retry_after: float | None) -> None:
    """HTTP errors become RequestFailed with the status, retryability and Retry-After; connections stay usable."""
    transport = make(client, config_for(web.port, f"status-{status}"))
    transport.start()
    try:
        for _ in range(2):
            error = await failure_of(transport.send(REQUEST, "p"))
            assert (error.kind, error.code, error.retryable, error.retry_after) == (kind, status, retryable,
                                                                                    retry_after)
            assert "busy" in error.reason
    finally:
        await transport.stop()
    assert web.stats["made"] == 1


@pytest_twisted.ensureDeferred
async def test_non_json_200(client: str, web: WebServer) -> None:
    """A 200 whose body is not JSON is a retryable bad_response quoting the body."""
    transport = make(client, config_for(web.port, "notjson"))
    transport.start()
    try:
        error = await failure_of(transport.send(REQUEST, "p"))
    finally:
        await transport.stop()
    assert (error.kind, error.code, error.retryable) == ("bad_response", 200, True)
    assert "<html>hello</html>" in error.reason


@pytest_twisted.ensureDeferred
async def test_server_down(client: str) -> None:
    """Nobody listening: a retryable ``connection`` failure that says it could not connect."""
    transport = make(client, config_for(free_port(), "ok"))
    transport.start()
    try:
        error = await failure_of(transport.send(REQUEST, "p"))
    finally:
        await transport.stop()
    assert (error.kind, error.code, error.retryable) == ("connection", None, True)
    assert "connect" in error.reason


def self_signed(tmp_path: Path) -> tuple[ssl.CertificateOptions, Path]:
    """A server certificate for 127.0.0.1/localhost, and its PEM to use as a custom CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    path = tmp_path / "ca.pem"
    path.write_bytes(cert_pem)
    return ssl.PrivateCertificate.loadPEM(cert_pem + key_pem).options(), path


@pytest_twisted.ensureDeferred
async def test_https_self_signed(client: str, tmp_path: Path) -> None:
    """https to a self-signed server works with ssl_verify off and with the cert as --ca-cert,
    and is refused with the system roots."""
    options, ca = self_signed(tmp_path)
    server = start_web(options)
    try:
        for changes, works in (({"ssl_verify": False}, True), ({"ca_cert": str(ca)}, True), ({}, False)):
            transport = make(client, config_for(server.port, "ok", use_ssl=True, **changes))
            transport.start()
            try:
                if works:
                    assert await transport.send(REQUEST, "p") == OK_BODY
                    assert await transport.send(REQUEST, "p") == OK_BODY
                else:
                    error = await failure_of(transport.send(REQUEST, "p"))
                    assert error.kind == "connection"
            finally:
                await transport.stop()
        assert server.resource.seen[0]["headers"]["seldon-puid"] == "p"
        assert server.stats["made"] == 3  # one per transport; keep-alive over TLS too
    finally:
        await server.listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_never_more_than_workers_through_the_engine(client: str, web: WebServer, tmp_path: Path) -> None:
    """A whole batch against a server that holds requests: at most ``workers`` connections and
    requests in flight, and every line answered."""
    lines = 40
    source = tmp_path / "in.txt"
    source.write_text("".join(f"[[{i}]]\n" for i in range(lines)))
    config = config_for(web.port, "hold", workers=5, input_data_path=str(source),
                        output_data_path=str(tmp_path / "out.txt"))
    batch = Batch(config, reactor, transport=make(client, config))
    done = Deferred.fromCoroutine(batch.run())
    released = 0
    deadline = time.monotonic() + 20
    while not done.called and time.monotonic() < deadline:
        await wait_for(lambda: len(web.resource.held) == 5 or done.called, what="5 held requests")
        released += web.resource.release_all()
    summary = await done
    assert summary.succeeded == lines
    assert released == lines
    assert web.resource.max_held == 5
    assert web.stats["max_open"] <= 5
    out = [json.loads(line) for line in (tmp_path / "out.txt").read_text().splitlines()]
    assert sorted(o["meta"]["tags"]["batch_index"] for o in out) == list(range(lines))


@pytest_twisted.ensureDeferred
async def test_against_the_real_seldon_microservice(client: str, seldon_server: SeldonServer) -> None:
    """The real Seldon model echoes the array and the tags through both transports."""
    config = BatchConfig(deployment_name="echo", input_data_path="-", output_data_path="-", gateway_type="seldon",
                         host=seldon_server.rest_host, workers=4, timeout=10.0)
    transport = make(client, config)
    transport.start()
    try:
        answers = await gatherResults([transport.send(REQUEST, f"p{i}") for i in range(8)])
    finally:
        await transport.stop()
    for answer in answers:
        assert answer["data"]["ndarray"] == [[1.5, 2]]
        assert answer["meta"]["tags"] == {"batch_index": 0}
