"""TLS material generated at start-up: a self-signed CA and a server certificate it signs.

Clients trust the CA through `certificate-authority-data` in the written kubeconfig. Go (kubectl)
ignores the CN, so the server names go in subjectAltName: 127.0.0.1, ::1, localhost and the
listen host.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import ssl
import tempfile
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fastpf.tls_suites import prefer_like_go

ALPN = ["h2", "http/1.1"]


@dataclass(frozen=True)
class TlsMaterial:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def generate(hosts: list[str], days: int = 365) -> TlsMaterial:
    """A fresh CA and a server certificate valid for `hosts` (IP literals and DNS names)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before = now - datetime.timedelta(minutes=5)  # tolerate small clock skew
    not_after = now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fastpf-serve-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(["127.0.0.1", "::1", "localhost", *hosts]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fastpf-serve")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return TlsMaterial(
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
    )


def load_or_generate(directory: str, hosts: list[str]) -> TlsMaterial:
    """--cert-dir: reuse the CA, certificate and key kept in `directory` (ca.pem, cert.pem,
    key.pem), or generate them there (key 0600), so a restarted server keeps the identity its
    clients' kubeconfigs trust."""
    names = ("ca.pem", "cert.pem", "key.pem")
    paths = [os.path.join(directory, n) for n in names]
    if all(os.path.isfile(p) for p in paths):
        parts = []
        for p in paths:
            with open(p, "rb") as fh:
                parts.append(fh.read())
        return TlsMaterial(ca_pem=parts[0], cert_pem=parts[1], key_pem=parts[2])
    material = generate(hosts)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for p, data in zip(paths, (material.ca_pem, material.cert_pem, material.key_pem), strict=True):
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    return material


def server_context(material: TlsMaterial) -> ssl.SSLContext:
    """Server-side context offering ALPN h2 and http/1.1 (TLS 1.2+, as HTTP/2 requires)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # ssl can only load a key from a file: keep it for the blink of an eye in a private dir.
    directory = tempfile.mkdtemp(prefix="fastpf-tls-")
    try:
        path = os.path.join(directory, "server.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(material.key_pem + material.cert_pem)
        ctx.load_cert_chain(path)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    ctx.set_alpn_protocols(ALPN)
    # h2 forbids renegotiation and compression; OpenSSL defaults already avoid both.
    ctx.options |= ssl.OP_NO_COMPRESSION
    # Choose the cipher as a Go API server does (AES-128-GCM first on AES hardware), so
    # clients, fastpf's included, are measured as a cluster would see them.
    prefer_like_go(ctx)
    return ctx
