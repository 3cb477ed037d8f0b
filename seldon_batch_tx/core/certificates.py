"""Certificate loading: the ``--ca-cert`` bundle, read the same way by the option check and the transports."""

from __future__ import annotations


def ca_certificates(path: str) -> list[bytes]:
    """The PEM of every certificate in the ``--ca-cert`` bundle at ``path`` (all of them are trusted).

    ValueError, naming the option, when the file holds no certificate.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    with open(path, "rb") as f:
        pem = f.read()
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as e:
        raise ValueError(f"--ca-cert {path}: not a PEM certificate bundle ({e})") from None
    return [c.public_bytes(Encoding.PEM) for c in certificates]
