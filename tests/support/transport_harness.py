"""The in-process harness of the transport tests: `ApiServer` (an API server stand-in that
parses the upgrade with h11 and hands it to `kubelet.accept_portforward`), `connect` (a client
session through `upgrade.connect`), `Forward` (one forwarded connection: a socketpair relayed
through the session) and `run` (one async test body on a fresh asyncio or uvloop loop,
bounded in time). Pod targets are in targets.py. Everything on 127.0.0.1, every wait bounded."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11

from fastpf.transport import kubelet, upgrade
from fastpf.transport.channel import ChannelConnection
from fastpf.transport.relay import relay
from fastpf.types import ApiDialer, PodTarget, ServerOptions, UpgradeRequest
from tests.support.targets import small_buffers

TEST_TIMEOUT = 30.0
PATH = "/api/v1/namespaces/default/pods/x/portforward"
POD = PodTarget("default", "x", "0b4d4f5e-1111-2222-3333-444455556666", "127.0.0.1")
LOOPS = ["asyncio", "uvloop"]


def run(
    coro_fn: Callable[[], Awaitable[Any]], loop_kind: str, timeout: float = TEST_TIMEOUT
) -> Any:
    """Run one async test body on a fresh loop of the given kind, bounded in time."""
    if loop_kind == "uvloop":
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop

    async def main() -> Any:
        try:
            return await asyncio.wait_for(coro_fn(), timeout)
        finally:
            await kubelet.shutdown_all(0.5)

    if hasattr(asyncio, "Runner"):
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(main())
    loop = factory()  # Python 3.10
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


class _ApiProtocol(asyncio.Protocol):
    """Minimal API server: one upgrade request per connection, parsed by h11."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.h11 = h11.Connection(h11.SERVER)
        self.transport: Any = None
        self.request: h11.Request | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.h11.receive_data(data)
        for _ in range(16):
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                return
            if isinstance(event, h11.Request):
                self.request = event
                continue
            if isinstance(event, h11.Data):
                continue
            if isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                break
        assert self.request is not None
        req = self.request
        target = req.target.decode()
        parts = urlsplit(target)
        trailing = self.h11.trailing_data[0]
        upgrade_request = UpgradeRequest(
            method=req.method.decode(),
            path=parts.path,
            query=parse_qs(parts.query),
            headers=[(k.decode().lower(), v.decode()) for k, v in req.headers],
            trailing=bytes(trailing),
        )
        self.server.requests.append(upgrade_request)
        self.transport.pause_reading()
        kubelet.accept_portforward(
            self.transport, upgrade_request, self.server.pod, self.server.options
        )


class ApiServer:
    def __init__(
        self,
        pod: PodTarget = POD,
        options: ServerOptions | None = None,
        ssl: Any = None,
        client_ssl: Any = None,
        small_buffers: bool = False,
    ) -> None:
        # small_buffers: fixed 256 KiB kernel socket buffers on both ends of the upgraded
        # connection (Linux autotunes loopback receive buffers up to tcp_rmem max, often
        # 32 MiB, which would hide user-space backpressure in memory tests).
        self.small_buffers = small_buffers
        self.ssl = ssl
        self.client_ssl = client_ssl
        self.pod = pod
        self.options = options or ServerOptions()
        self.requests: list[UpgradeRequest] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> ApiServer:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _ApiProtocol(self), "127.0.0.1", 0, ssl=self.ssl
        )
        if self.small_buffers:
            small_buffers(self.server.sockets[0])
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def dialer(self) -> ApiDialer:
        port = self.port

        async def open_small() -> socket.socket:
            sock = socket.socket()
            small_buffers(sock)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            return sock

        return ApiDialer(
            "127.0.0.1",
            self.port,
            open_socket=open_small if self.small_buffers else None,
            ssl=self.client_ssl,
            server_hostname="localhost" if self.client_ssl else None,
            headers=[("User-Agent", "fastpf-test")],
        )


class Forward:
    """One forwarded connection: a socketpair whose one end is relayed through the session;
    the test talks to the other end with asyncio streams."""

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter
        self.relay_task: asyncio.Task[Any]
        self.error_stream: Any = None
        self.data: Any = None

    @classmethod
    async def open(cls, conn: Any, port: int, request_id: int | None, index: int = 0) -> Forward:
        fw = cls()
        if isinstance(conn, ChannelConnection):
            await conn.ready(10)
            fw.data = conn.channels[index]
        else:
            base = {"port": str(port)}
            if request_id is not None:
                base["requestid"] = str(request_id)
            fw.error_stream = await conn.open_stream({"streamtype": "error", **base}, timeout=10)
            fw.error_stream.write_eof()
            fw.data = await conn.open_stream({"streamtype": "data", **base}, timeout=10)
        a, b = socket.socketpair()
        fw.relay_task = asyncio.get_running_loop().create_task(relay(fw.data, a))
        fw.reader, fw.writer = await asyncio.open_connection(sock=b, limit=1 << 20)
        return fw

    async def error_text(self) -> bytes:
        if self.error_stream is not None:
            return await asyncio.wait_for(self.error_stream.read_all(), 10)
        return await asyncio.wait_for(self.data.read_error(), 10)


async def connect(server: ApiServer, protocol: str, ports: list[int], **kw: Any) -> Any:
    return await upgrade.connect(server.dialer, PATH, protocol, ports, **kw)
