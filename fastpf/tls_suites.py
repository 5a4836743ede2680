"""Cipher choice of `fastpf serve` as a Go API server makes it.

A Go server (kube-apiserver) picks from its own order: AES-128-GCM first on CPUs with AES
instructions, then AES-256-GCM, then ChaCha20-Poly1305 (ChaCha20 first without them), for
TLS 1.3 and 1.2 alike. OpenSSL's defaults start with AES-256-GCM, which costs both ends more CPU
per GiB, so a benchmark against serve would misstate what a client costs against a cluster.

Python's ssl can order TLS 1.2 ciphers (set_ciphers) but has no call for TLS 1.3 suites; the
one OpenSSL function for that is called on the context's SSL_CTX by fastpf._tls. Where that is
not possible (another Python implementation, an OpenSSL without the symbol), the context
keeps OpenSSL's order and only the TLS 1.2 part applies.
"""

from __future__ import annotations

import ssl
import sys
from functools import lru_cache
from typing import Any

from fastpf import _tls

_AES_FIRST_13 = b"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
_CHACHA_FIRST_13 = b"TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384"
_AES_FIRST_12 = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
_CHACHA_FIRST_12 = (
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"
)


@lru_cache(maxsize=1)
def has_aes_hardware() -> bool:
    """AES instructions on this CPU (x86 `aes` flag, arm64 `aes` feature); True if unknown."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return "aes" in value.split()
    except OSError:
        pass
    return True


def set_tls13_suites(ctx: ssl.SSLContext, suites: bytes) -> bool:
    """SSL_CTX_set_ciphersuites on `ctx`; False where it cannot be done here."""
    try:
        _tls.load()  # binds to the libssl that owns the SSL_CTX (idempotent)
    except OSError:
        return False
    return _tls.set_tls13_suites(ctx, suites)


def prefer_like_go(ctx: ssl.SSLContext) -> None:
    """Server context: choose the cipher from our order, as a Go server does."""
    aes = has_aes_hardware()
    ctx.set_ciphers(_AES_FIRST_12 if aes else _CHACHA_FIRST_12)
    set_tls13_suites(ctx, _AES_FIRST_13 if aes else _CHACHA_FIRST_13)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE


class DirectSSLObject(ssl.SSLObject):
    """An SSLObject whose read/write/pending are the C methods themselves.

    The event loop's TLS transport calls read() once per TLS record (about 65,000 times per GiB)
    and pending() as often; ssl.SSLObject's versions are Python wrappers that only forward
    their arguments, which costs a Python frame each. Binding the underlying `_ssl` methods on
    the instance keeps the exact behaviour (same arguments, results and exceptions) without it.
    """

    @classmethod
    def _create(cls, *args: Any, **kwargs: Any) -> DirectSSLObject:
        self = super()._create(*args, **kwargs)  # type: ignore[misc]
        inner = getattr(self, "_sslobj", None)
        if inner is not None:
            self.read = inner.read
            self.write = inner.write
            self.pending = inner.pending
        return self  # type: ignore[no-any-return]


def direct_io(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """`ctx` with DirectSSLObject for its memory-BIO connections (asyncio / uvloop TLS)."""
    if sys.implementation.name == "cpython" and hasattr(ssl.SSLObject, "_create"):
        ctx.sslobject_class = DirectSSLObject
    return ctx
