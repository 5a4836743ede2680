"""Shared harness for the transport tests (no tests here): an in-process API server stand-in
that parses the upgrade with h11 and hands it to accept_portforward, pod targets, and a
client that forwards through upgrade.connect. Everything on 127.0.0.1, every wait bounded."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11

from fastpf.transport import kubelet, upgrade
from fastpf.transport.relay import relay
from fastpf.types import ApiDialer, PodTarget, ServerOptions, UpgradeRequest

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
            http=self.h11,  # answers the request it parsed
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


def small_buffers(sock: Any, size: int = 256 << 10) -> None:
    """Fixed kernel buffers (no autotuning); accepted sockets inherit them from a listener."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


# -- pod targets ------------------------------------------------------------------------------


class Target:
    """A TCP server on 127.0.0.1 with a per-connection coroutine handler."""

    def __init__(
        self,
        handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
        small: bool = False,
    ) -> None:
        self.small = small  # fixed small kernel buffers (see small_buffers)
        self.handler = handler
        self.server: asyncio.Server | None = None
        self.port = 0
        self.errors: list[BaseException] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            self.errors.append(exc)
        finally:
            writer.close()

    async def __aenter__(self) -> Target:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, limit=1 << 20)
        if self.small:
            small_buffers(self.server.sockets[0])
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


async def echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo until EOF, then half-close (passes the client's FIN back)."""
    for _ in range(1 << 20):
        data = await reader.read(1 << 18)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
    await writer.drain()


async def digest_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read to EOF, then answer with the sha256 hex digest and the byte count."""
    h = hashlib.sha256()
    n = 0
    for _ in range(1 << 22):
        data = await reader.read(1 << 18)
        if not data:
            break
        h.update(data)
        n += len(data)
    writer.write(f"{h.hexdigest()} {n}\n".encode())
    await writer.drain()


def pattern(n: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    return (block * (n // len(block) + 1))[:n]


def make_source_handler(
    size: int,
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = pattern(size, 7)
        view = memoryview(data)
        for pos in range(0, size, 1 << 20):
            writer.write(view[pos : pos + (1 << 20)])
            await writer.drain()
        writer.write_eof()
        await writer.drain()
        await reader.read()  # wait for the client's close

    return handler


# -- client side ------------------------------------------------------------------------------


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
        if isinstance(conn, upgrade.ChannelConnection):
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


def tls_contexts() -> tuple[Any, Any]:
    """A self-signed localhost certificate: (server context, client context trusting it)."""
    import datetime
    import ssl
    import tempfile

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with (
        tempfile.NamedTemporaryFile("wb", suffix=".pem") as cf,
        tempfile.NamedTemporaryFile("wb", suffix=".pem") as kf,
    ):
        cf.write(cert_pem)
        kf.write(key_pem)
        cf.flush()
        kf.flush()
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(cf.name, kf.name)
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client
