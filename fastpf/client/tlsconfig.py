"""SSLContext for the API server from kubeconfig TLS settings.

Key material given as data (kubeconfig `*-data`, exec plugin output) is written to a private
(0700 dir, 0600 file) temporary file only for the duration of `load_cert_chain` — the ssl module
cannot load keys from memory — and removed at once. Keys and tokens are never printed.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import time
from collections.abc import Hashable

from fastpf.client.kubeconfig import ClientConfig
from fastpf.errors import ConfigError
from fastpf.tls_suites import direct_io

SESSION_REFRESH = 60.0  # seconds between taking a fresh TLS session to resume
_SESSION_MISSES = 3  # connections without a resumable session before we stop asking


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
            raise ConfigError(
                f"tls: failed to load client certificate/key: {exc.__class__.__name__}"
            ) from None


class ResumingContext(ssl.SSLContext):
    """A client context that offers the TLS session of its last successful connection
    (`remember_session`) when the next one is wrapped (`wrap_bio`, which both uvloop and
    asyncio call, or `offered_session` for fastpf.transport.tls). A resumed TLS 1.3 handshake still does a fresh (EC)DHE, but
    skips the certificate chain and its verification: ws-channel opens one connection per
    local connection, and a full handshake is the biggest part of its cost.

    The session belongs to this context, and a context is built for one server name and one
    set of credentials (ContextCache rebuilds it when they change), so a session never
    crosses servers or client identities. The server decides whether to resume.

    Reading a session out of a connection costs about as much as a full handshake (CPython
    copies it through DER), so one is taken only when the server did not resume, or every
    SESSION_REFRESH seconds (fresh tickets, well within any ticket lifetime). A server that
    hands out no tickets is not asked again after a few tries."""

    _session: ssl.SSLSession | None = None
    _refresh_at = 0.0
    _misses = 0

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        if session is None and not server_side and self._session is not None:
            try:
                return super().wrap_bio(
                    incoming, outgoing, server_side, server_hostname, self._session
                )
            except (ValueError, ssl.SSLError):  # a session OpenSSL will not take: go without
                self._session = None
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)

    def remember_session(self, sslobj: ssl.SSLObject | ssl.SSLSocket | None) -> None:
        """After a successful connection: offer its session (if the server made it resumable)
        on later connections."""
        if sslobj is None or self._misses >= _SESSION_MISSES:
            return
        now = time.monotonic()
        if self._session is not None and sslobj.session_reused and now < self._refresh_at:
            return  # the session we offer still works
        try:
            session = sslobj.session
        except (ValueError, ssl.SSLError):  # CPython could not copy it (e.g. > 64 KiB)
            session = None
        if session is not None and session.has_ticket:
            self._session = session
            self._refresh_at = now + SESSION_REFRESH
            self._misses = 0
        else:
            self._session = None
            self._misses += 1

    @property
    def offered_session(self) -> ssl.SSLSession | None:  # wrap_socket users (transport.tls)
        return self._session

    def forget_session(self) -> None:
        self._session = None


def build_ssl_context(
    cfg: ClientConfig,
    *,
    alpn: list[str] | None,
    exec_cert: tuple[bytes, bytes] | None = None,
    resumable: bool = False,
) -> ssl.SSLContext:
    """A client SSLContext. `alpn=None` offers no ALPN (upgrade connections, as kubectl).
    `resumable`: a ResumingContext (TLS session resumption across connections)."""
    ctx = (ResumingContext if resumable else ssl.SSLContext)(ssl.PROTOCOL_TLS_CLIENT)
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
                raise ConfigError(
                    "unable to load root certificates: unable to parse bytes as PEM block"
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
    return direct_io(ctx)  # no Python frame per TLS record


def _file_stamp(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def material_stamp(cfg: ClientConfig, exec_cert: tuple[bytes, bytes] | None) -> Hashable | None:
    """What `build_ssl_context` would read, cheaply: the exec plugin's cert/key and the
    identity + size + mtime of every file it loads. None when a file cannot be stat'ed (the
    build then reports the error)."""
    paths: list[str] = []
    if not cfg.insecure and not cfg.ca_data and cfg.ca_file:
        paths.append(cfg.ca_file)
    if exec_cert is None:
        if not cfg.client_cert_data and cfg.client_cert_file:
            paths.append(cfg.client_cert_file)
        if not cfg.client_key_data and cfg.client_key_file:
            paths.append(cfg.client_key_file)
    try:
        files = tuple(_file_stamp(p) for p in paths)
    except OSError:
        return None
    return (exec_cert, files)


class ContextCache:
    """SSLContexts reused across connections while their inputs are unchanged.

    Building a context (parsing the CA, loading the client key) costs more CPU than the TLS
    handshake it serves, and every live connection would keep its own copy in memory. One
    context per ALPN list is kept and rebuilt when `material_stamp` changes: an exec plugin
    handing out a new client certificate (e.g. after a 401), or a certificate/CA file
    rewritten on disk; `resumable` contexts then start without a session to resume."""

    def __init__(self, cfg: ClientConfig) -> None:
        self.cfg = cfg
        self._entries: dict[tuple[str, ...], tuple[Hashable, ssl.SSLContext]] = {}
        self.builds = 0  # contexts built so far (tests)

    def get(
        self,
        alpn: list[str] | None,
        exec_cert: tuple[bytes, bytes] | None = None,
        resumable: bool = False,
    ) -> ssl.SSLContext:
        key = (*(alpn or ()), "resumable") if resumable else tuple(alpn or ())
        stamp = material_stamp(self.cfg, exec_cert)
        hit = self._entries.get(key)
        if hit is not None and stamp is not None and hit[0] == stamp:
            return hit[1]
        self._entries.pop(key, None)
        ctx = build_ssl_context(self.cfg, alpn=alpn, exec_cert=exec_cert, resumable=resumable)
        self.builds += 1
        if stamp is not None:
            self._entries[key] = (stamp, ctx)
        return ctx

    def forget_sessions(self) -> None:
        """The server refused our credentials: the next connections do a full handshake
        (presenting the client certificate again) instead of resuming."""
        for _stamp, ctx in self._entries.values():
            if isinstance(ctx, ResumingContext):
                ctx.forget_session()

    def clear(self) -> None:
        self._entries.clear()
