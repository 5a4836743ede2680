"""Listening side of `fastpf serve`: one asyncio protocol per connection that speaks HTTP/2 when
ALPN picked `h2` (or the client sent the h2c preface on --no-tls), HTTP/1.1 otherwise, and hands
upgraded connections to the port-forward engine (`fastpf.transport.kubelet`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

from fastpf.limits import nofile_limit
from fastpf.listen import Acceptor, exhausted_text, open_listeners
from fastpf.serve.api import Api
from fastpf.serve.http1 import Http1Handler
from fastpf.serve.http2 import Http2Handler
from fastpf.types import PodTarget, ServerOptions, UpgradeRequest

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
REST_IDLE_TIMEOUT = 300.0  # close keep-alive REST connections idle this long
HANDSHAKE_TIMEOUT = 10.0  # TLS handshake (Go's client-side TLSHandshakeTimeout)
HEAD_TIMEOUT = 30.0  # from accept: the TLS handshake and the first request head together
# Connections waiting for a request head (handshaking, sending it, or idle keep-alive) hold a
# descriptor each and cost a client nothing: slowloris. At most a quarter of the descriptor
# limit may wait; a new connection beyond that sheds the oldest waiting one. From half of it
# on ("pressure"), waiting connections older than PRESSURE_DEADLINE are shed too (a few per
# accept): a real client sends its head within milliseconds of connecting.
WAITING_SHARE = 4
WAITING_MIN = 64
WAITING_MAX = 4096
PRESSURE_DEADLINE = 2.0
PRESSURE_SHED = 4  # per accepted connection, besides the cap
LISTEN_BACKLOG = 1024
AcceptFn = Callable[[asyncio.Transport, UpgradeRequest, PodTarget, ServerOptions], None]
ShutdownFn = Callable[..., Awaitable[None]]


class _Handler(Protocol):
    handed_over: bool

    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> None: ...
    def idle(self) -> bool: ...
    def shutdown(self) -> None: ...
    def connection_lost(self) -> None: ...


class Server:
    """Owns the listening sockets, the live REST connections and the engine hook."""

    def __init__(
        self,
        api: Api,
        ssl_context: ssl.SSLContext | None,
        options: ServerOptions,
        engine: tuple[AcceptFn, ShutdownFn | None] | None = None,
        quiet: bool = False,
    ) -> None:
        self.api = api
        self.ssl_context = ssl_context
        self.options = options
        self.connections: set[HttpProtocol] = set()
        # Connections waiting for a request head, oldest first (insertion order), with the
        # loop time they started waiting.
        self.waiting: dict[HttpProtocol, float] = {}
        self.shed_count = 0  # connections shed so far (tests, status)
        self._engine = engine
        self._engine_loaded = engine is not None
        self._acceptors: list[Acceptor] = []
        self.quiet = quiet

    # ---- engine ---------------------------------------------------------------------------------
    def engine_accept(self) -> AcceptFn | None:
        engine = self._load_engine()
        return engine[0] if engine else None

    def _load_engine(self) -> tuple[AcceptFn, ShutdownFn | None] | None:
        if not self._engine_loaded:
            self._engine_loaded = True
            try:
                from fastpf.transport import kubelet
            except ImportError as exc:
                self.log(f"port-forward engine unavailable: {exc}")
                return None
            accept = getattr(kubelet, "accept_portforward", None)
            if accept is None:
                self.log(
                    "port-forward engine unavailable: fastpf.transport.kubelet has no accept_portforward"
                )
                return None
            self._engine = (accept, getattr(kubelet, "shutdown_all", None))
        return self._engine

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self, host: str, port: int) -> list[tuple[str, int]]:
        """Bind and start accepting; returns the bound (address, port) pairs."""
        self._load_engine()  # import now: a broken engine shows at start, not at first forward
        hosts = [host]
        if port == 0:
            # A name like "localhost" resolves to 127.0.0.1 and ::1; with port 0 each would get a
            # different port, so bind the first, then the others on the port it got.
            hosts = await self._addresses(host)
        for index, address in enumerate(hosts):
            try:
                await self._bind(address, port)
            except OSError:
                if index == 0:
                    raise
                continue  # the other family is optional (e.g. no IPv6)
            if port == 0:
                port = int(self._acceptors[0].sock.getsockname()[1])
        return [(a.sock.getsockname()[0], a.sock.getsockname()[1]) for a in self._acceptors]

    async def _addresses(self, host: str) -> list[str]:
        try:
            ipaddress.ip_address(host)
            return [host]
        except ValueError:
            pass
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, 0, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos)) or [host]

    async def _bind(self, host: str, port: int) -> None:
        # Our own accept (fastpf.listen): out of descriptors, connections wait in the backlog
        # instead of being accepted and dropped as uvloop's accept does.
        for sock in await open_listeners(host, port, LISTEN_BACKLOG):
            address = sock.getsockname()
            self._acceptors.append(
                Acceptor(
                    sock,
                    lambda conn: HttpProtocol(self, conn),
                    with_socket=True,
                    ssl=self.ssl_context,
                    ssl_handshake_timeout=HANDSHAKE_TIMEOUT if self.ssl_context else None,
                    report=functools.partial(self._accept_failed, address),
                )
            )

    def _accept_failed(self, address: tuple[Any, ...], exc: OSError, suppressed: int) -> None:
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        more = f"; {suppressed} more since the last report" if suppressed else ""
        self.log(
            f"cannot accept connections on {host}:{address[1]}: {exhausted_text(exc)} (open file "
            f"limit {nofile_limit()}); they wait until connections end{more}"
        )

    # ---- connections waiting for a request head (slowloris budget) --------------------------
    def admit(self, proto: HttpProtocol) -> None:
        """A new connection starts waiting for its request head: make room first."""
        waiting = self.waiting
        cap = min(WAITING_MAX, max(WAITING_MIN, nofile_limit() // WAITING_SHARE))
        for _ in range(len(waiting) - cap + 1):  # normally no pass at all
            self._shed_oldest()
        if len(waiting) >= cap // 2:
            now = asyncio.get_running_loop().time()
            for _ in range(PRESSURE_SHED):
                oldest = next(iter(waiting.items()), None)
                if oldest is None or now - oldest[1] < PRESSURE_DEADLINE:
                    break
                self._shed_oldest()
        waiting[proto] = asyncio.get_running_loop().time()

    def _shed_oldest(self) -> None:
        proto = next(iter(self.waiting), None)
        if proto is not None:
            self.shed_count += 1
            proto.shed()

    async def shutdown(self, timeout: float = 2.0) -> None:
        """Stop accepting, end every REST connection and every port-forward session."""
        for acceptor in self._acceptors:
            acceptor.close()
        for conn in list(self.connections):
            conn.shutdown()
        engine = self._engine if self._engine_loaded else None
        if engine and engine[1] is not None:
            try:
                await asyncio.wait_for(engine[1](timeout), timeout + 1.0)
            except Exception as exc:  # shutting down anyway; say why it was not clean
                self.log(f"port-forward sessions did not close cleanly: {exc!r}")
        # Let the close/GOAWAY bytes leave before the loop stops.
        for _ in range(20):
            if not self.connections:
                break
            await asyncio.sleep(0.01)

    def log(self, message: str) -> None:
        if not self.quiet:
            print(f"fastpf serve: {message}", file=sys.stderr, flush=True)


class HttpProtocol(asyncio.Protocol):
    """One client connection until it ends or is handed to the engine."""

    def __init__(self, server: Server, sock: socket.socket | None = None) -> None:
        self.server = server
        self.sock = sock  # the accepted socket, to shed the connection while TLS handshakes
        self.transport: asyncio.Transport | None = None
        self.handler: _Handler | None = None
        self.closing = False
        self._sniff = b""
        self._timer: asyncio.TimerHandle | None = None
        self._first_request = True
        server.admit(self)
        # From accept on: the handshake and the first request head share one deadline.
        self._arm(HEAD_TIMEOUT)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses but have the same API.
        self.transport = cast(asyncio.Transport, transport)
        if self.closing:  # shed while its TLS handshake was finishing
            self.transport.abort()
            return
        self.server.connections.add(self)
        # REST replies are small and latency-bound: uvloop and asyncio both set TCP_NODELAY
        # on every TCP transport already, so no setsockopt here (one syscall per connection).
        ssl_object = self.transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            if ssl_object.selected_alpn_protocol() == "h2":
                self.handler = Http2Handler(self)
            else:
                self.handler = Http1Handler(self)
        # Plain HTTP: decide on the first bytes (h2c prior knowledge or HTTP/1.1).

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.handler is None:
            self._sniff += data
            if H2_PREFACE.startswith(self._sniff[: len(H2_PREFACE)]) and len(self._sniff) < len(
                H2_PREFACE
            ):
                return
            data, self._sniff = self._sniff, b""
            if data.startswith(H2_PREFACE):
                self.handler = Http2Handler(self, data)
                return
            self.handler = Http1Handler(self)
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        if self.handler is not None and not self.closing:
            self.handler.eof_received()
        return None  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._cancel_timer()
        self.server.waiting.pop(self, None)
        if self.handler is not None:
            self.handler.connection_lost()
        self.server.connections.discard(self)

    # ---- helpers used by the handlers ----------------------------------------------------------
    def detach(self) -> None:
        """The engine took the transport: forget it here."""
        self._cancel_timer()
        self.server.waiting.pop(self, None)
        self.server.connections.discard(self)
        self.transport = None
        self.sock = None
        self.closing = True

    def request_started(self) -> None:
        """A request head arrived: the connection no longer waits (not sheddable)."""
        self.server.waiting.pop(self, None)

    def touch(self) -> None:
        """A request completed: the connection is idle until the next one."""
        if self.closing:
            return
        self._first_request = False
        self._arm(REST_IDLE_TIMEOUT)
        waiting = self.server.waiting
        waiting.pop(self, None)
        waiting[self] = asyncio.get_running_loop().time()

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        self._cancel_timer()
        self.server.waiting.pop(self, None)
        if self.transport is not None:
            self.transport.close()

    def shed(self) -> None:
        """Drop a connection that waits for a request head: at once, no TLS close_notify."""
        self.server.waiting.pop(self, None)
        self._cancel_timer()
        self.closing = True
        if self.transport is not None:
            self.transport.abort()
        elif self.sock is not None:
            # Still in the TLS handshake: the transport sees the end and closes the socket
            # (uvloop detaches this object then, so a reused descriptor is never touched).
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        self.sock = None

    def shutdown(self) -> None:
        if self.handler is not None and not self.closing:
            self.handler.shutdown()
        else:
            self.close()

    def _arm(self, delay: float) -> None:
        self._cancel_timer()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(delay, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        if self.closing:
            return
        if self.transport is None or (
            self._first_request and self.server.waiting.get(self) is not None
        ):
            self.shed()  # no request head within HEAD_TIMEOUT of accept: slowloris or dead
            return
        if self.handler is None or self.handler.idle():
            self.close()
        else:  # a request or watch in progress: look again later
            self._arm(REST_IDLE_TIMEOUT)


def quiet_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """One line per unexpected loop error instead of a traceback; TLS handshake failures of
    clients that do not trust our CA are normal and not worth a line."""
    exc = context.get("exception")
    if isinstance(exc, (ssl.SSLError, ConnectionError, TimeoutError, asyncio.TimeoutError)):
        return
    message = context.get("message", "unexpected error")
    detail = f": {exc!r}" if exc is not None else ""
    print(f"fastpf serve: {message}{detail}", file=sys.stderr, flush=True)
