"""Accepting connections without ever dropping one: `Acceptor` serves a listening socket.

uvloop's own accept (`loop.create_server`) drops connections when descriptors run out: libuv
closes a reserved descriptor, accepts every pending connection and closes it at once (the
"EMFILE trick"), and the client sees a reset. Here the accept is ours: when accept() fails for
lack of descriptors (EMFILE, ENFILE) or kernel memory (ENOBUFS, ENOMEM), the acceptor stops
accepting, tells its owner (who prints one line, rate-limited), and retries with a short
backoff; pending connections wait in the kernel's backlog until descriptors are free again.

Each accepted socket becomes a transport through `loop.connect_accepted_socket` (TLS
included), so protocols see the usual connection_made; measured no slower than the loop's
native accept for connection churn. A loop without add_reader (Windows' proactor) keeps its
own accept (loop.create_server).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import socket
import ssl as _ssl
from collections.abc import Callable
from typing import Any

from fastpf.limits import nofile_limit

ACCEPT_BATCH = 256  # connections accepted per readiness callback (then the loop turns)
RETRY_FIRST = 0.05  # seconds before accepting again after running out of descriptors
RETRY_MAX = 1.0
REPORT_INTERVAL = 10.0  # at most one report per acceptor this often
EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# The peer gave up between the kernel's handshake and our accept(): nothing to serve.
_GONE = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ECONNRESET})


def _close_server(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().close()  # the server owns the socket: closes it


def exhausted_text(exc: OSError) -> str:
    """Go's wording for the accept error (kubectl prints "accept4: too many open files")."""
    return "accept4: " + (exc.strerror or str(exc)).lower()


class Acceptor:
    """Accepts on `sock` (bound, listening) and hands each connection to `factory` (a protocol
    factory, as for loop.create_server). `report(exc, suppressed)` is called when accept()
    runs out of resources, at most once per REPORT_INTERVAL (`suppressed`: how many failures
    were not reported since the last call). `on_accept(conn)` sees each accepted socket first
    (serve's connection budget). `with_socket`: the factory gets the accepted socket (e.g. to
    shed the connection during its TLS handshake). `close()` stops accepting and closes the
    socket."""

    def __init__(
        self,
        sock: socket.socket,
        factory: Callable[..., asyncio.BaseProtocol],
        *,
        with_socket: bool = False,
        report: Callable[[OSError, int], None] | None = None,
        ssl: _ssl.SSLContext | None = None,
        ssl_handshake_timeout: float | None = None,
        on_accept: Callable[[socket.socket], None] | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.sock = sock
        self.factory = factory
        self.with_socket = with_socket
        self.report = report
        self.ssl = ssl
        self.ssl_handshake_timeout = ssl_handshake_timeout
        self.on_accept = on_accept
        self.tcp = sock.family in (socket.AF_INET, socket.AF_INET6)
        self.closed = False
        self.paused = False
        self.accepted = 0
        self.exhausted = 0  # accept() failures for lack of resources, in total
        self._retry = RETRY_FIRST
        self._retry_handle: asyncio.TimerHandle | None = None
        self._reported_at: float | None = None
        self._suppressed = 0
        self._tasks: set[asyncio.Future[Any]] = set()
        self._native: asyncio.Future[Any] | None = None
        sock.setblocking(False)
        try:
            self.loop.add_reader(sock.fileno(), self._ready)
        except NotImplementedError:
            self._native = self.loop.create_task(
                self.loop.create_server(
                    functools.partial(factory, None) if with_socket else factory,
                    sock=sock,
                    ssl=ssl,
                    ssl_handshake_timeout=ssl_handshake_timeout,
                )
            )

    @property
    def sockets(self) -> list[socket.socket]:
        return [] if self.closed else [self.sock]

    def is_serving(self) -> bool:
        return not self.closed

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._retry_handle is not None:
            self._retry_handle.cancel()
            self._retry_handle = None
        if self._native is not None:
            self._native.add_done_callback(_close_server)
            return
        if not self.paused:
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()

    # -- accepting ------------------------------------------------------------------------------
    def _ready(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _GONE:
                    continue
                if exc.errno in EXHAUSTED:
                    self._exhausted(exc)
                    return
                raise  # a closed or broken listening socket: the loop reports it
            self._retry = RETRY_FIRST
            self.accepted += 1
            self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        if self.tcp:
            # (fails only if the peer is already gone; the transport will notice)
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.on_accept is not None:
            self.on_accept(conn)
        kwargs: dict[str, Any] = {}
        if self.ssl is not None:
            kwargs = {"ssl": self.ssl, "ssl_handshake_timeout": self.ssl_handshake_timeout}
        factory = functools.partial(self.factory, conn) if self.with_socket else self.factory
        task = self.loop.create_task(self.loop.connect_accepted_socket(factory, conn, **kwargs))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # a failed TLS handshake or an early reset: the peer's business

    def _exhausted(self, exc: OSError) -> None:
        self.exhausted += 1
        self.loop.remove_reader(self.sock.fileno())
        self.paused = True
        self._retry_handle = self.loop.call_later(self._retry, self._resume)
        self._retry = min(self._retry * 2, RETRY_MAX)
        now = self.loop.time()
        if self._reported_at is None or now - self._reported_at >= REPORT_INTERVAL:
            self._reported_at = now
            suppressed, self._suppressed = self._suppressed, 0
            if self.report is not None:
                self.report(exc, suppressed)
        else:
            self._suppressed += 1

    def _resume(self) -> None:
        self._retry_handle = None
        if self.closed:
            return
        self.paused = False
        self.loop.add_reader(self.sock.fileno(), self._ready)
        self._ready()


async def open_listeners(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for `host` (an address or a name: every address
    it resolves to) and `port`, as loop.create_server(host, port, reuse_address=True) binds
    them. Raises OSError (strerror as the kernel says it) when any bind fails."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    socks: list[socket.socket] = []
    seen: set[tuple[Any, ...]] = set()
    try:
        for family, kind, proto, _name, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                # As asyncio: a v6 socket serves v6 only, the v4 address has its own.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def accept_reporter(listener: Any, emit: Callable[[str], None]) -> Callable[[OSError, int], None]:
    """An Acceptor `report` for a forwarded port (`listener`: .address, .pair) that emits
    kubectl's line for a failed accept, and what happens next (kubectl stops serving that
    port; we wait and go on)."""
    return functools.partial(_report_accept, listener, emit)


def _report_accept(
    listener: Any, emit: Callable[[str], None], exc: OSError, suppressed: int
) -> None:
    host = f"[{listener.address}]" if ":" in listener.address else listener.address
    port = listener.pair.local
    more = f"; {suppressed} more since the last report" if suppressed else ""
    emit(
        f"error accepting connection on port {port}: accept tcp {host}:{port}: "
        f"{exhausted_text(exc)} (open file limit {nofile_limit()}); new connections wait "
        f"until others close{more}"
    )
