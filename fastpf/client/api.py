"""Minimal Kubernetes REST client: one connection per API server, HTTP/2 (h2) when the server
picks it via ALPN, HTTP/1.1 (h11) otherwise; JSON bodies; Status errors turned into kubectl's
one-line messages. Requests are few (a pod or two, one list), so they run one at a time.

`dialer()` builds the `ApiDialer` the engine uses for the upgrade connection (no ALPN there).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import sys
import uuid
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h11

from fastpf import __version__
from fastpf.client.auth import Authenticator
from fastpf.client.kubeconfig import ClientConfig
from fastpf.client.proxy import open_tunnel, proxy_for
from fastpf.client.tlsconfig import ContextCache
from fastpf.errors import ApiError, ClientError
from fastpf.types import ApiDialer

DEFAULT_REQUEST_TIMEOUT = 60.0
MAX_BODY = 64 << 20
USER_AGENT = f"fastpf/v{__version__} ({sys.platform}) fastpf"
SESSION_ID = str(uuid.uuid4())

_CONNECT_FAIL = "Unable to connect to the server: "

# client-go's NewGenericServerResponse texts for bodies that are not a Status.
_GENERIC = {
    400: ("BadRequest", "the server rejected our request for an unknown reason"),
    401: ("Unauthorized", "the server has asked for the client to provide credentials"),
    403: ("Forbidden", "the server does not allow access to the requested resource"),
    404: ("NotFound", "the server could not find the requested resource"),
    405: ("MethodNotAllowed", "the server does not allow this method on the requested resource"),
    409: ("Conflict", "the server reported a conflict"),
    422: ("Invalid", "the server rejected our request due to an error in our request"),
    429: (
        "TooManyRequests",
        "the server has received too many requests and has asked us to try again later",
    ),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    504: (
        "Timeout",
        "the server was unable to return a response in the time allotted, but may "
        "still be processing the request",
    ),
}


def status_error(status: int, body: bytes, what: str = "") -> ApiError:
    """kubectl's StandardErrorMessage for an error response. `what` e.g. "get pods x"."""
    message = ""
    reason = ""
    try:
        obj = json.loads(body)
        if isinstance(obj, dict) and obj.get("kind") == "Status":
            message = str(obj.get("message") or "")
            reason = str(obj.get("reason") or "")
    except ValueError:
        obj = None
    if not message:
        generic = _GENERIC.get(status)
        if generic is not None:
            reason = reason or generic[0]
            message = generic[1]
        elif status >= 500:
            reason = reason or "InternalError"
            text = body.decode("utf-8", "replace").strip()
            message = f'an error on the server ("{text}") has prevented the request from succeeding'
        else:
            message = (
                f"the server responded with the status code {status} but did not return "
                "more information"
            )
        if what:
            message = f"{message} ({what})"
    if reason == "Unauthorized":
        return ApiError(
            f"You must be logged in to the server ({message})", status=status, reason=reason
        )
    if reason:
        return ApiError(
            message, status=status, reason=reason, prefix=f"Error from server ({reason}): "
        )
    return ApiError(message, status=status, prefix="Error from server: ")


def connect_error(exc: BaseException, host: str, port: int) -> ClientError:
    """kubectl's text for a failed dial / TLS handshake."""
    hostport = f"{host}:{port}"
    if isinstance(exc, ClientError):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", 0)
        if code in (2, 7, 18, 19, 20, 21):  # no trusted issuer, or a same-named impostor
            detail = "x509: certificate signed by unknown authority"
        elif code in (62, 64):
            # The name that failed is the TLS server name (--tls-server-name), not
            # necessarily the host dialled; OpenSSL's message carries it.
            detail = f"x509: certificate is not valid for {_checked_name(exc, host)}"
        elif code == 10:
            detail = "x509: certificate has expired or is not yet valid"
        else:
            detail = f"x509: {getattr(exc, 'verify_message', '') or 'certificate verify failed'}"
        return ClientError(f"tls: failed to verify certificate: {detail}", prefix=_CONNECT_FAIL)
    if isinstance(exc, ssl.SSLError):
        return ClientError(
            f"remote error: tls: {exc.reason or 'handshake failure'}".lower(), prefix=_CONNECT_FAIL
        )
    if isinstance(exc, ConnectionRefusedError):
        return ClientError(
            f"The connection to the server {hostport} was refused - did you specify the right "
            "host or port?",
            prefix="",
        )
    if isinstance(exc, socket.gaierror):
        return ClientError(f"dial tcp: lookup {host}: no such host", prefix=_CONNECT_FAIL)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):  # distinct types on 3.10
        return ClientError(f"dial tcp {hostport}: i/o timeout", prefix=_CONNECT_FAIL)
    if isinstance(exc, OSError):
        text = (exc.strerror or str(exc) or type(exc).__name__).lower()
        return ClientError(f"dial tcp {hostport}: {text}", prefix=_CONNECT_FAIL)
    return ClientError(str(exc) or type(exc).__name__, prefix=_CONNECT_FAIL)


def _checked_name(exc: ssl.SSLCertVerificationError, default: str) -> str:
    message = str(getattr(exc, "verify_message", "") or "")
    start, end = message.find("'"), message.rfind("'")
    return message[start + 1 : end] if 0 <= start < end else default


class _Conn:
    """One open connection: HTTP/1.1 (h11) or HTTP/2 (h2)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        http2: bool,
        authority: str,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.http2 = http2
        self.authority = authority
        self.broken = False
        if http2:
            self.h2 = h2.connection.H2Connection(
                h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
            )
            self.h2.initiate_connection()
            writer.write(self.h2.data_to_send())
        else:
            self.h11 = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        self.broken = True
        with contextlib.suppress(Exception):  # closing a dead transport must not raise
            self.writer.close()

    async def request(
        self, method: str, target: str, headers: list[tuple[str, str]]
    ) -> tuple[int, bytes]:
        if self.http2:
            return await self._request_h2(method, target, headers)
        return await self._request_h11(method, target, headers)

    async def _request_h11(
        self, method: str, target: str, headers: list[tuple[str, str]]
    ) -> tuple[int, bytes]:
        conn = self.h11
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        hdrs = [("Host", self.authority), *headers]
        self.writer.write(conn.send(h11.Request(method=method, target=target, headers=hdrs)))
        self.writer.write(conn.send(h11.EndOfMessage()))
        await self.writer.drain()
        status = 0
        body = bytearray()
        for _ in range(1 << 20):  # bounded: every turn consumes input or ends
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await self.reader.read(65536)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise ClientError("response body too large", prefix=_CONNECT_FAIL)
            elif isinstance(event, h11.EndOfMessage):
                if conn.their_state is not h11.DONE or conn.our_state is not h11.DONE:
                    self.broken = True
                return status, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("connection closed by server")
        raise ClientError("response never ended", prefix=_CONNECT_FAIL)

    async def _request_h2(
        self, method: str, target: str, headers: list[tuple[str, str]]
    ) -> tuple[int, bytes]:
        conn = self.h2
        sid = conn.get_next_available_stream_id()
        hdrs = [
            (":method", method),
            (":path", target),
            (":scheme", "https"),
            (":authority", self.authority),
        ]
        hdrs += [(k.lower(), v) for k, v in headers]
        conn.send_headers(sid, hdrs, end_stream=True)
        self.writer.write(conn.data_to_send())
        await self.writer.drain()
        status = 0
        body = bytearray()
        for _ in range(1 << 20):
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionResetError("connection closed by server")
            done = False
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    for k, v in ev.headers:
                        if k in (":status", b":status"):
                            status = int(v)
                elif isinstance(ev, h2.events.DataReceived):
                    if ev.stream_id == sid:
                        body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    if len(body) > MAX_BODY:
                        raise ClientError("response body too large", prefix=_CONNECT_FAIL)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    done = True
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    raise ConnectionResetError(f"stream reset by server (code {ev.error_code})")
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    self.broken = True
                    if not done:
                        raise ConnectionResetError("server sent GOAWAY")
            out = conn.data_to_send()
            if out:
                self.writer.write(out)
            if done:
                return status, bytes(body)
        raise ClientError("response never ended", prefix=_CONNECT_FAIL)


class ApiClient:
    def __init__(self, cfg: ClientConfig, *, request_timeout: float = 0.0, log: Any = None) -> None:
        self.cfg = cfg
        parts = urlsplit(cfg.server if "://" in cfg.server else "https://" + cfg.server)
        self.scheme = (parts.scheme or "https").lower()
        if self.scheme not in ("http", "https"):
            raise ClientError(f'unsupported server URL scheme "{self.scheme}"')
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        self.secure = self.scheme == "https"
        self.auth = Authenticator(cfg, secure=self.secure)
        self.timeout = request_timeout if request_timeout > 0 else DEFAULT_REQUEST_TIMEOUT
        self.log = log
        self._conn: _Conn | None = None
        self._lock = asyncio.Lock()
        self.proxy = proxy_for(self.scheme, self.host, self.port, cfg.proxy_url)
        self.contexts = ContextCache(cfg)
        # The upgrade dialer is rebuilt only when its credentials or TLS context change.
        self._dialer: ApiDialer | None = None
        self._dialer_authz: str | None = None
        # Impersonation travels like credentials: over TLS only, as client-go does.
        self._impersonation = cfg.impersonation_headers() if self.secure else []
        self._upgrade_headers = [
            ("User-Agent", USER_AGENT),
            ("Kubectl-Command", "kubectl port-forward"),
            ("Kubectl-Session", SESSION_ID),
            *self._impersonation,
        ]

    @property
    def hostport(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def _ssl(self, alpn: list[str] | None, resumable: bool = False) -> ssl.SSLContext | None:
        if not self.secure:
            return None
        return self.contexts.get(alpn, await self.auth.client_cert(), resumable)

    async def _open_socket(self) -> socket.socket:
        assert self.proxy is not None
        return await open_tunnel(self.proxy, self.host, self.port)

    async def _connect(self) -> _Conn:
        ctx = await self._ssl(["h2", "http/1.1"])
        server_hostname = (self.cfg.tls_server_name or self.host) if ctx else None
        try:
            if self.proxy:
                sock = await self._open_socket()
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(sock=sock, ssl=ctx, server_hostname=server_hostname),
                    self.timeout,
                )
            else:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        self.host, self.port, ssl=ctx, server_hostname=server_hostname
                    ),
                    self.timeout,
                )
        except (OSError, asyncio.TimeoutError) as exc:
            raise connect_error(exc, self.host, self.port) from None
        http2 = False
        sslobj = writer.get_extra_info("ssl_object")
        if sslobj is not None and sslobj.selected_alpn_protocol() == "h2":
            http2 = True
        if self.log is not None:
            self.log(6, f"connected to {self.hostport} ({'HTTP/2' if http2 else 'HTTP/1.1'})")
        return _Conn(reader, writer, http2, self.hostport)

    async def _headers(self) -> list[tuple[str, str]]:
        headers = [
            ("Accept", "application/json, */*"),
            ("User-Agent", USER_AGENT),
            ("Kubectl-Command", "kubectl port-forward"),
            ("Kubectl-Session", SESSION_ID),
            *self._impersonation,
        ]
        authz = await self.auth.authorization()
        if authz:
            headers.append(("Authorization", authz))
        return headers

    async def request(
        self, method: str, path: str, query: dict[str, str] | None = None, what: str = ""
    ) -> Any:
        """Send a request and return the decoded JSON body; errors raise ApiError/ClientError."""
        target = self.base_path + path
        if query:
            target += "?" + urlencode(query)
        async with self._lock:
            for attempt in range(3):  # reconnect once on a stale keep-alive; 401 retry once
                reused = self._conn is not None and not self._conn.broken
                if not reused:
                    self._conn = await self._connect()
                conn = self._conn
                assert conn is not None
                try:
                    headers = await self._headers()
                    status, body = await asyncio.wait_for(
                        conn.request(method, target, headers), self.timeout
                    )
                except asyncio.TimeoutError:
                    conn.close()
                    raise ClientError(
                        "net/http: request canceled (Client.Timeout exceeded while awaiting "
                        "headers)",
                        prefix=_CONNECT_FAIL,
                    ) from None
                except (OSError, h11.ProtocolError, h2.exceptions.ProtocolError) as exc:
                    conn.close()
                    if reused and attempt == 0:
                        continue
                    raise connect_error(exc, self.host, self.port) from None
                if self.log is not None:
                    self.log(6, f"{method} {self.scheme}://{self.hostport}{target} {status}")
                if status == 401 and attempt < 2 and self.auth.unauthorized():
                    conn.close()  # exec client certs may change: new TLS session
                    self._conn = None
                    continue
                if status >= 400:
                    raise status_error(status, body, what)
                try:
                    return json.loads(body) if body else {}
                except ValueError:
                    raise ClientError(
                        "invalid JSON in the server's response", prefix="error: "
                    ) from None
        raise ClientError("request failed", prefix=_CONNECT_FAIL)

    async def get(self, path: str, query: dict[str, str] | None = None, what: str = "") -> Any:
        return await self.request("GET", path, query, what)

    async def dialer(self) -> ApiDialer:
        """Connection parameters for the engine's upgrade (HTTP/1.1, no ALPN). Called per
        upgrade connection: the same ApiDialer (and SSLContext) comes back while the
        credentials are unchanged; callers must not modify it."""
        authz = await self.auth.authorization()
        # Upgrade connections resume the TLS session of the previous one (ws-channel dials
        # once per local connection); see tlsconfig.ResumingContext.
        ctx = await self._ssl(None, resumable=True)
        cached = self._dialer
        if cached is not None and cached.ssl is ctx and self._dialer_authz == authz:
            return cached
        headers = list(self._upgrade_headers)
        if authz:
            headers.append(("Authorization", authz))
        self._dialer_authz = authz
        self._dialer = ApiDialer(
            host=self.host,
            port=self.port,
            ssl=ctx,
            server_hostname=(self.cfg.tls_server_name or self.host) if ctx else None,
            headers=headers,
            open_socket=self._open_socket if self.proxy else None,
            base_path=self.base_path,
        )
        return self._dialer

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def pod_path(namespace: str, name: str = "", sub: str = "") -> str:
    path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods"
    if name:
        path += "/" + quote(name, safe="")
    if sub:
        path += "/" + sub
    return path
