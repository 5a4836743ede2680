"""Sans-IO WebSocket channel session (v4.channel.k8s.io, v4.base64.channel.k8s.io, none) for
port-forward, both roles (PROTOCOL.md 6.1). Bytes in, messages out through the owner's
`emit`/`emit_parts` (via a WsOutput), events to the owner and each port's sink; no loop.

Port i of the query uses channel 2i (data, both ways) and 2i+1 (error, server -> client).
Right after the 101 the server announces every port on both channels (3 bytes: channel,
uint16 little-endian port). There is no per-channel half-close: the server closes the session
(WS close 1000) once every pod connection ended; the client once every local socket is gone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from fastpf import _frames as F
from fastpf._pump import SinkTable
from fastpf.errors import WebSocketError
from fastpf.transport._base import InboundQueue
from fastpf.transport.contract import Buffer, SessionControl, Sink
from fastpf.transport.ws_output import WS_HEADER_ROOM, WsOutput, close_outcome

if TYPE_CHECKING:
    from fastpf.transport.channel import ChannelConnection

DEFAULT_MAX_DATA = 256 * 1024
ERROR_TEXT_LIMIT = 65536  # bytes of error-channel text kept per port


class ChannelOwner(Protocol):
    """What a channel session needs from its owner (the asyncio adapter, or a test)."""

    def emit(self, data: Buffer) -> None: ...
    def emit_parts(self, parts: list[Any], total: int) -> None: ...
    def end(self, exc: BaseException | None) -> None:
        """The session is over (flush, close); the owner then calls connection_lost(exc)."""

    def announced(self) -> None:
        """Client: every port announcement arrived."""

    def ws_pong(self) -> None: ...
    def pause_input(self, key: object) -> None: ...
    def resume_input(self, key: object) -> None: ...


class ChannelPort:
    """One forwarded port inside a channel session, sans-IO: data channel 2i and error
    channel 2i+1. Implements the relay contract (fastpf.transport.contract.Pipe).
    channel.PortChannel adds the awaitable reads."""

    def __init__(self, core: ChannelSession, index: int, port: int) -> None:
        self.core = core
        self.connection: ChannelConnection = core.owner  # type: ignore[assignment]
        self.session: SessionControl = core.owner  # type: ignore[assignment]  # the adapter
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
        self._inbox = InboundQueue(core.owner)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<PortChannel {self.index} port={self.port}>"

    @property
    def header_room(self) -> int:
        return WS_HEADER_ROOM + 1

    @property
    def max_payload(self) -> int:
        return self.core.max_data

    # -- sending -------------------------------------------------------------------------------
    def write(self, data: Buffer) -> None:
        """Send on the data channel."""
        core = self.core
        if self.dead or core.ended:
            return
        view = memoryview(data).cast("B")
        step = core.max_data
        for pos in range(0, len(view), step):
            chunk = view[pos : pos + step]
            core.send_channel(self.data_channel, chunk)
            self.sent += len(chunk)

    def send_inplace(self, buf: bytearray, start: int, n: int) -> None:
        """Relay fast path: one WS message [channel byte][payload] from buf, one write."""
        core = self.core
        if self.dead or core.ended:
            return
        if core.base64:
            self.write(memoryview(buf)[start : start + n])
            return
        buf[start - 1] = self.data_channel  # the channel prefix of the message payload
        core.ws.binary_inplace(buf, start - 1, start + n)
        self.sent += n

    def write_error(self, text: str | bytes) -> None:
        """Server: send text on this port's error channel."""
        data = text.encode() if isinstance(text, str) else text
        self.core.send_channel(self.error_channel, data)

    def write_eof(self) -> None:
        """No per-channel half-close exists on the wire: this port is finished on our side.
        Nothing is sent; once every port is finished the session closes (WS close 1000)."""
        if self.local_closed:
            return
        self.local_closed = True
        self.core.channel_done()

    def reset(self, status: int = 5) -> None:
        """Our side of this port is gone (local socket closed / pod dial failed)."""
        self.dead = True
        self.local_closed = True
        self.core.channel_done()

    # -- receiving -----------------------------------------------------------------------------
    def set_sink(self, sink: Sink | None) -> None:
        self._sink = sink
        self.core.route(self)
        if sink is None:
            return
        self._inbox.hand_to(sink)
        if self.remote_closed:
            sink.connection_lost(self.core.end_reason)

    def _on_data(self, view: memoryview) -> None:
        n = len(view)
        if not n or self.remote_closed or (self.local_closed and self._sink is None):
            return  # this port is finished on our side: nobody will read it (never buffer)
        self.received += n
        sink = self._sink
        if sink is not None:
            self.core._held.add(sink)
            try:
                sink.data_received(view)
            except Exception:  # a broken sink costs this stream, not the session
                self.reset()
            return
        self._inbox.push(view)

    def _on_error(self, data: bytes) -> None:
        if len(self.error_text) < ERROR_TEXT_LIMIT:
            self.error_text += data
        self._error_arrived()

    def _on_end(self, exc: BaseException | None) -> None:
        if self.remote_closed:
            return
        self.remote_closed = True
        self.local_closed = True
        self.core.fast.discard(self.data_channel)
        if self._sink is not None:
            self._sink.connection_lost(exc)
        self._inbox.wake()
        self._error_arrived()

    def _error_arrived(self) -> None:
        """Hook: error text arrived or the session ended (the adapter wakes its waiter)."""


class ChannelSession:
    """The channel protocol state of one WebSocket session (binary, or base64 text).

    client=True: we mask and expect the 3-byte port announcements (`ready`).
    client=False (kubelet): `announcements()` are the bytes to send right after the 101.
    auto_close: close (1000) once every port finished on our side."""

    def __init__(
        self,
        owner: ChannelOwner,
        *,
        client: bool,
        ports: list[int],
        base64: bool = False,
        max_data: int = DEFAULT_MAX_DATA,
        auto_close: bool = True,
        ws: WsOutput,
        port_class: type[ChannelPort] = ChannelPort,
    ) -> None:
        self.owner = owner
        self.client = client
        self.ports = list(ports)
        self.base64 = base64
        self.max_data = max_data
        self.auto_close = auto_close
        self.ws = ws
        self.channels = [port_class(self, i, p) for i, p in enumerate(self.ports)]
        self._dec = F.WsDecoder(expect_masked=not client)
        self._held: set[Sink] = set()
        # Data channels whose relay takes whole binary messages straight from the receive
        # buffer (compiled: F.deliver_channel_data).
        self.fast = SinkTable()
        self._announced = [False] * (2 * len(self.ports))
        self.ready = not client or not self.ports
        self._msg_channel: int | None = None  # channel of the binary message being received
        self._text: bytearray | None = None  # base64 text message being assembled
        self.ended = False
        self.end_reason: BaseException | None = None

    def announcements(self) -> bytes:
        """Server: every port on both its channels, as WebSocket messages (one write)."""
        parts = []
        for ch in self.channels:
            port = ch.port.to_bytes(2, "little")
            for channel in (ch.data_channel, ch.error_channel):
                opcode, msg = F.channel_encode(channel, port, self.base64)
                parts.append(F.ws_encode(opcode, msg))
        return b"".join(parts)

    # -- input ---------------------------------------------------------------------------------
    def get_buffer(self, sizehint: int) -> memoryview:
        held = self._held
        if held:
            for sink in held:
                if not sink.drained():
                    return self._dec.get_buffer(sizehint)
            held.clear()
        self._dec.release()
        return self._dec.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self._dec.buffer_updated(nbytes)
        self._drain()

    def feed(self, data: Buffer) -> None:
        self._dec.feed(data)
        self._drain()

    def _drain(self) -> None:
        dec = self._dec
        fast = self.fast
        for _ in range(1 << 30):  # bounded by the bytes received
            if self.ended:
                return
            if fast:
                F.deliver_channel_data(dec, fast)  # whole data messages for relays, compiled
                if self.ended:
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
                if not self._on_text(frame):
                    return
            elif op in (F.WS_BINARY, F.WS_TEXT):
                self._protocol_error(WebSocketError("unexpected message type", close_code=1003))
                return
            elif self.ws.answer_control(op, frame.payload, self.owner.ws_pong):
                self._end(close_outcome(self.ws.peer_close_code))
                return

    def _on_text(self, frame: Any) -> bool:
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
                self._protocol_error(WebSocketError(f"bad base64 message: {exc}", close_code=1007))
                return False
            self._dispatch(channel, memoryview(data))
        return True

    def _on_binary(self, frame: Any) -> None:
        payload = frame.payload
        if frame.first:
            self._msg_channel = None
        if self._msg_channel is None:
            if not len(payload):
                return  # the channel byte comes with the next fragment
            self._msg_channel = payload[0]
            payload = payload[1:]
        self._dispatch(self._msg_channel, payload)

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
            if not channel & 1:
                self.route(ch)
            if all(self._announced) and not self.ready:
                self.ready = True
                self.owner.announced()
            return
        if channel & 1:
            if self.client:
                ch._on_error(bytes(data))
            # the client writing on an error channel: ignored, as kubelet does
            return
        ch._on_data(data)

    def route(self, port: ChannelPort) -> None:
        """Put `port`'s data channel in the compiled path when its sink is a relay's pump
        (`.pump`), the messages are binary, its announcement (client) is in and it may still
        receive; else take it out."""
        pump = getattr(port._sink, "pump", None)
        channel = port.data_channel
        if (
            pump is not None
            and not self.base64
            and not port.remote_closed
            and (not self.client or self._announced[channel])
        ):
            self.fast.add(channel, pump)
        else:
            self.fast.discard(channel)

    # -- output --------------------------------------------------------------------------------
    def send_channel(self, channel: int, data: Buffer) -> None:
        if self.ended:
            return
        if self.base64:
            opcode, msg = F.channel_encode(channel, data, True)
            self.ws.message(opcode, msg)
        else:
            self.ws.binary_parts([bytes((channel,)), data], 1 + len(data))

    def channel_done(self) -> None:
        if self.ended or not self.auto_close:
            return
        if all(ch.local_closed for ch in self.channels):
            self.close(1000)

    # -- ending --------------------------------------------------------------------------------
    def close(self, code: int = 1000) -> None:
        """Send WS close(code) and end the session (the owner flushes, then closes)."""
        if self.ended:
            return
        self.ws.close(code)
        self._end(None)

    def _protocol_error(self, exc: BaseException) -> None:
        self.ws.close(getattr(exc, "close_code", 1002))
        self._end(exc)

    def internal_error(self) -> None:
        """A bug or an unexpected peer: WS close 1011; the owner ends the session."""
        self.ws.close(1011)

    def _end(self, exc: BaseException | None) -> None:
        self.owner.end(exc)
        if not self.ended:
            self.connection_lost(exc)

    def connection_lost(self, exc: BaseException | None) -> None:
        """The connection ended (`exc` None: cleanly): every port learns it."""
        if self.ended:
            return
        self.ended = True
        self.end_reason = exc
        for ch in self.channels:
            ch._on_end(exc)
        self._held.clear()
        self.fast.clear()


__all__ = ["ChannelOwner", "ChannelPort", "ChannelSession", "DEFAULT_MAX_DATA"]
