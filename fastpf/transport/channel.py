"""WebSocket channel protocol (v4.channel.k8s.io, v4.base64.channel.k8s.io, none) for
port-forward, both roles (PROTOCOL.md 6.1): the asyncio adapter around the sans-IO
`channel_session.ChannelSession`, which holds the protocol (see there). The adapter owns the
transport, the idle timer and the futures (`ready()`, `PortChannel.wait_error`, `closed`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastpf.errors import ChannelClosedError
from fastpf.transport._base import UpgradedProtocol
from fastpf.transport.channel_session import DEFAULT_MAX_DATA, ChannelPort, ChannelSession


class PortChannel(ChannelPort):
    """One forwarded port inside a channel session: data channel 2i and error channel 2i+1
    (see channel_session.ChannelPort), with the awaitable reads.

    Implements the relay contract (see fastpf.transport.contract), so `relay(channel, sock)`
    pumps a socket through it."""

    def __init__(self, core: ChannelSession, index: int, port: int) -> None:
        super().__init__(core, index, port)
        self._error_waiter: asyncio.Future[None] | None = None

    async def read(self) -> bytes:
        """Next chunk of the data channel; b"" when the session ended."""
        chunk = await self._inbox.pop(lambda: self.remote_closed)
        return b"" if chunk is None else chunk

    async def read_error(self, limit: int = 65536) -> bytes:
        """Client: the first text received on the error channel, or b"" if the session ended
        without one."""
        return await self.wait_error(None, limit)

    async def wait_error(self, timeout: float | None, limit: int = 65536) -> bytes:
        """Client: what arrived on the error channel so far, waiting (up to `timeout` seconds;
        None: until text or the session's end) if none came yet and the session is still up
        (b"" when none came)."""
        if not self.error_text and not self.remote_closed:
            loop = self.connection.loop
            waiter = self._error_waiter = loop.create_future()
            handle = loop.call_later(timeout, _wake, waiter) if timeout is not None else None
            try:
                await waiter
            finally:
                if handle is not None:
                    handle.cancel()
                self._error_waiter = None
        return bytes(self.error_text[:limit])

    def _error_arrived(self) -> None:
        _wake(self._error_waiter)


def _wake(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


class ChannelConnection(UpgradedProtocol):
    """A v4 channel WebSocket session (binary, or base64 text with `base64=True`).

    client=True: we mask and expect the 3-byte port announcements (`await ready()`).
    client=False (kubelet): we announce the ports on attach. Either role closes the session
    (1000) once every channel finished on our side (write_eof/reset, i.e. socket EOF).
    `channels[i]` is the PortChannel of `ports[i]`. auto_close=False leaves closing to the
    owner (kubelet closes once every pod connection's error text was written).
    `closed` resolves to None (clean) or the exception that ended the session; never raises.
    """

    def __init__(
        self,
        *,
        client: bool,
        ports: list[int],
        base64: bool = False,
        idle_timeout: float | None = None,
        max_data: int = DEFAULT_MAX_DATA,
        auto_close: bool = True,
    ) -> None:
        super().__init__(ws="client" if client else "server", idle_timeout=idle_timeout)
        assert self._wsout is not None
        self.client = client
        self.core = ChannelSession(
            self,
            client=client,
            ports=ports,
            base64=base64,
            max_data=max_data,
            auto_close=auto_close,
            ws=self._wsout,
            port_class=PortChannel,
        )
        self._ready: asyncio.Future[None] = self.loop.create_future()
        if self.core.ready:
            self._ready.set_result(None)
        # Server: bytes written in the same write as the port announcements (the 101 head).
        self.greeting = b""

    # -- what the session keeps (read through) ------------------------------------------------
    @property
    def channels(self) -> list[PortChannel]:
        return self.core.channels  # type: ignore[return-value]

    @property
    def ports(self) -> list[int]:
        return self.core.ports

    @property
    def base64(self) -> bool:
        return self.core.base64

    @property
    def max_data(self) -> int:
        return self.core.max_data

    @max_data.setter
    def max_data(self, value: int) -> None:
        self.core.max_data = value

    @property
    def auto_close(self) -> bool:
        return self.core.auto_close

    @auto_close.setter
    def auto_close(self, value: bool) -> None:
        self.core.auto_close = value

    @property
    def _held(self) -> set[Any]:
        return self.core._held

    # -- setup ---------------------------------------------------------------------------------
    def _attached(self) -> None:
        if self.client:
            return
        # Every announcement (and the greeting) in one write: one TLS record, one syscall.
        greeting, self.greeting = self.greeting, b""
        self._touch()
        self.transport.write(greeting + self.core.announcements())

    async def ready(self, timeout: float = 30.0) -> None:
        """Client: wait for every port announcement. Raises ConnectionError if the session
        ended first, TimeoutError after `timeout`."""
        if self._ready.done():
            return  # usually: the announcements came with the 101
        waits: list[asyncio.Future[Any]] = [self._ready, self.closed]
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if self._ready.done():
            return
        if self.closed.done():
            raise ChannelClosedError(str(self.closed.result() or "connection closed"))
        raise TimeoutError("Timeout occurred")

    def _feed(self, data: bytes) -> None:
        self.core.feed(data)

    # -- reading (the session decodes in its own buffer) --------------------------------------
    def get_buffer(self, sizehint: int) -> memoryview:
        return self.core.get_buffer(sizehint)

    def _on_data(self, nbytes: int) -> None:
        self.core.buffer_updated(nbytes)

    # -- ChannelOwner: what the session asks of us ---------------------------------------------
    def end(self, exc: BaseException | None) -> None:
        self._close_transport(exc)

    def announced(self) -> None:
        if not self._ready.done():
            self._ready.set_result(None)

    def _internal_error(self, exc: BaseException) -> None:
        self.core.internal_error()
        self._close_transport(exc)

    # -- public --------------------------------------------------------------------------------
    def close(self, code: int = 1000) -> None:
        """Send WS close(code) and close the connection (flushing what was written)."""
        if self._closing:
            return
        self.core.close(code)

    def abort(self) -> None:
        self._abort(None)

    def _on_idle(self) -> None:
        self.close(1001)

    def _ended(self, exc: BaseException | None) -> None:
        self.core.connection_lost(exc)
