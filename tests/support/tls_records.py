"""What the TLS record tests (own sealing, own opening) share: pattern bytes and the two ends'
contexts, the server's with a chosen TLS 1.3 suite or capped at TLS 1.2."""

from __future__ import annotations

import hashlib
import ssl

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
