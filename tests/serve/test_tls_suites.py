"""`fastpf serve` chooses its TLS cipher as a Go API server does (AES-128-GCM first on AES
hardware), whatever the client prefers: Python/OpenSSL clients offer AES-256-GCM first."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest

from fastpf.serve import certs
from fastpf.tls_suites import has_aes_hardware, prefer_like_go


def _negotiate(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[str, str]:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: list[tuple[str, str, int] | None] = []

    def accept() -> None:
        conn, _ = listener.accept()
        with server.wrap_socket(conn, server_side=True) as tls:
            seen.append(tls.cipher())
            tls.recv(1)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        client.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        cipher = tls.cipher()
        tls.sendall(b"x")
    thread.join(10)
    listener.close()
    assert cipher is not None and seen and seen[0] is not None
    assert seen[0][0] == cipher[0]
    return cipher[0], cipher[1]


def _client(maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if maximum is not None:
        ctx.maximum_version = maximum
    return ctx


@pytest.mark.parametrize("maximum", [None, ssl.TLSVersion.TLSv1_2], ids=["tls1.3", "tls1.2"])
def test_serve_context_picks_like_go(maximum: ssl.TLSVersion | None) -> None:
    server = certs.server_context(certs.generate(["127.0.0.1"]))
    name, version = _negotiate(server, _client(maximum))
    if has_aes_hardware():
        assert "AES128-GCM" in name or name == "TLS_AES_128_GCM_SHA256", (name, version)
    else:
        assert "CHACHA20" in name, (name, version)
    assert version == ("TLSv1.2" if maximum else "TLSv1.3")


def test_plain_openssl_server_would_pick_aes256() -> None:
    """The reference the change is about: without it, OpenSSL's own order gives AES-256."""
    material = certs.generate(["127.0.0.1"])
    server = certs.server_context(material)
    server.set_ciphers("DEFAULT")
    from fastpf.tls_suites import set_tls13_suites

    assert set_tls13_suites(server, b"TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256")
    assert _negotiate(server, _client())[0] == "TLS_AES_256_GCM_SHA384"
    prefer_like_go(server)
    assert _negotiate(server, _client())[0] == (
        "TLS_AES_128_GCM_SHA256" if has_aes_hardware() else "TLS_CHACHA20_POLY1305_SHA256"
    )
