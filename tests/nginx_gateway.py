"""A real nginx in front of the model servers on 127.0.0.1 (a gateway for the benchmarks and gateway
tests), and a self-signed certificate for loopback TLS.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from tests.loopback import (
    LOOPBACK,
    free_port,
    tcp_accepts,
)
from tests.processes import ManagedProcess, log_tail


class NginxGateway(ManagedProcess):
    """An ingress stand-in on 127.0.0.1: nginx routes istio/ambassador-style paths
    ``/seldon/{namespace}/{deployment}/api/v1.0/...`` to a model's ``/api/v1.0/...``."""

    name = "nginx gateway"
    startup_timeout = 10.0
    poll_interval = 0.05

    def __init__(self, upstream: str, namespace: str, deployment: str,
                 tls: tuple[Path, Path] | None = None) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="nginx-gw-"))
        ssl = f"ssl; ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]};" if tls else ";"
        conf = f"""
daemon off; worker_processes 1; pid {self.dir}/nginx.pid; error_log {self.dir}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off; client_body_temp_path {self.dir}; proxy_temp_path {self.dir};
  fastcgi_temp_path {self.dir}; uwsgi_temp_path {self.dir}; scgi_temp_path {self.dir};
  upstream model {{ server {upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{self.port} {ssl}
    location /seldon/{namespace}/{deployment}/ {{
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_pass http://model/;
    }}
  }}
}}
"""
        (self.dir / "nginx.conf").write_text(conf)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def where(self) -> str:
        return self.host

    def is_ready(self) -> bool:
        return tcp_accepts(LOOPBACK, self.port)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.dir / "error.log", lines)

    def start(self) -> NginxGateway:
        self.spawn(["nginx", "-c", str(self.dir / "nginx.conf"), "-p", str(self.dir)], stdout=subprocess.DEVNULL)
        self.wait_ready_or_stop()
        return self


def self_signed_cert(directory: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost (it is its own CA): (cert.pem, key.pem)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name),
                                                    x509.IPAddress(ipaddress.ip_address(LOOPBACK))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
