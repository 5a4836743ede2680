"""SPDY/3 session over an upgraded connection (PROTOCOL.md 4), raw or tunnelled in WebSocket
binary messages (6.2), both roles.

Reads land in the decoder's buffer (BufferedProtocol). DATA payloads are memoryviews into that
buffer and go straight to a stream's sink (the relay's socket transport); the decoder is
released only when every sink that got a view has drained. Writes are synchronous on one
transport, so frames leave in call order (SYN_REPLY before DATA). Each DATA frame is one
gather write (raw) or one WS message (tunnel).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import Any

from fastpf import _frames as F
from fastpf._frames import RST_CANCEL, RST_PROTOCOL_ERROR, RST_REFUSED_STREAM
from fastpf._pump import SinkTable
from fastpf.errors import (
    ProtocolError,
    SessionClosedError,
    SpdySessionError,
    StreamResetError,
    StreamTimeoutError,
    WebSocketError,
)
from fastpf.limits import trim_soon
from fastpf.transport._base import WS_HEADER_ROOM, InboundQueue, Sink, UpgradedProtocol

DEFAULT_MAX_DATA = 256 * 1024
# Receive buffers hold two whole DATA frames of the default size (plus WS headers): such
# frames are received in place, never moved (see _FrameBuffer.get_buffer), and a full 256 KiB
# TLS read of smaller frames fits behind a partial one. Pages are committed only as written.
RECV_BUFFER = 2 * DEFAULT_MAX_DATA + 64
MAX_OUTSTANDING_PINGS = 64  # unanswered PINGs remembered (the oldest one always is)
# A session that upgraded must show a complete frame within this (kubectl pings every 5 s,
# 10 s tunnelled): the server drops sessions that never speak; a pinging client drops a
# server that never answers. Later silence is the idle timeout's business.
FIRST_FRAME_TIMEOUT = 30.0
SPDY_VERSION = 3
# Frames without header blocks need no compression state: one stateless encoder for all
# sessions. The zlib state of a header encoder (~90 KiB) is made on a session's first
# SYN_STREAM / SYN_REPLY, so idle sessions do not carry it.
_FRAMES = F.SpdyEncoder(header_level=1)


class SpdyStream:
    """One SPDY stream. Created by `SpdyConnection.open_stream` (client) or handed to the
    connection's `on_stream` callback (server; reply() or reset() it).

    Received data goes to the sink set by `set_sink` (the relay); without a sink it is
    buffered (copied) for `read()` / `read_all()`.
    """

    def __init__(
        self, conn: SpdyConnection, stream_id: int, headers: dict[str, str], local: bool
    ) -> None:
        self.connection = conn
        self.session = conn  # relay contract
        self.stream_id = stream_id
        self.headers = headers
        self.local = local  # opened by us
        self.replied = local  # SYN_REPLY state: ours to send (remote streams) or to wait for
        self.local_closed = False  # we sent FIN or RST
        self._fin_sent = False
        self.remote_closed = False  # peer sent FIN or RST, or the connection ended
        self.reset_status: int | None = None  # RST received
        self.error: BaseException | None = None  # connection loss
        self.sent = 0
        self.received = 0
        self._sink: Sink | None = None
        self._inbox = InboundQueue(conn)
        self._reply_waiter: asyncio.Future[None] | None = None

    # relay contract
    @property
    def header_room(self) -> int:
        return 8 + (WS_HEADER_ROOM if self.connection.ws else 0)

    @property
    def max_payload(self) -> int:
        return self.connection.max_data

    def __repr__(self) -> str:
        return f"<SpdyStream {self.stream_id} {self.headers}>"

    # -- sending -------------------------------------------------------------------------------
    def reply(self) -> None:
        """Send SYN_REPLY (server side; empty header block, as kubelet). Idempotent."""
        if self.replied or self.local_closed:
            return
        self.replied = True
        self.connection._write(self.connection._headers().syn_reply(self.stream_id))

    def reset(self, status: int = RST_CANCEL) -> None:
        """Send RST_STREAM(status) and forget the stream. Idempotent."""
        conn = self.connection
        if not (self.local_closed and self.remote_closed):
            conn._write(_FRAMES.rst_stream(self.stream_id, status))
        self.local_closed = True
        if not self.remote_closed:
            self.remote_closed = True
            conn._fast.discard(self.stream_id)
            self._wake()
        conn._forget(self)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send `data` as DATA frame(s) (split at the connection's max DATA size).
        After our own write_eof() this raises SessionClosedError; on a stream the peer reset
        or whose connection ended it is a silent no-op (like writing to a dead socket)."""
        if self.local_closed:
            if self._fin_sent:
                raise SessionClosedError("write after write_eof")
            return
        if not self.replied:
            self.reply()
        conn = self.connection
        view = memoryview(data).cast("B")
        step = conn.max_data
        for pos in range(0, len(view), step):
            chunk = view[pos : pos + step]
            conn._write_data(self.stream_id, 0, chunk)
            self.sent += len(chunk)

    def send_inplace(self, buf: bytearray, start: int, n: int) -> None:
        """Relay fast path: buf[start:start+n] is the payload and at least `header_room` bytes
        in front of it are free; the frame header(s) are packed there and sent in ONE write."""
        if self.local_closed:
            return
        if not self.replied:
            self.reply()
        conn = self.connection
        if conn._closing:
            return
        conn._touch()
        F.pack_data_header(buf, start - 8, self.stream_id, 0, n)
        if conn.ws is None:
            conn._emit(memoryview(buf)[start - 8 : start + n])
        else:
            conn._write_ws_inplace(buf, start - 8, start + n)
        self.sent += n

    def write_eof(self) -> None:
        """Send an empty DATA frame with FIN (half-close our side). Idempotent."""
        if self.local_closed:
            return
        if not self.replied:
            self.reply()
        self.local_closed = True
        self._fin_sent = True
        self.connection._write_data(self.stream_id, F.FLAG_FIN, b"")
        if self.remote_closed:
            self.connection._forget(self)

    # -- receiving -----------------------------------------------------------------------------
    def set_sink(self, sink: Sink | None) -> None:
        """Deliver received data to `sink` from now on (buffered data first)."""
        self._sink = sink
        fast = self.connection._fast
        core = getattr(sink, "pump", None)  # a relay: its DATA may take the compiled path
        if core is None or self.remote_closed:
            fast.discard(self.stream_id)
        else:
            fast.add(self.stream_id, core)
        if sink is None:
            return
        self._inbox.hand_to(sink)
        if self.remote_closed:
            if self.reset_status is not None:
                sink.reset_received(self.reset_status)
            elif self.error is not None:
                sink.connection_lost(self.error)
            else:
                sink.eof_received()

    async def read(self) -> bytes:
        """Next received chunk; b"" at FIN. Raises StreamResetError / SessionClosedError."""
        chunk = await self._inbox.pop(lambda: self.remote_closed)
        if chunk is None:
            self._raise_end()
            return b""
        return chunk

    async def read_all(self, limit: int = 65536) -> bytes:
        """Read until the peer's FIN, RST or connection loss; return at most `limit` bytes
        (an RST or a lost connection ends the text, it does not raise)."""
        out = bytearray()
        for _ in range(1 << 30):  # bounded: each pass consumes a chunk or ends
            try:
                chunk = await self.read()
            except (StreamResetError, SessionClosedError):
                break
            if not chunk:
                break
            if len(out) < limit:
                out += chunk[: limit - len(out)]
        return bytes(out)

    def _raise_end(self) -> None:
        if self.reset_status is not None:
            raise StreamResetError(status=self.reset_status)
        if self.error is not None:
            raise SessionClosedError(str(self.error) or "lost connection")

    def _wake(self) -> None:
        self._inbox.wake()

    def _on_data(self, view: memoryview, fin: int) -> None:
        if self.remote_closed:
            return  # after FIN/RST: dropped, as spdystream does
        n = len(view)
        if n:
            self.received += n
            sink = self._sink
            if sink is not None:
                self.connection._held.add(sink)
                try:
                    sink.data_received(view)
                except Exception:  # a broken sink costs this stream, not the session
                    self.reset()
                    return
            else:
                self._inbox.push(view)
        if fin:
            self.remote_closed = True
            self.connection._fast.discard(self.stream_id)
            if self._sink is not None:
                self._sink.eof_received()
            self._wake()
            if self.local_closed:
                self.connection._forget(self)

    def _on_reset(self, status: int) -> None:
        self.local_closed = True
        if self.remote_closed:
            return
        self.remote_closed = True
        self.connection._fast.discard(self.stream_id)
        self.reset_status = status
        rw = self._reply_waiter
        if rw is not None and not rw.done():
            rw.set_exception(StreamResetError(status=status))
        if self._sink is not None:
            self._sink.reset_received(status)
        self._wake()

    def _on_lost(self, exc: BaseException) -> None:
        rw = self._reply_waiter
        if rw is not None and not rw.done():
            rw.set_exception(SessionClosedError(str(exc) or "lost connection"))
        self.local_closed = True
        if self.remote_closed:
            return
        self.remote_closed = True
        self.connection._fast.discard(self.stream_id)
        self.error = exc
        if self._sink is not None:
            self._sink.connection_lost(exc)
        self._wake()


def _expire_replies(waiters: list[asyncio.Future[None] | None]) -> None:
    for w in waiters:
        if w is not None and not w.done():
            w.set_exception(StreamTimeoutError())


class SpdyConnection(UpgradedProtocol):
    """One upgraded connection speaking SPDY/3.

    client=True: our stream ids and ping ids are odd; we send PINGs every `ping_interval`
    (None: 5 s raw, 10 s tunnel, like kubectl; 0 disables). tunnel: None (raw SPDY),
    "ws-server" (we receive masked WS frames and send unmasked) or "ws-client" (the reverse).
    `idle_timeout` (seconds, server): GOAWAY and close after that long without frames.
    `on_stream(stream)`: called for each valid SYN_STREAM (server role; reply() or reset()
    it); without it, peer streams are refused. `max_data`: largest DATA payload we send
    (<= 16 MiB). `ping_timeout`: close when no PING reply for that long (None: never, as
    kubectl). `first_frame_timeout`: end the session when no complete frame arrived that long
    after the upgrade (server role; client role only when it pings); None: FIRST_FRAME_TIMEOUT,
    0 disables.

    `closed` is a future whose *result* is None (clean end) or the exception that ended the
    session; it never raises. `goaway_received` tells whether the peer sent GOAWAY.
    """

    def __init__(
        self,
        *,
        client: bool,
        tunnel: str | None = None,
        ping_interval: float | None = None,
        idle_timeout: float | None = None,
        max_data: int = DEFAULT_MAX_DATA,
        on_stream: Callable[[SpdyStream], None] | None = None,
        ping_timeout: float | None = None,
        write_high: int | None = None,
        write_low: int | None = None,
        first_frame_timeout: float | None = None,
    ) -> None:
        ws = {None: None, "ws-server": "server", "ws-client": "client"}[tunnel]
        kwargs: dict[str, Any] = {}
        if write_high is not None:
            kwargs["write_high"] = write_high
        if write_low is not None:
            kwargs["write_low"] = write_low
        super().__init__(ws=ws, idle_timeout=idle_timeout, **kwargs)
        if not 0 < max_data <= F.MAX_DATA_LENGTH:
            raise ValueError("max_data out of range")
        self.client = client
        self.tunnel = tunnel
        self.max_data = max_data
        self.on_stream = on_stream
        if ping_interval is None:
            ping_interval = (10.0 if tunnel else 5.0) if client else 0.0
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.streams: dict[int, SpdyStream] = {}
        # Made on first use (_headers). Client: level 6 (same block sizes as kubectl's 9, a
        # third of the CPU per stream); server: level 9, byte-identical to kubelet's replies.
        self._enc: F.SpdyEncoder | None = None
        # Tunnelled, the SPDY decoder's own buffer only holds frames split across messages.
        self._dec = F.SpdyDecoder(buffer_size=RECV_BUFFER if ws is None else DEFAULT_MAX_DATA)
        self._wsdec = (
            F.WsDecoder(expect_masked=(ws == "server"), buffer_size=RECV_BUFFER) if ws else None
        )
        self._held: set[Sink] = set()
        # Streams whose relay takes DATA straight from the receive buffer (F.deliver_data).
        self._fast = SinkTable()
        self._next_id = 1 if client else 2
        self._next_ping = 1 if client else 2
        self._parity = 1 if client else 0
        self._last_remote_id = 0
        self._ping_handle: asyncio.TimerHandle | None = None
        self._ping_outstanding: dict[int, float] = {}
        self.last_ping_rtt: float | None = None
        self.last_ping_reply: float | None = None  # loop.time() of the last answer to our PING
        self.goaway_received = False
        self._going_away = False
        self._forgotten = 0  # streams ended since the last trim_soon
        self.first_frame_timeout = (
            FIRST_FRAME_TIMEOUT if first_frame_timeout is None else first_frame_timeout
        )
        self._first_frame_handle: asyncio.TimerHandle | None = None

    # -- setup ---------------------------------------------------------------------------------
    def _attached(self) -> None:
        pings = bool(self.ping_interval and self.ping_interval > 0)
        if pings:
            self._ping_handle = self.loop.call_later(self.ping_interval, self._ping_tick)
        if self.first_frame_timeout and (pings or not self.client):
            self._first_frame_handle = self.loop.call_later(
                self.first_frame_timeout, self._no_first_frame
            )

    def _no_first_frame(self) -> None:
        self._first_frame_handle = None
        if self._closing:
            return
        if self.client:  # the server never answered our pings
            self._abort(TimeoutError(f"no frame from the server within {self.first_frame_timeout:g}s"))
        else:
            self.goaway(F.GOAWAY_OK)

    def busy(self) -> bool:
        return not self._closing and bool(self.streams)

    def _headers(self) -> F.SpdyEncoder:
        enc = self._enc
        if enc is None:
            enc = self._enc = F.SpdyEncoder(header_level=6 if self.client else 9)
        return enc

    def _feed(self, data: bytes) -> None:
        if self._wsdec is not None:
            self._wsdec.feed(data)
            self._drain_ws()
        else:
            self._dec.feed(data)
            self._drain_spdy()

    # -- reading -------------------------------------------------------------------------------
    def _maybe_release(self) -> None:
        held = self._held
        if held:
            for sink in held:
                if not sink.drained():
                    return
            held.clear()
        self._dec.release()  # first: it may still copy a partial frame out of the WS buffer
        if self._wsdec is not None:
            self._wsdec.release()

    def get_buffer(self, sizehint: int) -> memoryview:
        self._maybe_release()
        if self._wsdec is not None:
            return self._wsdec.get_buffer(sizehint)
        return self._dec.get_buffer(sizehint)

    def _on_data(self, nbytes: int) -> None:
        if self._wsdec is not None:
            self._wsdec.buffer_updated(nbytes)
            self._drain_ws()
        else:
            self._dec.buffer_updated(nbytes)
            self._drain_spdy()

    def _drain_ws(self) -> None:
        ws = self._wsdec
        assert ws is not None
        self._maybe_release()
        for _ in range(1 << 30):
            if self._closing:
                return
            frame = ws.next_frame()
            if frame is None:
                if ws.error is not None:
                    self._ws_protocol_error(ws.error)
                return
            op = frame.opcode
            if op == F.WS_CONT:
                op = frame.message_opcode
            if op == F.WS_BINARY:
                if len(frame.payload):
                    # Decoded where it lies (no copy): DATA views point into the WS buffer,
                    # released with the SPDY one once every sink drained (_maybe_release).
                    self._dec.feed_borrowed(frame.payload)
                    self._drain_spdy()
            elif op == F.WS_TEXT:
                # kubectl: "invalid message type received"
                self._ws_protocol_error(
                    WebSocketError("invalid message type received", close_code=1003)
                )
                return
            elif not self._handle_ws_control(frame):
                return

    def _drain_spdy(self) -> None:
        dec = self._dec
        fast = self._fast
        for _ in range(1 << 30):  # bounded by the bytes received
            if self._closing:
                return
            if fast:
                F.deliver_data(dec, fast)  # a run of plain DATA for relays, compiled
                if self._closing:
                    return
            try:
                frame = dec.next_frame()
            except ProtocolError as exc:
                self._spdy_protocol_error(exc)
                return
            if frame is None:
                if dec.error is not None:
                    self._spdy_protocol_error(dec.error)
                else:
                    pending = dec.pending_data_stream
                    if pending and pending not in self.streams and self._never_opened(pending):
                        self._unknown_stream(pending)
                return
            if self._first_frame_handle is not None:
                self._first_frame_handle.cancel()
                self._first_frame_handle = None
            ftype = frame.type
            if ftype == F.DATA:
                sid = frame.stream_id
                stream = self.streams.get(sid)
                if stream is not None:
                    stream._on_data(frame.payload, frame.flags & F.FLAG_FIN)  # type: ignore[arg-type]
                elif self._never_opened(sid):
                    self._unknown_stream(sid)
                    return
                # a stream that ended: dropped (spdystream logs and ignores)
            elif frame.version != SPDY_VERSION:
                # spdystream does not check; no real peer sends another version, and random
                # bytes read as a control frame are refused at once
                self._spdy_protocol_error(
                    SpdySessionError(f"SPDY control frame of version {frame.version}"))
                return
            elif ftype == F.SYN_STREAM:
                self._on_syn_stream(frame)
            elif ftype == F.SYN_REPLY:
                stream = self.streams.get(frame.stream_id)
                if stream is not None and stream._reply_waiter is not None:
                    if not stream._reply_waiter.done():
                        stream._reply_waiter.set_result(None)
                    if frame.flags & F.FLAG_FIN:
                        stream._on_data(memoryview(b""), 1)
            elif ftype == F.RST_STREAM:
                stream = self.streams.get(frame.stream_id)
                if stream is not None:
                    stream._on_reset(frame.status)
                    self._forget(stream)
            elif ftype == F.PING:
                self._on_ping(frame.ping_id)
            elif ftype == F.GOAWAY:
                self.goaway_received = True
                # spdystream stops reading at once and closes the session
                self._close_transport(None)
                return
            # SETTINGS, WINDOW_UPDATE, HEADERS: parsed and ignored (no flow control)

    def _never_opened(self, sid: int) -> bool:
        """True for a stream id no SYN_STREAM ever named (not one that ended)."""
        if sid & 1 == self._parity:
            return sid >= self._next_id
        return sid > self._last_remote_id

    def _unknown_stream(self, sid: int) -> None:
        # A peer that sends DATA for a stream never opened is broken or hostile (random bytes
        # after the upgrade read as DATA half the time): end the session now instead of
        # buffering up to 16 MiB of a frame nobody will take.
        self._spdy_protocol_error(SpdySessionError(f"SPDY DATA for stream {sid}, never opened"))

    def _on_syn_stream(self, frame: Any) -> None:
        sid = frame.stream_id
        if sid <= self._last_remote_id or sid & 1 == self._parity:
            self._write(_FRAMES.rst_stream(sid, RST_PROTOCOL_ERROR))
            return
        self._last_remote_id = sid
        if self._going_away or self.on_stream is None:
            self._write(_FRAMES.rst_stream(sid, RST_REFUSED_STREAM))
            return
        stream = SpdyStream(self, sid, dict(frame.headers or {}), local=False)
        self.streams[sid] = stream
        if frame.flags & F.FLAG_FIN:
            stream.remote_closed = True
        if frame.flags & F.FLAG_UNIDIRECTIONAL:
            stream.local_closed = True
        try:
            self.on_stream(stream)
        except Exception:
            stream.reset(RST_CANCEL)

    def _on_ping(self, ping_id: int) -> None:
        if ping_id & 1 != self._parity:
            self._write(_FRAMES.ping(ping_id))  # the peer's ping: echo it
            return
        sent = self._ping_outstanding.pop(ping_id, None)
        if sent is not None:
            self.last_ping_reply = self.loop.time()
            self.last_ping_rtt = self.last_ping_reply - sent

    # -- errors --------------------------------------------------------------------------------
    def _spdy_protocol_error(self, exc: BaseException) -> None:
        status = getattr(exc, "goaway_status", F.GOAWAY_PROTOCOL_ERROR)
        self._write(_FRAMES.goaway(self._last_remote_id, status))
        if self.ws is not None:
            self._send_ws_close(1002)
        self._close_transport(exc)

    def _ws_protocol_error(self, exc: BaseException) -> None:
        self._send_ws_close(getattr(exc, "close_code", 1002))
        self._close_transport(exc)

    def _internal_error(self, exc: BaseException) -> None:
        try:
            self._write(_FRAMES.goaway(self._last_remote_id, F.GOAWAY_INTERNAL_ERROR))
            if self.ws is not None:
                self._send_ws_close(1011)
        except Exception:
            pass
        self._close_transport(exc)

    # -- writing -------------------------------------------------------------------------------
    def _write_data(self, stream_id: int, flags: int, payload: bytes | memoryview) -> None:
        """One DATA frame: a single gather write (raw) or a single WS message (tunnel)."""
        if self._closing or self.transport is None:
            return
        self._touch()
        n = len(payload)
        header = F.data_header(stream_id, flags, n)
        if self.ws is None:
            if n:
                self._emit_parts([header, payload], 8 + n)
            else:
                self._emit(header)
        else:
            self._write_ws_parts([header, payload] if n else [header], 8 + n)

    def _forget(self, stream: SpdyStream) -> None:
        self._fast.discard(stream.stream_id)
        streams = self.streams
        if streams.get(stream.stream_id) is stream:
            del streams[stream.stream_id]
            self._forgotten += 1
            if not streams:  # a burst of connections ended: give the memory back
                trim_soon(self.loop, streams_ended=self._forgotten)
                self._forgotten = 0

    # -- public API ----------------------------------------------------------------------------
    async def open_stream(self, headers: dict[str, str], timeout: float = 30.0) -> SpdyStream:
        """SYN_STREAM with `headers`; wait for SYN_REPLY. Raises StreamTimeoutError
        ("Timeout occurred"; a TimeoutError), StreamResetError ("Stream reset") or
        SessionClosedError (a ConnectionError)."""
        stream = self.start_stream(headers)
        (failure,) = await self.wait_replies([stream], timeout)
        if failure is not None:
            raise failure
        return stream

    def start_stream(self, headers: dict[str, str]) -> SpdyStream:
        """Send SYN_STREAM with `headers` now; await its SYN_REPLY with wait_replies(), so
        several streams (kubectl's error + data pair) wait out one round trip together."""
        if self._closing or self._going_away:
            raise SessionClosedError("connection closed")
        sid = self._next_id
        if sid > 0x7FFFFFFF:
            raise SessionClosedError("stream ids exhausted")
        self._next_id += 2
        hdrs = {k.lower(): str(v) for k, v in headers.items()}
        stream = SpdyStream(self, sid, hdrs, local=True)
        stream._reply_waiter = self.loop.create_future()
        self.streams[sid] = stream
        self._write(self._headers().syn_stream(sid, hdrs))
        return stream

    async def wait_replies(
        self, streams: list[SpdyStream], timeout: float
    ) -> list[BaseException | None]:
        """Wait until every stream from start_stream() got its SYN_REPLY or failed; one timer
        and no task for all of them. Returns, per stream, None or why it failed
        (StreamTimeoutError, StreamResetError, SessionClosedError); a stream that timed out, or
        is left over when the caller is cancelled, is reset (CANCEL): no half-open streams."""
        waiters = [s._reply_waiter for s in streams]
        timer = self.loop.call_later(timeout, _expire_replies, waiters)
        try:
            for w in waiters:
                if w is not None and not w.done():
                    with contextlib.suppress(StreamTimeoutError, StreamResetError,
                                             SessionClosedError):
                        await w  # a plain future: no task; failures are read below
        except asyncio.CancelledError:
            for s, w in zip(streams, waiters, strict=True):
                s._reply_waiter = None
                if w is not None and w.done() and not w.cancelled():
                    w.exception()  # retrieved
                s.reset(RST_CANCEL)  # the caller never gets these streams
            raise
        finally:
            timer.cancel()
        failures: list[BaseException | None] = []
        for s, w in zip(streams, waiters, strict=True):
            s._reply_waiter = None
            exc = w.exception() if w is not None else SessionClosedError("connection closed")
            if isinstance(exc, StreamTimeoutError):
                s.reset(RST_CANCEL)
            elif exc is not None:
                self._forget(s)
            failures.append(exc)
        return failures

    def ping(self) -> int:
        """Send one PING now; returns its id."""
        pid = self._next_ping
        self._next_ping = pid + 2 if pid + 2 <= 0xFFFFFFFF else (1 if self.client else 2)
        outstanding = self._ping_outstanding
        if len(outstanding) >= MAX_OUTSTANDING_PINGS:
            # A peer that never answers must not grow the record, but its oldest timestamp is
            # what ping_timeout measures: drop the second oldest (dicts keep insertion order).
            del outstanding[next(itertools.islice(outstanding, 1, None))]
        outstanding[pid] = self.loop.time()
        self._write(_FRAMES.ping(pid))
        return pid

    def _ping_tick(self) -> None:
        self._ping_handle = None
        if self._closing:
            return
        if self.ping_timeout and self._ping_outstanding:
            oldest = min(self._ping_outstanding.values())
            if self.loop.time() - oldest > self.ping_timeout:
                self._abort(TimeoutError("ping timeout"))
                return
        self._safe(self.ping)
        self._ping_handle = self.loop.call_later(self.ping_interval, self._ping_tick)

    def goaway(self, status: int = 0, ws_close_code: int = 1000) -> None:
        """Send GOAWAY(last good id, status) (tunnel: then WS close) and close the connection."""
        if self._closing:
            return
        self._going_away = True
        self._write(_FRAMES.goaway(self._last_remote_id, status))
        if self.ws is not None:
            self._send_ws_close(ws_close_code)
        self._close_transport(None)

    def close(self) -> None:
        """Close without GOAWAY (flushes what was written)."""
        self._close_transport(None)

    def abort(self) -> None:
        self._abort(None)

    def _on_idle(self) -> None:
        self.goaway(F.GOAWAY_OK)

    def _peer_closed_ws(self, code: int | None) -> None:
        self._close_transport(
            None
            if code in (None, 1000, 1001)
            else ConnectionResetError(f"websocket closed ({code})")
        )

    def _ended(self, exc: BaseException | None) -> None:
        if self._ping_handle is not None:
            self._ping_handle.cancel()
            self._ping_handle = None
        if self._first_frame_handle is not None:
            self._first_frame_handle.cancel()
            self._first_frame_handle = None
        lost = exc if exc is not None else SessionClosedError("lost connection to pod")
        for stream in list(self.streams.values()):
            stream._on_lost(lost)
        self.streams.clear()
        self._held.clear()
        self._fast.clear()
        # The owner's callback refers back to it (kubelet's session holds this connection):
        # without the cycle, an ended session is freed at once, not at the next full GC.
        self.on_stream = None


__all__ = [
    "RST_CANCEL",
    "SessionClosedError",
    "SpdyConnection",
    "SpdySessionError",
    "SpdyStream",
    "StreamResetError",
    "StreamTimeoutError",
]
