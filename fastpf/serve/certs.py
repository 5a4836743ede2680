"""TLS material generated at start-up: a self-signed CA and a server certificate it signs.

Clients trust the CA through `certificate-authority-data` in the written kubeconfig. Go (kubectl)
ignores the CN, so the server names go in subjectAltName: 127.0.0.1, ::1, localhost and the
listen host. With `--tls-dir` the CA is kept on disk, so a restarted serve is trusted by the
clients of the previous one (the server certificate is issued afresh at every start).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fastpf.errors import CertError
from fastpf.tls_suites import direct_io, prefer_like_go

ALPN = ["h2", "http/1.1"]


@dataclass(frozen=True)
class TlsMaterial:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class CertificateAuthority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _not_after(cert: x509.Certificate) -> datetime.datetime:
    """cryptography >= 42 has the aware form; 41 only the naive UTC one."""
    aware = getattr(cert, "not_valid_after_utc", None)
    return (
        aware if aware is not None else cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)
    )


def _validity(days: int) -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now - datetime.timedelta(minutes=5), now + datetime.timedelta(
        days=days
    )  # small clock skew


def new_ca(days: int = 365) -> CertificateAuthority:
    not_before, not_after = _validity(days)
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
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return CertificateAuthority(ca_cert, ca_key)


def issue(ca: CertificateAuthority, hosts: list[str], days: int = 365) -> TlsMaterial:
    """A server certificate signed by `ca`, valid for `hosts` (IP literals and DNS names)."""
    not_before, not_after = _validity(days)
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
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(min(not_after, _not_after(ca.cert)))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return TlsMaterial(
        ca_pem=ca.cert.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def generate(hosts: list[str], days: int = 365) -> TlsMaterial:
    """A fresh CA and a server certificate valid for `hosts` (IP literals and DNS names)."""
    return issue(new_ca(days), hosts, days)


def persistent_ca(directory: Path) -> CertificateAuthority:
    """The CA kept in `directory` (ca.crt, ca.key), made there on first use. A restarted serve
    with the same --tls-dir is trusted by the kubeconfig (and clients) of the previous one."""
    cert_path, key_path = directory / "ca.crt", directory / "ca.key"
    try:
        if cert_path.exists() or key_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if (
                not isinstance(key, ec.EllipticCurvePrivateKey)
                or key.public_key() != cert.public_key()
            ):
                raise CertError(f"{key_path} is not the EC key of {cert_path}")
            if _not_after(cert) <= datetime.datetime.now(datetime.timezone.utc):
                raise CertError(
                    f"{cert_path} has expired; remove {cert_path} and {key_path} to make a new CA"
                )
            return CertificateAuthority(cert, key)
        ca = new_ca()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_private(
            key_path,
            ca.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        _write_private(cert_path, ca.cert.public_bytes(serialization.Encoding.PEM))
        return ca
    except OSError as exc:
        raise CertError(f"--tls-dir {directory}: {exc.strerror or exc}") from None
    except ValueError as exc:
        if isinstance(exc, CertError):
            raise
        raise CertError(f"--tls-dir {directory}: cannot read the CA: {exc}") from None


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


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
    return direct_io(ctx)  # no Python frame per TLS record
