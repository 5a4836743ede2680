"""Pod stand-ins: the TCP servers a forward reaches, on loopback with OS-chosen ports.

* `Targets` (the `targets` / `targets_factory` fixtures): sink, source and echo on one
  loopback address, in a background event loop. Protocols: `sink`: client sends `b"N\\n"` + N
  bytes, server replies `b"N <sha256hex>\\n"`; `source`: client sends `b"N\\n"`, server sends
  N bytes of `patterns.pattern_bytes` then closes; `echo`. `manifest(t, t2=None)`: the YAML
  of pods, a service and a deployment that name a `Targets`' ports, for `fastpf serve -f`.
* `Target`: one server in the test's own loop with a coroutine handler (`echo_handler`,
  `digest_handler`, `make_source_handler(size)`), for in-process transport tests;
  `small_buffers` fixes kernel buffers (no autotuning hiding backpressure).
* `free_port`: a port nobody listens on right now.
* podprog.py: a pod's programs in their own process (the traffic-pattern tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import yaml

from tests.support.patterns import pattern, pattern_bytes


class Targets:
    """sink/source/echo TCP servers on one loopback address, in a background event loop."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.sink = self.source = self.echo = 0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._servers: list[asyncio.base_events.Server] = []
        self._reserved: list[socket.socket] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error:
            raise RuntimeError(f"targets did not start: {self._error!r}")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as exc:  # reported to the constructor
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        for server in self._servers:
            server.close()
        self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()

    async def _start(self) -> None:
        for name, handler in (("sink", self._sink), ("source", self._source), ("echo", self._echo)):
            for _ in range(100):
                server = await asyncio.start_server(handler, self.host, 0, limit=1 << 16)
                port = server.sockets[0].getsockname()[1]
                if self.host == "127.0.0.1" or self._reserve(port):
                    break
                server.close()
                await server.wait_closed()
            else:
                raise RuntimeError(f"no port on {self.host} that is also free on 127.0.0.1")
            self._servers.append(server)
            setattr(self, name, port)

    def _reserve(self, port: int) -> bool:
        """Tests forward 127.0.0.1:R to a pod on another loopback address at R (kubectl's `R`
        form). A port bound only on 127.0.0.2 may be handed out on 127.0.0.1 by anyone's
        bind(0) meanwhile (the client then fails with "address already in use"). Keep it
        bound, not listening, with SO_REUSEADDR: the kernel no longer hands it out, and a
        client listener (SO_REUSEADDR, as Go and fastpf set) still binds it."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            return False
        self._reserved.append(sock)
        return True

    async def _sink(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(Exception):
            n = int((await reader.readline()).strip() or b"0")
            h = hashlib.sha256()
            got = 0
            while got < n:
                chunk = await reader.read(min(1 << 20, n - got))
                if not chunk:
                    break
                h.update(chunk)
                got += len(chunk)
            writer.write(f"{got} {h.hexdigest()}\n".encode())
            await writer.drain()
        writer.close()

    async def _source(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(Exception):
            n = int((await reader.readline()).strip() or b"0")
            for chunk in pattern_bytes(n):
                writer.write(chunk)
                await writer.drain()
        writer.close()

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(Exception):
            for _ in range(1 << 20):  # bounded: at most 64 GiB
                data = await reader.read(1 << 16)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        writer.close()

    def close(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        for sock in self._reserved:
            sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (bound and released)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def manifest(t: Targets, t2: Targets | None = None) -> str:
    ports = [
        {"name": "sink", "containerPort": t.sink},
        {"name": "source", "containerPort": t.source},
        {"name": "echo", "containerPort": t.echo},
        {"name": "dns", "containerPort": 53, "protocol": "UDP"},
    ]
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web-1", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "ports": ports}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "pend"},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Pending"},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"app": "web"},
                "ports": [
                    {"name": "http", "port": 80, "targetPort": "echo"},
                    {"name": "up", "port": 81, "targetPort": t.sink},
                ],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            # replicas 0: serve makes no pods of its own, the selector finds web-1 (as kubectl's
            # deploy/ resolution does: by selector, not by owner)
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}},
            },
        },
    ]
    if t2 is not None:
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p2", "annotations": {"fastpf.io/address": t2.host}},
                "spec": {
                    "containers": [
                        {"name": "c", "ports": [{"name": "echo", "containerPort": t2.echo}]}
                    ]
                },
            }
        )
    return yaml.safe_dump_all(docs)


def small_buffers(sock: Any, size: int = 256 << 10) -> None:
    """Fixed kernel buffers (no autotuning); accepted sockets inherit them from a listener."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


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
