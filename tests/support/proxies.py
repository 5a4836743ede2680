"""Proxies between a client and a server (127.0.0.1, OS-chosen ports, in the test's loop).

* `Proxy`: an HTTP CONNECT proxy (optionally requiring Basic auth) or a SOCKS5 proxy; `targets`
  lists where clients asked to go.
* `Mitm`: a man in the middle between a client and `fastpf serve --no-tls` that passes bytes
  both ways and lets the test inject bytes into a live upgraded session, toward the client
  (`to_client`) or toward the server (`to_server`), once the 101 went by. `kubeconfig_via`
  points a serve kubeconfig at it.
* The fault-injecting proxy (delays, splits, cuts) is faultproxy.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.serve_process import ServeInstance


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        for _ in range(1 << 30):
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, ConnectionError):
        pass


@dataclass
class Proxy:
    """kind "http": CONNECT proxy (optionally requiring Basic `auth`); kind "socks5"."""

    kind: str = "http"
    auth: str | None = None
    targets: list[str] = field(default_factory=list)
    port: int = 0
    _server: asyncio.AbstractServer | None = None
    _tasks: set[asyncio.Future[Any]] = field(default_factory=set)

    async def start(self) -> Proxy:
        handler = self._http if self.kind == "http" else self._socks
        self._server = await asyncio.start_server(handler, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        cred = f"{self.auth}@" if self.auth else ""
        scheme = "http" if self.kind == "http" else "socks5"
        return f"{scheme}://{cred}127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2)

    async def _splice(
        self,
        host: str,
        port: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        reply: bytes,
    ) -> None:
        r2, w2 = await asyncio.open_connection(host, port)
        writer.write(reply)
        t = asyncio.ensure_future(asyncio.gather(_pipe(reader, w2), _pipe(r2, writer)))
        self._tasks.add(t)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        finally:
            self._tasks.discard(t)
            w2.close()
            writer.close()

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        method, target, _ = lines[0].split(" ")
        headers = {
            ln.split(":", 1)[0].lower(): ln.split(":", 1)[1].strip()
            for ln in lines[1:]
            if ":" in ln
        }
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        if self.auth is not None:
            want = "Basic " + base64.b64encode(self.auth.encode()).decode()
            if headers.get("proxy-authorization") != want:
                writer.write(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
                )
                writer.close()
                return
        self.targets.append(target)
        host, _, port = target.rpartition(":")
        await self._splice(
            host.strip("[]"),
            int(port),
            reader,
            writer,
            b"HTTP/1.1 200 Connection established\r\n\r\n",
        )

    async def _socks(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ver, n = await reader.readexactly(2)
        methods = await reader.readexactly(n)
        if self.auth is not None:
            if 2 not in methods:
                writer.write(b"\x05\xff")
                writer.close()
                return
            writer.write(b"\x05\x02")
            _, ulen = await reader.readexactly(2)
            user = await reader.readexactly(ulen)
            (plen,) = await reader.readexactly(1)
            pw = await reader.readexactly(plen)
            ok = f"{user.decode()}:{pw.decode()}" == self.auth
            writer.write(b"\x01\x00" if ok else b"\x01\x01")
            if not ok:
                writer.close()
                return
        else:
            writer.write(b"\x05\x00")
        _, cmd, _, atyp = await reader.readexactly(4)
        if atyp == 1:
            host = str(ipaddress.ip_address(await reader.readexactly(4)))
        elif atyp == 4:
            host = str(ipaddress.ip_address(await reader.readexactly(16)))
        else:
            (ln,) = await reader.readexactly(1)
            host = (await reader.readexactly(ln)).decode()
        (port,) = struct.unpack(">H", await reader.readexactly(2))
        self.targets.append(f"{host}:{port}")
        await self._splice(host, port, reader, writer, b"\x05\x00\x00\x01" + bytes(4) + b"\x00\x00")


# ---------------------------------------------------------------------------------------------
# a man in the middle


class _Leg:
    """One proxied connection: client <-> server, with injection once upgraded."""

    def __init__(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        server_reader: asyncio.StreamReader,
        server_writer: asyncio.StreamWriter,
    ) -> None:
        self.client_reader, self.client_writer = client_reader, client_writer
        self.server_reader, self.server_writer = server_reader, server_writer
        self.upgraded = asyncio.Event()
        self.to_client_bytes = 0
        self.to_server_bytes = 0

    def to_client(self, data: bytes) -> None:
        self.client_writer.write(data)

    def to_server(self, data: bytes) -> None:
        self.server_writer.write(data)

    def close(self) -> None:
        self.client_writer.close()
        self.server_writer.close()


class Mitm:
    """TCP proxy to `upstream_port` on 127.0.0.1. `legs` lists the proxied connections in
    order; `await mitm.upgraded_leg()` gives the first leg whose server answered 101, so the
    test can inject frames into that live session (`leg.to_client` / `leg.to_server`; at a
    frame boundary, i.e. while the other side is quiet). `reading_client` (an Event, set):
    clear it to stop reading what clients send once upgraded (a server that never reads),
    set it again to resume. `on_upgrade(head, reader, writer)`: answer port-forward requests (a first
    request head naming /portforward) instead of the server; returning False passes the
    request on (e.g. the target of a redirect)."""

    def __init__(
        self,
        upstream_port: int,
        on_upgrade: Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]
        | None = None,
    ) -> None:
        self.upstream_port = upstream_port
        self.on_upgrade = on_upgrade
        self.port = 0
        self.legs: list[_Leg] = []
        self.new_leg = asyncio.Event()
        self.reading_client = asyncio.Event()
        self.reading_client.set()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Mitm:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for leg in self.legs:
            leg.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2)

    async def upgraded_leg(self, timeout: float = 10.0) -> _Leg:
        for _ in range(int(timeout / 0.02)):
            for leg in self.legs:
                if leg.upgraded.is_set():
                    return leg
            await asyncio.sleep(0.02)
        raise AssertionError("no upgraded connection through the proxy")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = b""
        if self.on_upgrade is not None:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            except (
                OSError,
                asyncio.TimeoutError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
            ):
                writer.close()
                return
            if b"/portforward" in head.split(b"\r\n", 1)[0]:
                try:
                    if await self.on_upgrade(head, reader, writer):
                        return
                except OSError:
                    return
        sr, sw = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        sw.write(head)
        leg = _Leg(reader, writer, sr, sw)
        self.legs.append(leg)
        up = asyncio.ensure_future(self._pump(leg, reader, sw, to_server=True))
        down = asyncio.ensure_future(self._pump(leg, sr, writer, to_server=False))
        for t in (up, down):
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _pump(
        self, leg: _Leg, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, to_server: bool
    ) -> None:
        seen = b""
        try:
            for _ in range(1 << 30):
                if to_server and leg.upgraded.is_set():
                    await self.reading_client.wait()
                data = await reader.read(1 << 16)
                if not data:
                    break
                if not to_server and not leg.upgraded.is_set():
                    seen = (seen + data)[-4096:]
                    if b" 101 " in seen:
                        leg.upgraded.set()
                if to_server:
                    leg.to_server_bytes += len(data)
                else:
                    leg.to_client_bytes += len(data)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, asyncio.CancelledError):
            pass


def kubeconfig_via(srv: ServeInstance, port: int, path: Path) -> Path:
    """`srv`'s kubeconfig  pointing at `port` on the same host (a
    Mitm in front of it)."""
    path.write_text(srv.kubeconfig.read_text().replace(f":{srv.port}", f":{port}"))
    return path
