"""SSLContext for the API server from kubeconfig TLS settings.

Key material given as data (kubeconfig `*-data`, exec plugin output) is written to a private
(0700 dir, 0600 file) temporary file only for the duration of `load_cert_chain` — the ssl module
cannot load keys from memory — and removed at once. Keys and tokens are never printed.
"""

from __future__ import annotations

import os
import ssl
import tempfile

from fastpf.client.errors import ConfigError
from fastpf.client.kubeconfig import ClientConfig


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError(f"unable to read {what} {path!r}: {exc.strerror}") from None


def _load_chain(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="fastpf-") as tmp:
        os.chmod(tmp, 0o700)
        cpath = os.path.join(tmp, "client.crt")
        kpath = os.path.join(tmp, "client.key")
        for path, data in ((cpath, cert), (kpath, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        try:
            ctx.load_cert_chain(cpath, kpath)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"tls: failed to load client certificate/key: {exc.__class__.__name__}"
                              ) from None


def build_ssl_context(cfg: ClientConfig, *, alpn: list[str] | None,
                      exec_cert: tuple[bytes, bytes] | None = None) -> ssl.SSLContext:
    """A client SSLContext. `alpn=None` offers no ALPN (upgrade connections, as kubectl)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cfg.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.check_hostname = True
        cadata = b""
        if cfg.ca_data:
            cadata = cfg.ca_data
        elif cfg.ca_file:
            cadata = _read(cfg.ca_file, "certificate-authority")
        if cadata:
            try:
                ctx.load_verify_locations(cadata=cadata.decode("ascii", "replace"))
            except ssl.SSLError:
                raise ConfigError("unable to load root certificates: unable to parse bytes as PEM block"
                                  ) from None
        else:
            ctx.load_default_certs()
    cert: bytes | None = None
    key: bytes | None = None
    if exec_cert is not None:
        cert, key = exec_cert
    else:
        if cfg.client_cert_data:
            cert = cfg.client_cert_data
        elif cfg.client_cert_file:
            cert = _read(cfg.client_cert_file, "client-certificate")
        if cfg.client_key_data:
            key = cfg.client_key_data
        elif cfg.client_key_file:
            key = _read(cfg.client_key_file, "client-key")
    if cert and key:
        _load_chain(ctx, cert, key)
    elif cert or key:
        raise ConfigError("tls: client certificate and key must both be given")
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx
