"""Client role: dial the API server, send the port-forward upgrade exactly as kubectl does
(PROTOCOL.md 3.1, 3.2, 6.1), check the 101 and hand back a live connection.

The request head is written and the answer parsed by h11; after the 101 the transport is
handed to a SpdyConnection / ChannelConnection with whatever bytes followed the head.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import ssl as _ssl
from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import quote, urljoin, urlsplit

import h11

from fastpf import goparity
from fastpf.errors import HandshakeError, UpgradeRedirect, UpgradeRefusedError
from fastpf.transport import handshake, tls
from fastpf.transport.channel import ChannelConnection
from fastpf.transport.spdy import DEFAULT_MAX_DATA, SpdyConnection
from fastpf.types import ApiDialer

PROTOCOLS = ("websocket", "spdy", "ws-channel")  # "auto" = websocket, then spdy on failure

Connection = SpdyConnection | ChannelConnection

MAX_ERROR_BODY = 64 << 10
MAX_ANSWER_HEAD = 16 << 10  # h11's default bound on an incomplete head
MAX_REDIRECTS = 10  # Go's http.Client stops after 10
_T = TypeVar("_T")


class _Handshake(asyncio.Protocol):
    """Reads the answer to the upgrade request with h11 (bounded head and body). Answers that
    are not HTTP, and connections that end before an answer, fail with kubectl's words
    (`fail` prefixes them: "error upgrading connection: ...")."""

    def __init__(self, conn: h11.Connection, fail: str) -> None:
        self.h11 = conn
        self.fail = fail
        self.transport: Any = None
        self.done: asyncio.Future[tuple[Any, bytes, bytes]] = (
            asyncio.get_running_loop().create_future()
        )
        self.head: Any = None
        self.body = bytearray()
        self.extra = bytearray()  # bytes after the 101 head
        self.start = bytearray()  # the answer until its head is parsed (for error texts)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            self.extra += data  # arrived after the 101, before the takeover
            return
        if self.head is None:
            self.start += data[: MAX_ANSWER_HEAD + 1 - len(self.start)]
            problem = handshake.status_line_error(bytes(self.start))
            if problem is not None:  # not an HTTP answer: say so now, not at the timeout
                self._error(problem)
                return
        self.h11.receive_data(data)
        self._pump()

    def eof_received(self) -> bool:
        if not self.done.done():
            self._ended()
        return self.transport.get_extra_info("ssl_object") is None  # TLS: True only warns

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self._ended()

    def _ended(self) -> None:
        if self.head is None:
            self._error("unexpected EOF")  # Go's text; the connection ended inside the head
            return
        self.done.set_result((self.head, bytes(self.body), b""))  # an error body, cut short

    def _error(self, text: str) -> None:
        if not self.done.done():
            self.done.set_exception(HandshakeError(self.fail + text, None))
        if self.transport is not None:
            self.transport.abort()

    def _pump(self) -> None:
        try:
            for _ in range(10000):
                event = self.h11.next_event()
                if event is h11.NEED_DATA:
                    return
                if isinstance(event, h11.InformationalResponse):
                    if event.status_code == 101:
                        self.transport.pause_reading()
                        trailing, _closed = self.h11.trailing_data
                        self.done.set_result((event, b"", bytes(trailing)))
                        return
                    continue  # 100 Continue and friends
                if isinstance(event, h11.Response):
                    self.head = event
                elif isinstance(event, h11.Data):
                    if len(self.body) < MAX_ERROR_BODY:
                        self.body += event.data[: MAX_ERROR_BODY - len(self.body)]
                elif (
                    isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed))
                    or event is h11.PAUSED
                ):
                    if self.head is not None:
                        self.done.set_result((self.head, bytes(self.body), b""))
                    else:
                        self._error("unexpected EOF")
                    return
        except h11.RemoteProtocolError as exc:
            if self.head is None:
                self._error(handshake.header_error(bytes(self.start), exc.error_status_hint == 431))
            else:  # a broken body of an error answer: what arrived is the answer
                self.done.set_result((self.head, bytes(self.body), b""))


def _host_header(dialer: ApiDialer) -> str:
    # Host names the URL's host, as kubectl sends it; server_hostname is for SNI only
    # (it differs under --tls-server-name).
    host = dialer.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    default = 443 if dialer.ssl is not None else 80
    return host if dialer.port == default else f"{host}:{dialer.port}"


_timeout = getattr(asyncio, "timeout", None)  # Python >= 3.11


async def _within(aw: Awaitable[_T], timeout: float) -> _T:
    """`await aw` with a timeout (TimeoutError). Python >= 3.11 runs it in the calling task
    (no extra Task and waiter per step, as wait_for costs); older versions use wait_for."""
    if _timeout is None:
        return await asyncio.wait_for(aw, timeout)
    async with _timeout(timeout):
        return await aw


async def _open(dialer: ApiDialer, proto: _Handshake, timeout: float) -> asyncio.BaseTransport:
    loop = asyncio.get_running_loop()
    # TLS over OpenSSL's socket BIO (fastpf.transport.tls) where it can run: the data path's
    # CPU per byte; else the loop's TLS.
    own_tls = dialer.ssl is not None and tls.available(dialer.ssl)
    ssl_kwargs: dict[str, Any] = {}
    if dialer.ssl is not None:
        ssl_kwargs = {"ssl": dialer.ssl, "server_hostname": dialer.server_hostname or dialer.host}
    if dialer.open_socket is not None:
        sock = await _within(dialer.open_socket(), timeout)
        with contextlib.suppress(OSError):  # asyncio skips it for sockets made with proto 0
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    elif own_tls:
        sock = await _within(tls.connect_tcp(dialer.host, dialer.port), timeout)
    else:
        # Connections made from host and port get TCP_NODELAY from the loop (uvloop and asyncio).
        transport, _ = await _within(
            loop.create_connection(lambda: proto, dialer.host, dialer.port, **ssl_kwargs), timeout
        )
        return transport
    if own_tls:
        hostname = ssl_kwargs["server_hostname"]
        return await _within(tls.open_tls(sock, ssl_kwargs["ssl"], hostname, proto), timeout)
    transport, _ = await _within(
        loop.create_connection(lambda: proto, sock=sock, **ssl_kwargs), timeout
    )
    return transport


def _full_path(dialer: ApiDialer, path: str, ports: list[int] | None) -> str:
    full = dialer.base_path.rstrip("/") + path if dialer.base_path else path
    if ports:
        sep = "&" if "?" in full else "?"
        full += sep + "ports=" + quote(",".join(str(p) for p in ports), safe=",")
    return full


def _url(dialer: ApiDialer, full_path: str) -> str:
    return f"{'https' if dialer.ssl is not None else 'http'}://{_host_header(dialer)}{full_path}"


def _fail_prefix(dialer: ApiDialer, protocol: str, full_path: str) -> str:
    """kubectl's words before an answer-level error: SPDY goes through Go's http.Client
    ("error sending request: Post URL: ..."), the WebSocket dialer does not."""
    if protocol == "spdy":
        return f"error upgrading connection: error sending request: Post {goparity.quote(_url(dialer, full_path).encode())}: "
    return "error upgrading connection: "


async def _upgrade_once(
    dialer: ApiDialer,
    path: str,
    protocol: str,
    ports: list[int],
    ping_interval: float | None,
    timeout: float,
    max_data: int,
    ping_timeout: float | None = None,
    method: str = "POST",
    resume: bool = True,
) -> Connection:
    host = _host_header(dialer)
    extra = [
        (k, v) for k, v in dialer.headers if k.lower() not in ("host", "connection", "upgrade")
    ]
    key = ""
    offered: list[str] = []
    full = _full_path(dialer, path, ports if protocol.startswith("ws-channel") else None)
    fail = _fail_prefix(dialer, protocol, full)
    if protocol == "spdy":
        conn, request = handshake.spdy_request(host, full, extra, method)
    elif protocol == "websocket":
        offered = [handshake.TUNNEL_PROTOCOL]
        conn, request, key = handshake.websocket_request(host, full, offered, extra)
    elif protocol in ("ws-channel", "ws-channel-base64"):
        offered = [
            handshake.CHANNEL_V4_BASE64 if protocol.endswith("base64") else handshake.CHANNEL_V4
        ]
        conn, request, key = handshake.websocket_request(host, full, offered, extra)
    else:
        raise ValueError(f"unknown protocol {protocol!r} (expected one of {PROTOCOLS} or 'auto')")
    proto = _Handshake(conn, fail)
    transport = await _open(dialer, proto, timeout)
    try:
        transport.write(request)  # type: ignore[attr-defined]
        try:
            head, body, trailing = await _within(proto.done, timeout)
        except (asyncio.TimeoutError, TimeoutError):
            # The dial succeeded: the server never answered (Go's ResponseHeaderTimeout text;
            # kubectl itself would wait forever).
            raise HandshakeError(
                fail + "net/http: timeout awaiting response headers", None
            ) from None
    except BaseException:
        transport.abort()  # type: ignore[attr-defined]
        raise
    if protocol == "spdy" and head.status_code in handshake.REDIRECTS:
        location = _location(head)
        if location is not None:  # client-go's SPDY upgrade is an http.Client request
            transport.close()
            raise UpgradeRedirect(head.status_code, location)
    if protocol == "spdy":
        check = handshake.check_spdy_response(head, body)
    else:
        check = handshake.check_websocket_response(head, key, offered, body)
    if not check.ok:
        transport.close()
        raise UpgradeRefusedError(check.message, check.status, check.fallback)
    # A context that resumes TLS sessions (fastpf.client.tlsconfig.ResumingContext) learns
    # this connection's session; its tickets came before the 101.
    remember = getattr(dialer.ssl, "remember_session", None) if resume else None
    if remember is not None:
        remember(transport.get_extra_info("ssl_object"))
    initial = trailing + bytes(proto.extra)
    session: Connection
    if protocol.startswith("ws-channel"):
        session = ChannelConnection(
            client=True, ports=ports, base64=protocol.endswith("base64"), max_data=max_data
        )
    else:
        session = SpdyConnection(
            client=True,
            tunnel="ws-client" if protocol == "websocket" else None,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            max_data=max_data,
        )
    session.attach(transport, initial)
    return session


async def connect(
    dialer: ApiDialer,
    path: str,
    protocol: str,
    ports: list[int],
    *,
    ping_interval: float | None = None,
    timeout: float = 30.0,
    max_data: int = DEFAULT_MAX_DATA,
    ping_timeout: float | None = None,
) -> Connection:
    """Open one upgraded port-forward connection.

    `path` is ".../pods/NAME/portforward" (or any raw path; `dialer.base_path` is prefixed).
    `protocol`: "spdy" (POST + Upgrade: SPDY/3.1), "websocket" (GET, SPDY tunnelled in WS
    `SPDY/3.1+portforward.k8s.io`), "ws-channel" (GET `v4.channel.k8s.io` with `?ports=`; uses
    `ports`; "ws-channel-base64" for v4.base64.channel.k8s.io), or "auto" (websocket, then
    spdy on any non-101 or wrong subprotocol, on a new connection, as kubectl 1.31+).
    `ping_interval` defaults to 5 s (spdy) / 10 s (websocket tunnel); 0 disables pings.
    `ping_timeout`: abort the session when a PING stays unanswered that long (None: never,
    as kubectl); the session's `closed` then resolves to a TimeoutError.
    `max_data`: largest DATA frame payload we send (kubectl sends 32 KiB).
    Returns a SpdyConnection (spdy/websocket) or a ChannelConnection (ws-channel; `await
    conn.ready()` for the port announcements). The `protocol` actually used is in
    `conn.negotiated` ("spdy", "websocket", "ws-channel").
    Raises HandshakeError (UpgradeRefusedError) with kubectl's text ("error upgrading
    connection: <Status.message>", "error upgrading connection: unable to upgrade connection:
    <body>", "unable to negotiate protocol: client supports \"portforward.k8s.io\", server
    returned \"\"") and OSError / TimeoutError for dial failures.
    """
    if protocol == "auto":
        try:
            session = await _upgrade_once(
                dialer, path, "websocket", ports, ping_interval, timeout, max_data, ping_timeout
            )
            session.negotiated = "websocket"  # type: ignore[union-attr]
            return session
        except UpgradeRefusedError as exc:
            if not exc.fallback:
                raise
        protocol = "spdy"
    if protocol != "spdy":
        session = await _upgrade_once(
            dialer, path, protocol, ports, ping_interval, timeout, max_data, ping_timeout
        )
    else:
        session = await _spdy_following_redirects(
            dialer, path, ping_interval, timeout, max_data, ping_timeout
        )
    session.negotiated = protocol  # type: ignore[union-attr]
    return session


def _location(head: Any) -> str | None:
    for name, value in head.headers:
        if name.lower() == b"location" and value:
            return str(value.decode("latin-1"))
    return None


async def _spdy_following_redirects(
    dialer: ApiDialer,
    path: str,
    ping_interval: float | None,
    timeout: float,
    max_data: int,
    ping_timeout: float | None,
) -> Connection:
    """The SPDY upgrade follows redirects as client-go's (an http.Client request): up to
    MAX_REDIRECTS hops, POST becomes GET on 301/302/303 and stays POST on 307/308, and the
    credentials are dropped when the redirect leaves the original scheme, host and port.
    (The WebSocket dialer does not follow: "auto" falls back to SPDY on a redirect.)"""
    origin = (dialer.ssl is not None, dialer.host, dialer.port)
    url = _url(dialer, _full_path(dialer, path, None))
    method = "POST"
    last = url
    for _ in range(MAX_REDIRECTS + 1):
        try:
            # A TLS session is remembered only from the server the kubeconfig names.
            resume = (dialer.ssl is not None, dialer.host, dialer.port) == origin
            return await _upgrade_once(
                dialer,
                path,
                "spdy",
                [],
                ping_interval,
                timeout,
                max_data,
                ping_timeout,
                method=method,
                resume=resume,
            )
        except UpgradeRedirect as hop:
            last = hop.location
            url = urljoin(url, hop.location)
            if hop.status in (301, 302, 303):
                method = "GET"
            dialer, path = _redirected(dialer, url)
    raise HandshakeError(
        f"error upgrading connection: error sending request: Post {goparity.quote(last.encode())}: "
        f"stopped after {MAX_REDIRECTS} redirects",
        None,
    )


def _redirected(dialer: ApiDialer, url: str) -> tuple[ApiDialer, str]:
    """The dialer and path for a redirect target."""
    parts = urlsplit(url)
    scheme = (parts.scheme or "").lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise HandshakeError(
            f"error upgrading connection: error sending request: Post {goparity.quote(url.encode())}: "
            f"unsupported protocol scheme {goparity.quote(scheme.encode())}",
            None,
        )
    port = parts.port or (443 if scheme == "https" else 80)
    same = (
        scheme == ("https" if dialer.ssl is not None else "http")
        and parts.hostname == dialer.host
        and port == dialer.port
    )
    if not same and dialer.open_socket is not None:
        raise HandshakeError(
            f"error upgrading connection: redirect to {url} through a proxy is not supported", None
        )
    ctx = dialer.ssl if scheme == "https" else None
    if scheme == "https" and ctx is None:
        ctx = _ssl.create_default_context()
    headers = dialer.headers
    if not same:  # Go's client drops credentials on a redirect to another host
        headers = [
            (k, v)
            for k, v in headers
            if k.lower() not in ("authorization", "cookie", "www-authenticate")
        ]
    new = dataclasses.replace(
        dialer,
        host=parts.hostname,
        port=port,
        ssl=ctx,
        headers=headers,
        base_path="",
        server_hostname=(dialer.server_hostname if same else parts.hostname) if ctx else None,
    )
    return new, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
