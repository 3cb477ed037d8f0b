"""TLS: every certificate of a --ca-cert bundle is trusted, over REST and gRPC, and a file without
one is refused.
"""

from __future__ import annotations

import datetime
import ipaddress
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
from twisted.internet import ssl
from twisted.web.resource import Resource
from twisted.web.server import Site

from seldon_batch_tx.core.failures import RequestFailed
from seldon_batch_tx.protos import prediction_pb2_grpc
from seldon_batch_tx.transports.grpc_client import GUARD_SLACK, MODES, GrpcTransport
from seldon_batch_tx.transports.http import ca_bundle
from tests import transport_hostile_helpers
from tests.targets import target_of
from tests.transport_hostile_helpers import (
    REQUEST,
    SLACK,
    config,
    make,
    one_call,
    reactor,
)

client = transport_hostile_helpers.client  # a fixture shared with this topic's other files


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _cert(subject: str, key: Any, issuer: str, issuer_key: Any, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                      content_commitment=False, key_encipherment=False,
                                                      data_encipherment=False, key_agreement=False,
                                                      encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class Chain:
    """Two CAs; the server certificate is signed by the SECOND. Bundles: both CAs, or the first only."""

    def __init__(self, tmp_path: Path) -> None:
        first_key, second_key, self.server_key = _key(), _key(), _key()
        first = _cert("Unrelated CA", first_key, "Unrelated CA", first_key, ca=True)
        second = _cert("Signing CA", second_key, "Signing CA", second_key, ca=True)
        self.server_cert = _pem(_cert("localhost", self.server_key, "Signing CA", second_key, ca=False))
        self.key_pem = self.server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption())
        self.bundle = tmp_path / "bundle.pem"
        self.bundle.write_bytes(_pem(first) + b"\n" + _pem(second))
        self.first_only = tmp_path / "first.pem"
        self.first_only.write_bytes(_pem(first))


class Ok(Resource):
    isLeaf = True

    def render_POST(self, request: Any) -> bytes:  # noqa: N802 - twisted.web's name
        return b'{"data": {"ndarray": [[1]]}}'


@pytest_twisted.ensureDeferred
async def test_rest_ca_bundle_second_certificate(client: str, tmp_path: Path) -> None:
    """--ca-cert with a bundle whose second certificate signed the server's: trusted (both REST
    clients); a bundle without that CA is refused."""
    chain = Chain(tmp_path)
    options = ssl.PrivateCertificate.loadPEM(chain.server_cert + chain.key_pem).options()
    site = Site(Ok())
    site.noisy = False
    port = reactor.listenSSL(0, site, options, interface="127.0.0.1")
    host = f"127.0.0.1:{port.getHost().port}"
    try:
        for ca, works in ((chain.bundle, True), (chain.first_only, False)):
            transport = make(client, config(host, "x", use_ssl=True, ca_cert=str(ca), timeout=5.0))
            result, _ = await one_call(transport, REQUEST, 8.0)
            if works:
                assert result == {"data": {"ndarray": [[1]]}}
            else:
                assert isinstance(result, RequestFailed) and result.kind == "connection"
    finally:
        await port.stopListening()


class Echo(prediction_pb2_grpc.SeldonServicer):  # type: ignore[misc]
    def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC's name
        return request


@pytest.mark.parametrize("mode", MODES)
@pytest_twisted.ensureDeferred
async def test_grpc_ca_bundle_second_certificate(tmp_path: Path, mode: str) -> None:
    """gRPC trusts every certificate of the --ca-cert bundle too."""
    chain = Chain(tmp_path)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    prediction_pb2_grpc.add_SeldonServicer_to_server(Echo(), server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(chain.key_pem, chain.server_cert)]))
    server.start()
    try:
        for ca, works in ((chain.bundle, True), (chain.first_only, False)):
            cfg = config(f"127.0.0.1:{port}", "x", transport="grpc", gateway_type="seldon", use_ssl=True,
                         ca_cert=str(ca), timeout=3.0)
            transport = GrpcTransport(cfg, reactor, mode=mode, target=target_of(cfg))
            result, _ = await one_call(transport, {"strData": "tls"}, 3.0 + SLACK + GUARD_SLACK)
            if works:
                assert result == {"strData": "tls"}
            else:
                assert isinstance(result, RequestFailed) and result.kind == "grpc_UNAVAILABLE"
    finally:
        server.stop(grace=None)


def test_ca_bundle_reads_every_certificate_and_refuses_garbage(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    assert len(ca_bundle(str(chain.bundle))) == 2
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a certificate\n")
    with pytest.raises(ValueError, match="--ca-cert"):
        ca_bundle(str(garbage))
