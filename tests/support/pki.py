"""Certificates for tests: `make_pki(cn)` (a CA, a server certificate for 127.0.0.1 /
localhost / api.test, a client certificate for `cn`, and a second CA that signed nothing),
`tls_contexts()` (a self-signed localhost pair of server and client contexts), `write(path,
data, mode)` (a file with its mode, for key files). Keys are EC P-256, made fresh each call.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import tempfile
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class Pki:
    ca_pem: bytes
    server_cert: bytes
    server_key: bytes
    client_cert: bytes
    client_key: bytes
    other_ca_pem: bytes  # a CA that signed nothing here (bad-CA tests)


def make_pki(cn: str = "alice") -> Pki:
    now = dt.datetime.now(dt.timezone.utc)

    def ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = _key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cert, key

    ca_cert, ca_key = ca()
    other, _ = ca()

    def leaf(common: str, server: bool) -> tuple[bytes, bytes]:
        key = _key()
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
        )
        if server:
            b = b.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.DNSName("localhost"),
                        x509.DNSName("api.test"),
                    ]
                ),
                critical=False,
            )
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        else:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        cert = b.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)

    scert, skey = leaf("localhost", True)
    ccert, ckey = leaf(cn, False)
    return Pki(
        ca_cert.public_bytes(serialization.Encoding.PEM),
        scert,
        skey,
        ccert,
        ckey,
        other.public_bytes(serialization.Encoding.PEM),
    )


def write(path: str, data: bytes | str, mode: int = 0o600) -> str:
    with open(path, "wb" if isinstance(data, bytes) else "w") as fh:
        fh.write(data)
    os.chmod(path, mode)
    return path


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed localhost certificate: (server context, client context trusting it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with (
        tempfile.NamedTemporaryFile("wb", suffix=".pem") as cf,
        tempfile.NamedTemporaryFile("wb", suffix=".pem") as kf,
    ):
        cf.write(cert_pem)
        kf.write(key_pem)
        cf.flush()
        kf.flush()
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(cf.name, kf.name)
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client
