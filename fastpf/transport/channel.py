"""WebSocket channel protocol (v4.channel.k8s.io, v4.base64.channel.k8s.io, none) for
port-forward, both roles (PROTOCOL.md 6.1).

Port i of the query uses channel 2i (data, both ways) and 2i+1 (error, server -> client).
Right after the 101 the server announces every port on both channels (3 bytes: channel,
uint16 little-endian port). There is no per-channel half-close: the server closes the session
(WS close 1000) once every pod connection ended; the client once every local socket is gone.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastpf import _frames as F
from fastpf.errors import ChannelClosedError, WebSocketError
from fastpf.transport._base import WS_HEADER_ROOM, InboundQueue, Sink, UpgradedProtocol

DEFAULT_MAX_DATA = 256 * 1024


class PortChannel:
    """One forwarded port inside a channel session: data channel 2i and error channel 2i+1.

    Implements the relay contract (see fastpf.transport._base), so `relay(channel, sock)`
    pumps a socket through it."""

    def __init__(self, conn: ChannelConnection, index: int, port: int) -> None:
        self.connection = conn
        self.session = conn
        self.index = index
        self.port = port
        self.data_channel = 2 * index
        self.error_channel = 2 * index + 1
        self.local_closed = False  # our side finished (EOF or reset)
        self.remote_closed = False  # session ended
        self.dead = False  # reset: the local socket is gone
        # No half-close on the wire: EOF from the socket ends the whole port (server: kubelet's
        # copy returns; client: as the Python client, which closes once its sockets closed).
        self.eof_ends_both = True
        self.error_text = bytearray()
        self.sent = 0
        self.received = 0
        self._sink: Sink | None = None
        self._inbox = InboundQueue(conn)
        self._error_waiter: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<PortChannel {self.index} port={self.port}>"

    @property
    def header_room(self) -> int:
        return WS_HEADER_ROOM + 1

    @property
    def max_payload(self) -> int:
        return self.connection.max_data

    # -- sending -------------------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send on the data channel."""
        if self.dead or self.connection.is_closing:
            return
        view = memoryview(data).cast("B")
        step = self.connection.max_data
        for pos in range(0, len(view), step):
            chunk = view[pos : pos + step]
            self.connection._send_channel(self.data_channel, chunk)
            self.sent += len(chunk)

    def send_inplace(self, buf: bytearray, start: int, n: int) -> None:
        """Relay fast path: one WS message [channel byte][payload] from buf, one write."""
        conn = self.connection
        if self.dead or conn.is_closing:
            return
        if conn.base64:
            self.write(memoryview(buf)[start : start + n])
            return
        conn._touch()
        buf[start - 1] = self.data_channel  # the channel prefix of the message payload
        conn._write_ws_inplace(buf, start - 1, start + n)
        self.sent += n

    def write_error(self, text: str | bytes) -> None:
        """Server: send text on this port's error channel."""
        data = text.encode() if isinstance(text, str) else text
        self.connection._send_channel(self.error_channel, data)

    def write_eof(self) -> None:
        """No per-channel half-close exists on the wire: this port is finished on our side.
        Nothing is sent; once every port is finished the session closes (WS close 1000)."""
        if self.local_closed:
            return
        self.local_closed = True
        self.connection._channel_done()

    def reset(self, status: int = 5) -> None:
        """Our side of this port is gone (local socket closed / pod dial failed)."""
        self.dead = True
        self.local_closed = True
        self.connection._channel_done()

    # -- receiving -----------------------------------------------------------------------------
    def set_sink(self, sink: Sink | None) -> None:
        self._sink = sink
        if sink is None:
            return
        self._inbox.hand_to(sink)
        if self.remote_closed:
            sink.connection_lost(
                self.connection.closed.result() if self.connection.closed.done() else None
            )

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

    def _on_data(self, view: memoryview) -> None:
        n = len(view)
        if not n or self.remote_closed or (self.local_closed and self._sink is None):
            return  # this port is finished on our side: nobody will read it (never buffer)
        self.received += n
        sink = self._sink
        if sink is not None:
            self.connection._held.add(sink)
            try:
                sink.data_received(view)
            except Exception:  # a broken sink costs this stream, not the session
                self.reset()
                return
            return
        self._inbox.push(view)

    def _on_error(self, data: bytes) -> None:
        if len(self.error_text) < 65536:
            self.error_text += data
        _wake(self._error_waiter)

    def _on_end(self, exc: BaseException | None) -> None:
        if self.remote_closed:
            return
        self.remote_closed = True
        self.local_closed = True
        if self._sink is not None:
            self._sink.connection_lost(exc)
        self._inbox.wake()
        _wake(self._error_waiter)


def _wake(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


class ChannelConnection(UpgradedProtocol):
    """A v4 channel WebSocket session (binary, or base64 text with `base64=True`).

    client=True: we mask and expect the 3-byte port announcements (`await ready()`).
    client=False (kubelet): we announce the ports on attach. Either role closes the session
    (1000) once every channel finished on our side (write_eof/reset, i.e. socket EOF). `channels[i]` is the PortChannel of `ports[i]`.
    auto_close=False leaves closing to the owner (kubelet closes once every pod
    connection's error text was written).
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
        self.auto_close = auto_close
        self.client = client
        self.ports = list(ports)
        self.base64 = base64
        self.max_data = max_data
        self.channels = [PortChannel(self, i, p) for i, p in enumerate(self.ports)]
        self._dec = F.WsDecoder(expect_masked=not client)
        self._held: set[Sink] = set()
        self._announced = [False] * (2 * len(self.ports))
        self._ready: asyncio.Future[None] = self.loop.create_future()
        self._msg_channel: int | None = None  # channel of the binary message being received
        self._msg_first = False
        self._text: bytearray | None = None  # base64 text message being assembled
        if not client or not self.ports:
            self._ready.set_result(None)
        # Server: bytes written in the same write as the port announcements (the 101 head).
        self.greeting = b""

    # -- setup ---------------------------------------------------------------------------------
    def _attached(self) -> None:
        if self.client:
            return
        # Every announcement (and the greeting) in one write: one TLS record, one syscall.
        parts = [self.greeting]
        self.greeting = b""
        for ch in self.channels:
            port = ch.port.to_bytes(2, "little")
            for channel in (ch.data_channel, ch.error_channel):
                opcode, msg = F.channel_encode(channel, port, self.base64)
                parts.append(F.ws_encode(opcode, msg))
        self._touch()
        self.transport.write(b"".join(parts))

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
        self._dec.feed(data)
        self._drain()

    # -- reading -------------------------------------------------------------------------------
    def get_buffer(self, sizehint: int) -> memoryview:
        held = self._held
        if held:
            for sink in held:
                if not sink.drained():
                    return self._dec.get_buffer(sizehint)
            held.clear()
        self._dec.release()
        return self._dec.get_buffer(sizehint)

    def _on_data(self, nbytes: int) -> None:
        self._dec.buffer_updated(nbytes)
        self._drain()

    def _drain(self) -> None:
        dec = self._dec
        for _ in range(1 << 30):  # bounded by the bytes received
            if self._closing:
                return
            frame = dec.next_frame()
            if frame is None:
                if dec.error is not None:
                    self._protocol_error(dec.error)
                return
            op = frame.opcode
            if op == F.WS_CONT:
                op = frame.message_opcode
            if op == F.WS_BINARY and not self.base64:
                self._on_binary(frame)
            elif op == F.WS_TEXT and self.base64:
                part = bytes(frame.payload)
                if frame.first:
                    self._text = bytearray(part)
                elif self._text is not None:
                    self._text += part
                if frame.fin and self._text is not None:
                    msg, self._text = bytes(self._text), None
                    try:
                        channel, data = F.channel_decode(F.WS_TEXT, msg, True)
                    except Exception as exc:
                        self._protocol_error(
                            WebSocketError(f"bad base64 message: {exc}", close_code=1007)
                        )
                        return
                    self._dispatch(channel, memoryview(data))
            elif op in (F.WS_BINARY, F.WS_TEXT):
                self._protocol_error(WebSocketError("unexpected message type", close_code=1003))
                return
            elif not self._handle_ws_control(frame):
                return

    def _on_binary(self, frame: Any) -> None:
        payload = frame.payload
        if frame.first:
            self._msg_channel = None
        if self._msg_channel is None:
            if not len(payload):
                return  # the channel byte comes with the next fragment
            self._msg_channel = payload[0]
            self._msg_first = True
            payload = payload[1:]
        self._dispatch(self._msg_channel, payload)
        self._msg_first = False

    def _dispatch(self, channel: int, data: memoryview) -> None:
        index = channel // 2
        if index >= len(self.channels):
            self._protocol_error(WebSocketError(f"invalid channel {channel}", close_code=1002))
            return
        ch = self.channels[index]
        if self.client and not self._announced[channel]:
            # Python's client requires exactly 3 bytes (channel + u16 LE port) first.
            if len(data) != 2 or int.from_bytes(bytes(data), "little") != ch.port:
                self._protocol_error(
                    WebSocketError(f"bad port announcement on channel {channel}", close_code=1002)
                )
                return
            self._announced[channel] = True
            if all(self._announced) and not self._ready.done():
                self._ready.set_result(None)
            return
        if channel & 1:
            if self.client:
                ch._on_error(bytes(data))
            # the client writing on an error channel: ignored, as kubelet does
            return
        ch._on_data(data)

    def _protocol_error(self, exc: BaseException) -> None:
        self._send_ws_close(getattr(exc, "close_code", 1002))
        self._close_transport(exc)

    def _internal_error(self, exc: BaseException) -> None:
        self._send_ws_close(1011)
        self._close_transport(exc)

    # -- writing -------------------------------------------------------------------------------
    def _send_channel(self, channel: int, data: bytes | memoryview) -> None:
        if self._closing or self.transport is None:
            return
        self._touch()
        if self.base64:
            opcode, msg = F.channel_encode(channel, data, True)
            self._write_ws(opcode, msg)
        else:
            self._write_ws_parts([bytes((channel,)), data], 1 + len(data))

    def _channel_done(self) -> None:
        if self._closing or not self.auto_close:
            return
        if all(ch.local_closed for ch in self.channels):
            self.close(1000)

    # -- public --------------------------------------------------------------------------------
    def close(self, code: int = 1000) -> None:
        """Send WS close(code) and close the connection (flushing what was written)."""
        if self._closing:
            return
        self._send_ws_close(code)
        self._close_transport(None)

    def abort(self) -> None:
        self._abort(None)

    def _on_idle(self) -> None:
        self.close(1001)

    def _peer_closed_ws(self, code: int | None) -> None:
        self._close_transport(
            None
            if code in (None, 1000, 1001)
            else ConnectionResetError(f"websocket closed ({code})")
        )

    def _ended(self, exc: BaseException | None) -> None:
        for ch in self.channels:
            ch._on_end(exc)
        self._held.clear()
