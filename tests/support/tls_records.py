"""What the TLS record tests (own sealing, own opening) share: pattern bytes, the two ends'
contexts (the server's with a chosen TLS 1.3 suite or capped at TLS 1.2), an independent
HKDF-Expand-Label, and `RecordForge`, which seals records as the server would, so that a test
can send what no OpenSSL server writes (split handshake messages, padding, alerts)."""

from __future__ import annotations

import hashlib
import hmac
import ssl
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fastpf.serve import certs
from fastpf.tls_suites import set_tls13_suites


def pattern(n: int, seed: int) -> bytes:
    """n bytes that differ with `seed` and repeat every 64 KiB."""
    block = hashlib.sha256(seed.to_bytes(4, "big")).digest() * 2048  # 64 KiB
    return (block * (n // len(block) + 1))[:n]


def server_context(
    material: certs.TlsMaterial, suite: bytes | None = None, tls12: bool = False
) -> ssl.SSLContext:
    ctx = certs.server_context(material)
    if suite is not None:
        assert set_tls13_suites(ctx, suite)
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def client_context(material: certs.TlsMaterial) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=material.ca_pem.decode())


def expand_label(secret: bytes, label: bytes, size: int) -> bytes:
    """HKDF-Expand-Label (RFC 8446 7.1, RFC 5869) with Python's hmac: SHA-256 for a 32-byte
    secret, SHA-384 for a 48-byte one. The reference fastpf._tls's C code is checked against."""
    digest = hashlib.sha256 if len(secret) == 32 else hashlib.sha384
    full = b"tls13 " + label
    info = size.to_bytes(2, "big") + bytes([len(full)]) + full + b"\x00"
    out, block, i = b"", b"", 1
    while len(out) < size:
        block = hmac.new(secret, block + info + bytes([i]), digest).digest()
        out += block
        i += 1
    return out[:size]


def count_records(wire: bytes) -> int:
    """The records in `wire` (whole records, as a memory BIO hands them out)."""
    at = count = 0
    while at < len(wire):
        at += 5 + int.from_bytes(wire[at + 3 : at + 5], "big")
        count += 1
    assert at == len(wire), "not whole records"
    return count


def server_secret(keylog: Path) -> bytes:
    """SERVER_TRAFFIC_SECRET_0 of the one connection in an SSLKEYLOGFILE-format file."""
    lines = [line.split() for line in keylog.read_text().splitlines()]
    (secret,) = [bytes.fromhex(w[2]) for w in lines if w and w[0] == "SERVER_TRAFFIC_SECRET_0"]
    return secret


class RecordForge:
    """TLS 1.3 AES-GCM records under a server application traffic secret, from sequence number
    `seq` on (where the server's own records stopped): any content type, any padding."""

    def __init__(self, secret: bytes, seq: int) -> None:
        self.secret = secret
        self.seq = seq
        self._keys()

    def _keys(self) -> None:
        key_size = 16 if len(self.secret) == 32 else 32
        self.aead = AESGCM(expand_label(self.secret, b"key", key_size))
        self.iv = expand_label(self.secret, b"iv", 12)

    def update(self) -> None:
        """The next traffic secret (after a KeyUpdate record): the sequence starts at 0."""
        self.secret = expand_label(self.secret, b"traffic upd", len(self.secret))
        self.seq = 0
        self._keys()

    def record(self, content: bytes, kind: int = 23, padding: int = 0) -> bytes:
        inner = content + bytes([kind]) + bytes(padding)
        header = b"\x17\x03\x03" + (len(inner) + 16).to_bytes(2, "big")
        nonce = bytes(a ^ b for a, b in zip(self.iv, self.seq.to_bytes(12, "big"), strict=True))
        self.seq += 1
        return header + self.aead.encrypt(nonce, inner, header)

    def data(self, content: bytes, padding: int = 0) -> bytes:
        """`content` as application data records of at most 16 KiB each."""
        pieces = range(0, len(content), 16384)
        return b"".join(self.record(content[i : i + 16384], 23, padding) for i in pieces)
