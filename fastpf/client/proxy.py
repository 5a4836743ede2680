"""Reaching the API server through a proxy: kubeconfig `proxy-url` (http, https, socks5/socks5h)
or the HTTPS_PROXY/HTTP_PROXY/NO_PROXY environment (ignored for loopback targets, as Go does).

`open_tunnel` returns a connected non-blocking plain socket to host:port; TLS to the API server
is layered on top by the caller. An https proxy adds its own TLS layer, which a plain socket
cannot carry, so then the tunnel is bridged through a socketpair by a small pump task.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import socket
import ssl
import struct
from urllib.parse import unquote, urlsplit

import h11

from fastpf.errors import ClientError
from fastpf.goparity import errno_text

_FAIL = "Unable to connect to the server: "
CONNECT_TIMEOUT = 30.0
_bridges: set[asyncio.Task[None]] = set()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _no_proxy_match(host: str, port: int, no_proxy: str) -> bool:
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        ehost, _, eport = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if eport and eport != str(port):
            continue
        if "/" in ehost:
            try:
                if ipaddress.ip_address(host) in ipaddress.ip_network(ehost, strict=False):
                    return True
            except ValueError:
                pass
            continue
        ehost = ehost.lstrip(".")
        if host == ehost or host.endswith("." + ehost):
            return True
    return False


def proxy_for(scheme: str, host: str, port: int, proxy_url: str | None) -> str | None:
    """The proxy URL to use for scheme://host:port, or None for a direct connection."""
    if proxy_url:
        return proxy_url
    if _is_loopback(host):
        return None
    env = os.environ
    names = ("HTTPS_PROXY", "https_proxy") if scheme == "https" else ("HTTP_PROXY", "http_proxy")
    url = next((env[n] for n in names if env.get(n)), None)
    if not url:
        return None
    no_proxy = env.get("NO_PROXY") or env.get("no_proxy") or ""
    if _no_proxy_match(host.lower(), port, no_proxy):
        return None
    return url if "://" in url else "http://" + url


async def _connect_tcp(host: str, port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last: OSError | None = None
    for family, type_, proto, _, addr in infos[:8]:
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, addr), CONNECT_TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except (OSError, asyncio.TimeoutError) as exc:
            sock.close()
            last = exc if isinstance(exc, OSError) else OSError("i/o timeout")
    raise last or OSError(f"no address for {host}")


async def _recv_exact(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    buf = b""
    for _ in range(n + 1):  # each recv returns >= 1 byte or EOF
        if len(buf) >= n:
            break
        chunk = await loop.sock_recv(sock, n - len(buf))
        if not chunk:
            raise ClientError("socks connect: unexpected EOF from proxy", prefix=_FAIL)
        buf += chunk
    return buf


async def _socks5(
    sock: socket.socket, host: str, port: int, user: str | None, password: str | None
) -> None:
    loop = asyncio.get_running_loop()
    methods = b"\x00\x02" if user is not None else b"\x00"
    await loop.sock_sendall(sock, b"\x05" + bytes([len(methods)]) + methods)
    ver, method = await _recv_exact(loop, sock, 2)
    if ver != 5 or method == 0xFF:
        raise ClientError("socks connect: no acceptable authentication methods", prefix=_FAIL)
    if method == 2:
        u = (user or "").encode()
        p = (password or "").encode()
        await loop.sock_sendall(sock, b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p)
        _, status = await _recv_exact(loop, sock, 2)
        if status != 0:
            raise ClientError(
                "socks connect: username/password authentication failed", prefix=_FAIL
            )
    try:
        ip = ipaddress.ip_address(host)
        addr = (b"\x01" if ip.version == 4 else b"\x04") + ip.packed
    except ValueError:
        hb = host.encode("idna")
        addr = b"\x03" + bytes([len(hb)]) + hb
    await loop.sock_sendall(sock, b"\x05\x01\x00" + addr + struct.pack(">H", port))
    ver, rep, _, atyp = await _recv_exact(loop, sock, 4)
    if rep != 0:
        raise ClientError(
            f"socks connect tcp {host}:{port}: proxy refused (code {rep})", prefix=_FAIL
        )
    if atyp == 1:
        await _recv_exact(loop, sock, 4 + 2)
    elif atyp == 4:
        await _recv_exact(loop, sock, 16 + 2)
    else:
        (ln,) = await _recv_exact(loop, sock, 1)
        await _recv_exact(loop, sock, ln + 2)


def _connect_request(host: str, port: int, user: str | None, password: str | None) -> h11.Request:
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    headers = [("Host", hostport)]
    if user is not None:
        cred = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        headers.append(("Proxy-Authorization", f"Basic {cred}"))
    return h11.Request(method="CONNECT", target=hostport, headers=headers)


def _check_connect_response(resp: h11.Response) -> None:
    if not 200 <= resp.status_code < 300:
        reason = resp.reason.decode("latin-1", "replace")
        raise ClientError(f"proxyconnect tcp: {resp.status_code} {reason}".rstrip(), prefix=_FAIL)


async def _http_connect(
    sock: socket.socket, host: str, port: int, user: str | None, password: str | None
) -> bytes:
    loop = asyncio.get_running_loop()
    conn = h11.Connection(h11.CLIENT)
    await loop.sock_sendall(sock, conn.send(_connect_request(host, port, user, password)))
    for _ in range(1000):  # a response head arrives in a few reads
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await loop.sock_recv(sock, 65536)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Response):
            _check_connect_response(event)
            return bytes(conn.trailing_data[0])
        if isinstance(event, h11.ConnectionClosed):
            break
    raise ClientError("proxyconnect tcp: unexpected EOF", prefix=_FAIL)


async def _https_connect(
    purl_host: str, purl_port: int, host: str, port: int, user: str | None, password: str | None
) -> socket.socket:
    ctx = ssl.create_default_context()
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(purl_host, purl_port, ssl=ctx), CONNECT_TIMEOUT
    )
    conn = h11.Connection(h11.CLIENT)
    writer.write(conn.send(_connect_request(host, port, user, password)))
    trailing = b""
    for _ in range(1000):
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
            continue
        if isinstance(event, h11.Response):
            _check_connect_response(event)
            trailing = bytes(conn.trailing_data[0])
            break
        raise ClientError("proxyconnect tcp: unexpected EOF", prefix=_FAIL)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    loop = asyncio.get_running_loop()

    async def up() -> None:  # socketpair -> proxy
        try:
            for _ in range(1 << 40):  # ends on EOF
                data = await loop.sock_recv(ours, 65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, ConnectionError):
            pass

    async def down() -> None:  # proxy -> socketpair
        try:
            if trailing:
                await loop.sock_sendall(ours, trailing)
            for _ in range(1 << 40):
                data = await reader.read(65536)
                if not data:
                    break
                await loop.sock_sendall(ours, data)
            ours.shutdown(socket.SHUT_WR)
        except (OSError, ConnectionError):
            pass

    async def bridge() -> None:
        try:
            await asyncio.gather(up(), down())
        finally:
            ours.close()
            writer.close()

    task = asyncio.ensure_future(bridge())
    _bridges.add(task)
    task.add_done_callback(_bridges.discard)
    return theirs


async def open_tunnel(proxy_url: str, host: str, port: int) -> socket.socket:
    """A plain socket connected to host:port through the proxy."""
    parts = urlsplit(proxy_url)
    scheme = (parts.scheme or "http").lower()
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    phost = parts.hostname or ""
    default_port = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080}.get(scheme)
    if default_port is None:
        raise ClientError(f"proxy: unknown scheme: {scheme}", prefix=_FAIL)
    pport = parts.port or default_port
    try:
        if scheme == "https":
            return await _https_connect(phost, pport, host, port, user, password)
        sock = await _connect_tcp(phost, pport)
    except OSError as exc:
        raise ClientError(
            f"proxyconnect tcp: dial tcp {phost}:{pport}: {_os_error_text(exc)}", prefix=_FAIL
        ) from None
    try:
        if scheme in ("socks5", "socks5h"):
            await _socks5(sock, host, port, user, password)
        else:
            trailing = await _http_connect(sock, host, port, user, password)
            if trailing:  # cannot happen with a server that waits for the client to speak first
                raise ClientError(
                    "proxyconnect tcp: proxy sent data before the tunnel was used", prefix=_FAIL
                )
    except BaseException:
        sock.close()
        raise
    return sock


def _os_error_text(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connect: connection refused"
    return errno_text(exc)
