"""Sans-IO SPDY/3 session (PROTOCOL.md 4), raw or tunnelled in WebSocket binary messages (6.2),
shared by both roles. Bytes in (`get_buffer`/`buffer_updated`, `feed`), frames out through the
owner's `emit`/`emit_parts`, events to the owner and to each stream's sink. No loop, no timers,
no futures: the owner (spdy.SpdyConnection, the asyncio adapter) keeps those and asks the
session for its decisions (`ping_overdue`, `got_frame`).

Every stream's lifecycle is the table in stream_machine: `_step(stream, input)` applies it.
DATA goes through ONE method, `_deliver_data(stream, view, fin)`, so a compiled drain can take
over a run of DATA frames later. DATA payloads are views into the decoder's buffer handed to
the sink as they are; the decoder is released only when every sink that got one drained.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from fastpf import _frames as F
from fastpf._frames import RST_CANCEL, RST_REFUSED_STREAM
from fastpf._pump import SinkTable
from fastpf.errors import (
    ProtocolError,
    SessionClosedError,
    SpdySessionError,
    StreamResetError,
    WebSocketError,
)
from fastpf.transport._base import InboundQueue
from fastpf.transport.contract import Buffer, SessionControl, Sink
from fastpf.transport.stream_machine import (
    DELIVERS,
    LOCAL_CLOSED,
    REMOTE_CLOSED,
    ROWS,
    Action,
    StreamInput,
    StreamState,
    StreamStateError,
)
from fastpf.transport.ws_output import WS_HEADER_ROOM, WsOutput, close_outcome

if TYPE_CHECKING:
    from fastpf.transport.spdy import SpdyConnection

DEFAULT_MAX_DATA = 256 * 1024
# Receive buffers hold two whole DATA frames of the default size (plus WS headers): such
# frames are received in place, never moved, and a full 256 KiB TLS read of smaller frames
# fits behind a partial one. Pages are committed only as written.
RECV_BUFFER = 2 * DEFAULT_MAX_DATA + 64
MAX_OUTSTANDING_PINGS = 64  # unanswered PINGs remembered (the oldest one always is)
SPDY_VERSION = 3
# Frames without header blocks need no compression state: one stateless encoder for all
# sessions. The zlib state of a header encoder (~90 KiB) is made on a session's first
# SYN_STREAM / SYN_REPLY, so idle sessions do not carry it.
_FRAMES = F.SpdyEncoder(header_level=1)

_ST = StreamInput
_OK = Action.OK
_DATA = F.DATA
_FIN = F.FLAG_FIN


class SpdyOwner(Protocol):
    """What a session needs from its owner. The asyncio adapter is one; tests use a recorder."""

    def emit(self, data: Buffer) -> None:
        """Complete wire bytes, in call order."""

    def emit_parts(self, parts: list[Any], total: int) -> None:
        """One frame given in pieces (a gather write when large)."""

    def end(self, exc: BaseException | None) -> None:
        """The session is over (flush what was emitted, then close); the owner then calls
        `connection_lost(exc)` (the session does it itself if the owner did not)."""

    def reply_settled(self, stream: SessionStream, failure: BaseException | None) -> None:
        """A stream we opened got its SYN_REPLY (None) or will never get one."""

    def ws_pong(self) -> None:
        """A WebSocket pong arrived (tunnel)."""

    def streams_ended(self, count: int) -> None:
        """The last live stream ended (`count` since the last call): memory may go back."""

    def pause_input(self, key: object) -> None: ...
    def resume_input(self, key: object) -> None: ...


class SessionStream:
    """One SPDY stream, sans-IO: `state` is a stream_machine.StreamState and every change
    goes through the session's table. Made by `SpdySession.start_stream` (ours) or handed to
    `on_stream` (the peer's; reply() or reset() it). spdy.SessionStream adds the awaitable
    reads. Received data goes to the sink set by `set_sink` (the relay); without a sink it
    is buffered (copied, bounded: see InboundQueue)."""

    def __init__(
        self,
        core: SpdySession | SpdyConnection,
        stream_id: int,
        headers: dict[str, str],
        local: bool,
        uni: bool = False,
    ) -> None:
        if not isinstance(core, SpdySession):
            core = core.core  # given the adapter
        self.core = core
        owner = core.owner
        self.connection: SpdyConnection = owner  # type: ignore[assignment]
        # relay contract: the adapter (pause_input, output listeners)
        self.session: SessionControl = owner  # type: ignore[assignment]
        self.stream_id = stream_id
        self.headers = headers
        self.local = local  # opened by us
        # Making a stream is its SYN_STREAM, sent (local) or received: the table's first step.
        opened_by = (
            _ST.SEND_SYN_STREAM
            if local
            else _ST.RECV_SYN_STREAM_UNI
            if uni
            else _ST.RECV_SYN_STREAM
        )
        first = ROWS[StreamState.IDLE][opened_by]
        if first.action is not Action.OK:
            raise StreamStateError(f"{opened_by.name} cannot open a stream")
        self.state = first.next
        self.reset_status: int | None = None  # why it ended: RST received ...
        self.error: BaseException | None = None  # ... or the connection ended
        self.sent = 0
        self.received = 0
        self._sink: Sink | None = None
        self._inbox = InboundQueue(owner)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<SessionStream {self.stream_id} {self.state.name} {self.headers}>"

    # -- what the lifecycle says (read-only views of `state`) ----------------------------------
    @property
    def local_closed(self) -> bool:
        """We sent FIN or RST, or the stream ended."""
        return self.state in LOCAL_CLOSED

    @property
    def remote_closed(self) -> bool:
        """The peer sent FIN or RST, or the stream ended."""
        return self.state in REMOTE_CLOSED

    @property
    def replied(self) -> bool:
        return self.state not in (StreamState.REPLY_DUE, StreamState.REPLY_DUE_REMOTE_FIN)

    # relay contract
    @property
    def header_room(self) -> int:
        return 8 + (WS_HEADER_ROOM if self.core.ws else 0)

    @property
    def max_payload(self) -> int:
        return self.core.max_data

    # -- sending -------------------------------------------------------------------------------
    def reply(self) -> None:
        """Send SYN_REPLY (server side; empty header block, as kubelet). Idempotent."""
        self.core._step(self, _ST.SEND_SYN_REPLY)

    def reset(self, status: int = RST_CANCEL) -> None:
        """Send RST_STREAM(status) and forget the stream. Idempotent."""
        self.core._step(self, _ST.SEND_RST, status)

    def write(self, data: Buffer) -> None:
        """Send `data` as DATA frame(s) (split at the session's max DATA size).
        After our own write_eof() this raises SessionClosedError; on a stream the peer reset
        or whose connection ended it is a silent no-op (like writing to a dead socket)."""
        core = self.core
        if not core._step(self, _ST.SEND_DATA):
            return
        view = memoryview(data).cast("B")
        step = core.max_data
        for pos in range(0, len(view), step):
            chunk = view[pos : pos + step]
            core._data_frame(self.stream_id, 0, chunk)
            self.sent += len(chunk)

    def send_inplace(self, buf: bytearray, start: int, n: int) -> None:
        """Relay fast path: buf[start:start+n] is the payload and at least `header_room` bytes
        in front of it are free; the frame header(s) are packed there and sent in ONE write."""
        core = self.core
        if self.state not in _SEND_OK:
            # REPLY_FIRST replies, then sends; the relay's fast path never raises: after our
            # FIN (MISUSE for write()) or once ended (NOOP) the bytes are dropped silently.
            if ROWS[self.state][_ST.SEND_DATA].action is not Action.REPLY_FIRST:
                return
            core._step(self, _ST.SEND_DATA)
        if core.ended:
            return
        F.pack_data_header(buf, start - 8, self.stream_id, 0, n)
        ws = core._ws
        if ws is None:
            core.owner.emit(memoryview(buf)[start - 8 : start + n])
        else:
            ws.binary_inplace(buf, start - 8, start + n)
        self.sent += n

    def write_eof(self) -> None:
        """Send an empty DATA frame with FIN (half-close our side). Idempotent."""
        self.core._step(self, _ST.SEND_FIN)

    # -- receiving -----------------------------------------------------------------------------
    def set_sink(self, sink: Sink | None) -> None:
        """Deliver received data to `sink` from now on (buffered data first)."""
        self._sink = sink
        self.core.route(self)
        if sink is None:
            return
        self._inbox.hand_to(sink)
        if self.state in REMOTE_CLOSED:
            if self.reset_status is not None:
                sink.reset_received(self.reset_status)
            elif self.error is not None:
                sink.connection_lost(self.error)
            else:
                sink.eof_received()


# States in which send_inplace may go straight to the wire (the table says OK for SEND_DATA).
_SEND_OK = frozenset(s for s in StreamState if ROWS[s][_ST.SEND_DATA].action is Action.OK)


class SpdySession:
    """The SPDY/3 protocol state of one upgraded connection, both roles.

    client=True: our stream ids and ping ids are odd. ws: None (raw SPDY) or the WsOutput of
    the WebSocket tunnel (its `mask` tells the role: a client masks, a server does not).
    `on_stream(stream)` takes each valid SYN_STREAM (server role); without it, peer streams
    are refused. `max_data`: largest DATA payload we send. `clock()`: seconds, for the ping
    record. `stream_class`: what streams are made as (the adapter's adds awaitable reads).
    """

    def __init__(
        self,
        owner: SpdyOwner,
        *,
        client: bool,
        ws: WsOutput | None = None,
        max_data: int = DEFAULT_MAX_DATA,
        on_stream: Callable[[SessionStream], None] | None = None,
        clock: Callable[[], float],
        stream_class: type[SessionStream] = SessionStream,
    ) -> None:
        if not 0 < max_data <= F.MAX_DATA_LENGTH:
            raise ValueError("max_data out of range")
        self.owner = owner
        self.client = client
        self.ws = ws
        self.max_data = max_data
        self.on_stream = on_stream
        self.clock = clock
        self.stream_class = stream_class
        self.streams: dict[int, SessionStream] = {}
        # Made on first use (_headers). Client: level 6 (same block sizes as kubectl's 9, a
        # third of the CPU per stream); server: level 9, byte-identical to kubelet's replies.
        self._enc: F.SpdyEncoder | None = None
        # Tunnelled, the SPDY decoder's own buffer only holds frames split across messages.
        self._dec = F.SpdyDecoder(buffer_size=RECV_BUFFER if ws is None else DEFAULT_MAX_DATA)
        # A client masks what it sends and receives plain frames; a server the reverse.
        self._wsdec = (
            F.WsDecoder(expect_masked=not ws.mask, buffer_size=RECV_BUFFER) if ws else None
        )
        self._ws = ws
        self._held: set[Sink] = set()  # sinks that got a view since the last release
        # Streams whose relay takes plain DATA straight from the receive buffer (compiled:
        # F.deliver_data); a stream is in it only while the table says DELIVERS.
        self.fast = SinkTable()
        self._next_id = 1 if client else 2
        self._next_ping = 1 if client else 2
        self._parity = 1 if client else 0
        self._last_remote_id = 0
        self._ping_outstanding: dict[int, float] = {}
        self.last_ping_rtt: float | None = None
        self.last_ping_reply: float | None = None  # clock() of the last answer to our PING
        self.goaway_received = False
        self.going_away = False
        self.got_frame = False  # a complete frame arrived (first-frame timeout)
        self.ended = False
        self._forgotten = 0  # streams ended since the last streams_ended()

    # -- the table -----------------------------------------------------------------------------
    def _step(self, stream: SessionStream, event: StreamInput, status: int = 0) -> bool:
        """Apply the table to `stream` for `event` and carry out its action. Returns True when
        the caller should go on with the input (send the data / deliver what arrived)."""
        t = ROWS[stream.state][event]
        action = t.action
        if action is Action.MISUSE:
            raise SessionClosedError("write after write_eof")
        if action is Action.BUG:
            raise StreamStateError(f"{event.name} on a stream in state {stream.state.name}")
        if action is Action.DROP or action is Action.NOOP:
            return False
        if action is Action.RST:  # a SYN_STREAM whose id is not new (only reached by ids)
            self._frame(_FRAMES.rst_stream(stream.stream_id, t.status))
            return False
        if action is Action.GOAWAY:
            # A peer that sends DATA for a stream never opened is broken or hostile (random
            # bytes after the upgrade read as DATA half the time): end the session now instead
            # of buffering up to 16 MiB of a frame nobody will take.
            self._protocol_error(
                SpdySessionError(
                    f"SPDY {event.name} for stream {stream.stream_id}, never opened", t.status
                )
            )
            return False
        old = stream.state
        stream.state = t.next
        if t.next not in DELIVERS:
            self.fast.discard(stream.stream_id)
        elif old not in DELIVERS and stream._sink is not None:
            self.route(stream)
        if action is Action.REPLY_FIRST:
            self._frame(self._headers().syn_reply(stream.stream_id))
        if event is _ST.SEND_SYN_REPLY:
            self._frame(self._headers().syn_reply(stream.stream_id))
        elif event is _ST.SEND_FIN:
            self._data_frame(stream.stream_id, _FIN, b"")
        elif event is _ST.SEND_RST:
            self._frame(_FRAMES.rst_stream(stream.stream_id, status))
            if old not in REMOTE_CLOSED:
                stream._inbox.wake()
        elif event is _ST.RECV_SYN_REPLY:
            self.owner.reply_settled(stream, None)
        elif event is _ST.RECV_RST:
            self._ended_by(stream, action, status, None)
        elif event is _ST.RECV_FIN:
            sink = stream._sink
            if sink is not None:
                sink.eof_received()
            stream._inbox.wake()
        elif event >= _ST.SEND_GOAWAY:  # SEND_GOAWAY, RECV_GOAWAY, CONNECTION_LOST
            return True  # connection_lost tells the stream
        if t.next is StreamState.CLOSED:
            self._forget(stream)
        return True

    def _ended_by(
        self, stream: SessionStream, action: Action, status: int, exc: BaseException | None
    ) -> None:
        """The stream ended by the peer's RST(status) or the loss `exc` of the connection."""
        if stream.local:  # its opener may still wait for the SYN_REPLY
            failure = (
                StreamResetError(status=status)
                if exc is None
                else SessionClosedError(str(exc) or "lost connection")
            )
            self.owner.reply_settled(stream, failure)
        if action is not Action.RESET:
            return  # QUIET: the reader already saw the peer's FIN
        if exc is None:
            stream.reset_status = status
        else:
            stream.error = exc
        sink = stream._sink
        if sink is not None:
            if exc is None:
                sink.reset_received(status)
            else:
                sink.connection_lost(exc)
        stream._inbox.wake()

    # -- streams we open -----------------------------------------------------------------------
    def start_stream(self, headers: dict[str, str]) -> SessionStream:
        """Send SYN_STREAM with `headers` now (the adapter waits for the SYN_REPLY)."""
        if self.ended or self.going_away:
            raise SessionClosedError("connection closed")
        sid = self._next_id
        if sid > 0x7FFFFFFF:
            raise SessionClosedError("stream ids exhausted")
        self._next_id += 2
        hdrs = {k.lower(): str(v) for k, v in headers.items()}
        stream = self.stream_class(self, sid, hdrs, local=True)  # IDLE -> AWAIT_REPLY
        self.streams[sid] = stream
        self._frame(self._headers().syn_stream(sid, hdrs))
        return stream

    # -- input ---------------------------------------------------------------------------------
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

    def buffer_updated(self, nbytes: int) -> None:
        if self._wsdec is not None:
            self._wsdec.buffer_updated(nbytes)
            self._drain_ws()
        else:
            self._dec.buffer_updated(nbytes)
            self._drain_spdy()

    def feed(self, data: Buffer) -> None:
        """Bytes that are not in our buffer yet (e.g. read before the takeover); copied."""
        if self._wsdec is not None:
            self._wsdec.feed(data)
            self._drain_ws()
        else:
            self._dec.feed(data)
            self._drain_spdy()

    def _drain_ws(self) -> None:
        ws = self._wsdec
        out = self._ws
        assert ws is not None and out is not None  # tunnelled: both WS halves exist
        self._maybe_release()
        for _ in range(1 << 30):
            if self.ended:
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
            elif out.answer_control(op, frame.payload, self.owner.ws_pong):
                self._end(close_outcome(out.peer_close_code))
                return

    def _drain_spdy(self) -> None:
        dec = self._dec
        fast = self.fast
        streams = self.streams
        deliver = self._deliver_data
        for _ in range(1 << 30):  # bounded by the bytes received
            if self.ended:
                return
            if fast:
                F.deliver_data(dec, fast)  # the run of plain DATA for relays, compiled
                if self.ended:
                    return
            try:
                frame = dec.next_frame()
            except ProtocolError as exc:
                self._protocol_error(exc)
                return
            if frame is None:
                if dec.error is not None:
                    self._protocol_error(dec.error)
                else:
                    pending = dec.pending_data_stream
                    if pending and pending not in streams:
                        # checked on the frame header, before a payload of up to 16 MiB
                        self._step(self._ghost(pending), _ST.RECV_DATA)
                return
            self.got_frame = True
            if frame.type == _DATA:
                sid = frame.stream_id
                stream = streams.get(sid)
                if stream is None:
                    stream = self._ghost(sid)
                deliver(stream, frame.payload, frame.flags & _FIN)  # type: ignore[arg-type]
            else:
                self._control(frame)

    def _deliver_data(self, stream: SessionStream, view: memoryview, fin: int) -> None:
        """The DATA path, one frame: the table's RECV_DATA (then RECV_FIN) decision for the
        stream, the payload to its sink (or its buffer). Nothing is allocated here."""
        n = len(view)
        if stream.state in DELIVERS:
            if n:
                stream.received += n
                sink = stream._sink
                if sink is not None:
                    self._held.add(sink)
                    try:
                        sink.data_received(view)
                    except Exception:  # a broken sink costs this stream, not the session
                        stream.reset()
                        return
                else:
                    stream._inbox.push(view)
        elif not fin or n:
            self._step(stream, _ST.RECV_DATA)  # DROP or GOAWAY, as the table says
            if self.ended:
                return
        if fin:
            self._step(stream, _ST.RECV_FIN)

    def _ghost(self, sid: int) -> SessionStream:
        """A stand-in for an id with no live stream: IDLE if no SYN_STREAM ever named it,
        else CLOSED (it ended). Never stored."""
        ghost = _Ghost(self, sid)
        if not self._never_opened(sid):
            ghost.state = StreamState.CLOSED
        return ghost

    def _never_opened(self, sid: int) -> bool:
        """True for a stream id no SYN_STREAM ever named (not one that ended)."""
        if sid & 1 == self._parity:
            return sid >= self._next_id
        return sid > self._last_remote_id

    def _control(self, frame: Any) -> None:
        if frame.version != SPDY_VERSION:
            # spdystream does not check; no real peer sends another version, and random
            # bytes read as a control frame are refused at once
            self._protocol_error(SpdySessionError(f"SPDY control frame of version {frame.version}"))
            return
        ftype = frame.type
        if ftype == F.SYN_STREAM:
            self._on_syn_stream(frame)
        elif ftype == F.SYN_REPLY:
            stream = self._lookup(frame.stream_id)
            if self._step(stream, _ST.RECV_SYN_REPLY) and frame.flags & _FIN:
                self._step(stream, _ST.RECV_FIN)
        elif ftype == F.RST_STREAM:
            self._step(self._lookup(frame.stream_id), _ST.RECV_RST, frame.status)
        elif ftype == F.PING:
            self._on_ping(frame.ping_id)
        elif ftype == F.GOAWAY:
            self.goaway_received = True
            # spdystream stops reading at once and closes the session
            self._end(None)
        elif ftype == F.HEADERS:
            self._step(self._lookup(frame.stream_id), _ST.RECV_HEADERS)
        elif ftype == F.WINDOW_UPDATE:
            self._step(self._lookup(frame.stream_id), _ST.RECV_WINDOW_UPDATE)
        # SETTINGS: parsed and ignored (no flow control)

    def _lookup(self, sid: int) -> SessionStream:
        stream = self.streams.get(sid)
        return stream if stream is not None else self._ghost(sid)

    def _on_syn_stream(self, frame: Any) -> None:
        sid = frame.stream_id
        uni = frame.flags & F.FLAG_UNIDIRECTIONAL
        event = _ST.RECV_SYN_STREAM_UNI if uni else _ST.RECV_SYN_STREAM
        if sid <= self._last_remote_id or sid & 1 == self._parity:
            # not a new id for the peer: looked up as what it is (a live stream or CLOSED)
            live = self.streams.get(sid)
            ghost = live if live is not None else _Ghost(self, sid)
            if live is None:
                ghost.state = StreamState.CLOSED
            self._step(ghost, event)
            return
        self._last_remote_id = sid
        if self.going_away or self.on_stream is None:
            self._frame(_FRAMES.rst_stream(sid, RST_REFUSED_STREAM))
            return
        # IDLE -> REPLY_DUE (HALF_CLOSED_LOCAL when unidirectional)
        stream = self.stream_class(self, sid, dict(frame.headers or {}), local=False, uni=bool(uni))
        self.streams[sid] = stream
        if frame.flags & _FIN:
            self._step(stream, _ST.RECV_FIN)
        try:
            self.on_stream(stream)
        except Exception:
            stream.reset(RST_CANCEL)

    # -- pings ---------------------------------------------------------------------------------
    def _on_ping(self, ping_id: int) -> None:
        if ping_id & 1 != self._parity:
            self._frame(_FRAMES.ping(ping_id))  # the peer's ping: echo it
            return
        sent = self._ping_outstanding.pop(ping_id, None)
        if sent is not None:
            self.last_ping_reply = now = self.clock()
            self.last_ping_rtt = now - sent

    def ping(self) -> int:
        """Send one PING now; returns its id."""
        pid = self._next_ping
        self._next_ping = pid + 2 if pid + 2 <= 0xFFFFFFFF else (1 if self.client else 2)
        outstanding = self._ping_outstanding
        if len(outstanding) >= MAX_OUTSTANDING_PINGS:
            # A peer that never answers must not grow the record, but its oldest timestamp is
            # what ping_timeout measures: drop the second oldest (dicts keep insertion order).
            del outstanding[next(itertools.islice(outstanding, 1, None))]
        outstanding[pid] = self.clock()
        self._frame(_FRAMES.ping(pid))
        return pid

    def ping_overdue(self, timeout: float | None) -> bool:
        """True when our oldest unanswered PING is older than `timeout` (None/0: never)."""
        if not timeout or not self._ping_outstanding:
            return False
        return self.clock() - min(self._ping_outstanding.values()) > timeout

    # -- writing -------------------------------------------------------------------------------
    def _headers(self) -> F.SpdyEncoder:
        enc = self._enc
        if enc is None:
            enc = self._enc = F.SpdyEncoder(header_level=6 if self.client else 9)
        return enc

    def _frame(self, data: bytes) -> None:
        """One complete control frame (wrapped in a WS message when tunnelled)."""
        if self.ended:
            return
        ws = self._ws
        if ws is None:
            self.owner.emit(data)
        else:
            ws.message(F.WS_BINARY, data)

    def _data_frame(self, stream_id: int, flags: int, payload: Buffer) -> None:
        """One DATA frame: a single gather write (raw) or a single WS message (tunnel)."""
        if self.ended:
            return
        n = len(payload)
        header = F.data_header(stream_id, flags, n)
        ws = self._ws
        if ws is None:
            if n:
                self.owner.emit_parts([header, payload], 8 + n)
            else:
                self.owner.emit(header)
        else:
            ws.binary_parts([header, payload] if n else [header], 8 + n)

    def _ws_close(self, code: int) -> None:
        if self._ws is not None:
            self._ws.close(code)

    # -- ending --------------------------------------------------------------------------------
    def goaway(self, status: int = 0, ws_close_code: int = 1000) -> None:
        """Send GOAWAY(last good id, status) (tunnel: then WS close) and end the session."""
        if self.ended:
            return
        self.going_away = True
        self._frame(_FRAMES.goaway(self._last_remote_id, status))
        self._ws_close(ws_close_code)
        self._end(None)

    def _protocol_error(self, exc: BaseException) -> None:
        status = getattr(exc, "goaway_status", F.GOAWAY_PROTOCOL_ERROR)
        self._frame(_FRAMES.goaway(self._last_remote_id, status))
        self._ws_close(1002)
        self._end(exc)

    def _ws_protocol_error(self, exc: BaseException) -> None:
        self._ws_close(getattr(exc, "close_code", 1002))
        self._end(exc)

    def internal_error(self) -> None:
        """A bug or an unexpected peer: GOAWAY(INTERNAL_ERROR) (tunnel: WS close 1011); the
        owner ends the session."""
        try:
            self._frame(_FRAMES.goaway(self._last_remote_id, F.GOAWAY_INTERNAL_ERROR))
            self._ws_close(1011)
        except Exception:
            pass

    def _end(self, exc: BaseException | None) -> None:
        self.owner.end(exc)
        if not self.ended:
            self.connection_lost(exc)

    def connection_lost(self, exc: BaseException | None) -> None:
        """The connection ended (`exc` None: cleanly): every stream learns it."""
        if self.ended:
            return
        self.ended = True
        if self.going_away:
            event = _ST.SEND_GOAWAY
        elif self.goaway_received:
            event = _ST.RECV_GOAWAY
        else:
            event = _ST.CONNECTION_LOST
        lost = exc if exc is not None else SessionClosedError("lost connection to pod")
        for stream in list(self.streams.values()):
            t = ROWS[stream.state][event]
            stream.state = t.next
            if t.action is Action.RESET or t.action is Action.QUIET:
                self._ended_by(stream, t.action, 0, lost)
        self.streams.clear()
        self._held.clear()
        self.fast.clear()
        # The owner's callback refers back to it (kubelet's session holds its connection):
        # without the cycle, an ended session is freed at once, not at the next full GC.
        self.on_stream = None

    def route(self, stream: SessionStream) -> None:
        """Put `stream` in the compiled DATA path when its sink is a relay's pump (`.pump`)
        and the table lets it receive; else take it out."""
        pump = getattr(stream._sink, "pump", None)
        live = self.streams.get(stream.stream_id) is stream
        if pump is not None and live and stream.state in DELIVERS:
            self.fast.add(stream.stream_id, pump)
        else:
            self.fast.discard(stream.stream_id)

    def _forget(self, stream: SessionStream) -> None:
        self.fast.discard(stream.stream_id)
        streams = self.streams
        if streams.get(stream.stream_id) is stream:
            del streams[stream.stream_id]
            self._forgotten += 1
            if not streams:  # a burst of connections ended: give the memory back
                self.owner.streams_ended(self._forgotten)
                self._forgotten = 0

    def busy(self) -> bool:
        return not self.ended and bool(self.streams)


class _Ghost(SessionStream):
    """What the table sees for an id without a live stream (never stored, no buffer)."""

    def __init__(self, core: SpdySession, stream_id: int) -> None:  # no buffer, no sink
        self.core = core
        self.stream_id = stream_id
        self.local = False
        self.state = StreamState.IDLE
        self._sink = None


__all__ = [
    "DEFAULT_MAX_DATA",
    "MAX_OUTSTANDING_PINGS",
    "RECV_BUFFER",
    "SpdyOwner",
    "SpdySession",
    "SessionStream",
]
