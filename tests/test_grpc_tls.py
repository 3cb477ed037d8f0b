"""GrpcTransport over TLS against a loopback server: a --ca-cert is trusted, an unknown certificate
refused, and without verification the presented certificate is trusted (or the server is down).
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from seldon_batch_tx.core.failures import RequestFailed
from seldon_batch_tx.transports.grpc_client import MODES, GrpcTransport
from tests.grpc_transport_helpers import LoopbackServer, failure_of, make_config, self_signed, send_once, the_reactor
from tests.loopback import free_port
from tests.targets import target_of


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
