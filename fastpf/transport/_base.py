"""What SPDY and channel sessions share: owning an upgraded transport (the asyncio adapter
around a sans-IO session), coalesced writes, input/output pause bookkeeping for the relays,
idle timeout, and an end-of-session future that never raises.

The relay contract (typed in fastpf.transport.contract: Pipe, Sink, SessionControl;
implemented by SpdyStream and PortChannel, consumed by relay.py):
  pipe.header_room           bytes to reserve in front of a payload for send_inplace()
  pipe.max_payload           largest payload per send_inplace()
  pipe.send_inplace(buf, start, n)  frame buf[start:start+n] using the gap in front; ONE write
  pipe.write(data) / write_eof() / reset(status)
  pipe.set_sink(sink)        where received data goes (see Sink)
  pipe.session               the UpgradedProtocol (pause_input/resume_input,
                             add/remove_output_listener, output_paused, output_drained())
A Sink has data_received(view), eof_received(), reset_received(status),
connection_lost(exc) and drained() -> bool (True when no view passed to data_received is
still referenced, i.e. its transport's write buffer is empty).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any

from fastpf import _frames as F
from fastpf.limits import track, trim_soon
from fastpf.transport.contract import Buffer, OutputListener, Sink
from fastpf.transport.ws_output import WS_HEADER_ROOM, WsOutput

# Upgraded transport write buffer: generous, since one DATA frame may be up to max_data.
WRITE_HIGH = 4 << 20
WRITE_LOW = 1 << 20
# Writes up to this size wait (in order) until the end of the loop iteration and leave as one
# write: many small frames (stream opens, replies, FINs, small DATA of many connections) then
# cost one TLS record and one syscall instead of one each. One TLS record holds 16 KiB.
COALESCE_LIMIT = 16 << 10
# Bytes a session writes because of what it reads (PING echoes, pongs, SYN_REPLYs, RSTs) while
# its output is over the high-water mark: past this it stops reading until the output drains.
# A peer flooding PINGs without reading the echoes is paused, not buffered (kubectl's pings
# are one per 5 s, so a real peer never comes near it).
REPLY_DEBT_LIMIT = 64 << 10
_REPLIES = "replies"  # pause_input key

__all__ = [
    "COALESCE_LIMIT",
    "REPLY_DEBT_LIMIT",
    "STREAM_BUFFER_LIMIT",
    "WRITE_HIGH",
    "WRITE_LOW",
    "WS_HEADER_ROOM",
    "InboundQueue",
    "OutputListener",
    "Sink",
    "TextCollector",
    "UpgradedProtocol",
]


STREAM_BUFFER_LIMIT = 1 << 20  # unread bytes of a sink-less stream before input pauses


class InboundQueue:
    """Bytes a SPDY stream or WS port channel received before anyone took them (no sink yet).

    Bounded without dropping a byte: past STREAM_BUFFER_LIMIT unread bytes the session stops
    reading its upgraded connection (pause_input keyed by this queue) until they are read or
    handed to a sink. Chunks are copied: the views point into the session's receive buffer.
    The deque exists only while chunks wait: most streams get a sink before any data, and two
    empty deques per stream cost 1.5 MiB per 1,000 forwarded connections. (No reference back
    to the stream or channel that owns it: a cycle would keep every ended stream until the
    next full garbage collection.)"""

    def __init__(self, connection: UpgradedProtocol) -> None:
        self._connection = connection
        self._chunks: deque[bytes] | None = None  # made by the first push
        self.buffered = 0  # unread bytes
        self._waiter: asyncio.Future[None] | None = None

    def push(self, view: memoryview) -> None:
        if self._chunks is None:
            self._chunks = deque()
        self._chunks.append(bytes(view))
        self.buffered += len(view)
        if self.buffered >= STREAM_BUFFER_LIMIT:
            self._connection.pause_input(self)
        self.wake()

    def hand_to(self, sink: Sink) -> None:
        """Deliver everything queued to `sink` (the owner sends later data there directly)."""
        chunks, self._chunks, self.buffered = self._chunks, None, 0
        self._connection.resume_input(self)
        for chunk in chunks or ():
            sink.data_received(memoryview(chunk))

    async def pop(self, ended: Callable[[], bool]) -> bytes | None:
        """The next queued chunk; None once `ended()` holds and nothing is left."""
        for _ in range(2):  # a wake-up brings a chunk or the end
            if self._chunks:
                chunk = self._chunks.popleft()
                self.buffered -= len(chunk)
                if self.buffered < STREAM_BUFFER_LIMIT:
                    self._connection.resume_input(self)
                return chunk
            if ended():
                return None
            self._waiter = self._connection.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return b""

    def wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)


class TextCollector:
    """Sink keeping what a stream sends (an error stream's text, up to `limit` bytes); `done`
    resolves with it at the stream's end (FIN, RST or connection loss). No task needed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = 65536) -> None:
        self.text = bytearray()
        self.limit = limit
        self.done: asyncio.Future[bytes] = loop.create_future()

    def data_received(self, view: memoryview) -> None:
        room = self.limit - len(self.text)
        if room > 0:
            self.text += view[:room]  # copied: the view points into a receive buffer

    def eof_received(self) -> None:
        self._end()

    def reset_received(self, status: int) -> None:
        self._end()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._end()

    def drained(self) -> bool:
        return True

    def _end(self) -> None:
        if not self.done.done():
            self.done.set_result(bytes(self.text))


class UpgradedProtocol(asyncio.BufferedProtocol):
    """Base of the session protocols. Subclasses implement get_buffer/_on_data/_on_eof."""

    def __init__(
        self,
        *,
        ws: str | None,
        idle_timeout: float | None = None,
        write_high: int = WRITE_HIGH,
        write_low: int = WRITE_LOW,
    ) -> None:
        if ws not in (None, "server", "client"):
            raise ValueError(f"bad ws role {ws!r}")
        self.loop = asyncio.get_running_loop()
        self.transport: Any = None
        self.ws = ws
        self._mask = ws == "client"  # RFC 6455: clients mask, servers must not
        self.closed: asyncio.Future[BaseException | None] = self.loop.create_future()
        self._closing = False
        self._input_pauses: set[object] = set()
        self._output_listeners: set[OutputListener] = set()
        self.output_paused = False
        self._write_high = write_high
        self._write_low = write_low
        self._idle_timeout = idle_timeout if idle_timeout and idle_timeout > 0 else None
        self._idle_handle: asyncio.TimerHandle | None = None
        self._last_activity = 0.0
        # WebSocket message writing (sans-IO), over our coalescing writes
        self._wsout = WsOutput(self._mask, self._emit, self._emit_parts) if ws else None
        self._pending: list[bytes] = []  # small writes waiting for _flush (COALESCE_LIMIT)
        self._pending_size = 0
        self._flush_handle: asyncio.Handle | None = None
        self.last_pong: float | None = None  # loop.time() of the last WebSocket pong
        self._written = 0  # bytes handed to _emit so far (reply accounting)
        self._reply_debt = 0
        track(self)  # fastpf.limits: no forced garbage collection while this forwards

    # -- taking over the transport -------------------------------------------------------------
    def attach(self, transport: asyncio.BaseTransport, initial: bytes = b"") -> None:
        """Take over `transport` (transport.set_protocol(self)); feed `initial` bytes first."""
        self.transport = transport
        with contextlib.suppress(AttributeError, NotImplementedError):
            transport.set_write_buffer_limits(high=self._write_high, low=self._write_low)  # type: ignore[attr-defined]
        transport.set_protocol(self)
        self._touch()
        if self._idle_timeout is not None:
            self._idle_handle = self.loop.call_later(self._idle_timeout, self._idle_check)
        self._attached()
        if initial:
            self._safe(self._feed, initial)
        if not self._closing:
            with contextlib.suppress(AttributeError, RuntimeError):
                transport.resume_reading()  # type: ignore[attr-defined]

    def _attached(self) -> None:
        """Hook: the transport is ours (send greetings, start timers)."""

    def busy(self) -> bool:
        """True while the session carries forwarded connections (a channel session is one)."""
        return not self._closing

    def _feed(self, data: bytes) -> None:
        """Hook: bytes that arrived before the takeover (after the 101 head)."""
        raise NotImplementedError

    # -- asyncio protocol callbacks: never raise into the loop ----------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # direct use (tests)
        if self.transport is None:
            self.attach(transport)

    def buffer_updated(self, nbytes: int) -> None:
        if self._closing:
            return
        self._touch()
        written = self._written
        self._safe(self._on_data, nbytes)
        if self.output_paused and self._written != written:
            self._replied(self._written - written)

    def _replied(self, n: int) -> None:
        """`n` bytes were written in answer to input while the output is over its high-water
        mark: past REPLY_DEBT_LIMIT, stop reading until the peer takes what we wrote."""
        self._reply_debt += n
        if self._reply_debt > REPLY_DEBT_LIMIT:
            self.pause_input(_REPLIES)

    def _on_data(self, nbytes: int) -> None:
        raise NotImplementedError

    def eof_received(self) -> bool | None:
        self._safe(self._on_eof)
        return False

    def _on_eof(self) -> None:
        self._finish(ConnectionResetError("connection closed by peer"))

    def connection_lost(self, exc: Exception | None) -> None:
        trim_soon(self.loop, session_ended=True)  # see fastpf.limits: memory goes back
        self._finish(exc if exc is not None else ConnectionResetError("connection closed"))

    def pause_writing(self) -> None:
        self.output_paused = True
        for listener in list(self._output_listeners):
            listener.pause_output()

    def resume_writing(self) -> None:
        self.output_paused = False
        self._reply_debt = 0
        self.resume_input(_REPLIES)
        for listener in list(self._output_listeners):
            listener.resume_output()

    def _safe(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # a bug or a peer we did not anticipate: drop this session only
            self._internal_error(exc)

    def _internal_error(self, exc: BaseException) -> None:
        self._abort(exc)

    # -- flow control for relays ---------------------------------------------------------------
    def add_output_listener(self, listener: OutputListener) -> None:
        self._output_listeners.add(listener)

    def remove_output_listener(self, listener: OutputListener) -> None:
        self._output_listeners.discard(listener)

    def output_drained(self) -> bool:
        t = self.transport
        return t is None or (not self._pending and t.get_write_buffer_size() == 0)

    def pause_input(self, key: object) -> None:
        """Stop reading the upgraded connection until every `key` that paused it resumed."""
        if key in self._input_pauses:
            return
        self._input_pauses.add(key)
        if len(self._input_pauses) == 1 and self.transport is not None and not self._closing:
            with contextlib.suppress(AttributeError, RuntimeError):
                self.transport.pause_reading()

    def resume_input(self, key: object) -> None:
        if key not in self._input_pauses:
            return
        self._input_pauses.discard(key)
        if not self._input_pauses and self.transport is not None and not self._closing:
            with contextlib.suppress(AttributeError, RuntimeError):
                self.transport.resume_reading()

    @property
    def input_paused(self) -> bool:
        return bool(self._input_pauses)

    # -- writing -------------------------------------------------------------------------------
    def _touch(self) -> None:
        if self._idle_timeout is not None:
            self._last_activity = self.loop.time()

    def emit(self, data: Buffer) -> None:
        """The sessions' output: complete wire bytes to the transport, in order. Small ones are
        coalesced (copied: the caller may reuse its buffer at once) and flushed at the end of
        this iteration. Any write is activity for the idle timeout."""
        if self._idle_timeout is not None:
            self._last_activity = self.loop.time()
        n = len(data)
        self._written += n
        if n > COALESCE_LIMIT:
            t = self.transport
            if t is None:
                return
            if self._pending:
                self._flush()
            t.write(data)
            return
        self._pending.append(data if type(data) is bytes else bytes(data))
        self._pending_size += n
        if self._pending_size >= COALESCE_LIMIT:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self._flush)

    def emit_parts(self, parts: list[Any], total: int) -> None:
        """Like emit for one frame given in pieces (gather write when large: no copy)."""
        if total > COALESCE_LIMIT:
            t = self.transport
            if t is None:
                return
            if self._idle_timeout is not None:
                self._last_activity = self.loop.time()
            self._written += total
            if self._pending:
                self._flush()
            t.writelines(parts)
            return
        self.emit(b"".join(parts))

    _emit = emit  # one call on the DATA path: the sessions call these directly
    _emit_parts = emit_parts

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        pending = self._pending
        if not pending:
            return
        self._pending = []
        self._pending_size = 0
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def ws_pong(self) -> None:
        """The session read a WebSocket pong."""
        self.last_pong = self.loop.time()

    def ws_ping(self, payload: bytes = b"") -> None:
        """Send a WebSocket ping (dead-peer detection above the session); the answer sets
        `last_pong` (loop.time()). No-op without a WebSocket or once closing."""
        if self._wsout is not None and not self._closing and not self._wsout.close_sent:
            self._wsout.message(F.WS_PING, payload)

    # -- idle timeout --------------------------------------------------------------------------
    def _idle_check(self) -> None:
        self._idle_handle = None
        if self._closing or self._idle_timeout is None:
            return
        remaining = self._last_activity + self._idle_timeout - self.loop.time()
        if remaining > 0:
            self._idle_handle = self.loop.call_later(remaining, self._idle_check)
            return
        self._safe(self._on_idle)

    def _on_idle(self) -> None:
        self._close_transport(TimeoutError("idle timeout"))

    # -- ending --------------------------------------------------------------------------------
    def _close_transport(self, exc: BaseException | None) -> None:
        """Flush what we wrote and close; the session ends with `exc` (None = clean)."""
        self._finish(exc)

    def fail(self, exc: BaseException) -> None:
        """End the session now with `exc` (e.g. a dead peer declared above the session):
        drop the connection without flushing; streams and channels see the loss."""
        self._abort(exc)

    def _abort(self, exc: BaseException | None) -> None:
        """Drop the connection without flushing."""
        t = self.transport
        if t is not None and not t.is_closing():
            t.abort()
        self._finish(exc)

    def _finish(self, exc: BaseException | None) -> None:
        """End the session once: stop timers, tell subclasses, resolve `closed`, close the
        transport (flushing what was written, e.g. a GOAWAY or WS close)."""
        if self._closing:
            return
        self._closing = True
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        self._output_listeners.clear()
        try:
            self._ended(exc)
        finally:
            if not self.closed.done():
                self.closed.set_result(exc)
            t = self.transport
            if t is not None and not t.is_closing():
                self._flush()  # e.g. a GOAWAY or WS close written just before
                t.close()
            elif self._flush_handle is not None:
                self._flush_handle.cancel()
                self._flush_handle = None

    def _ended(self, exc: BaseException | None) -> None:
        """Hook: the session ended (streams/channels learn it here)."""

    async def wait_closed(self) -> BaseException | None:
        """Wait until the session ended; returns what ended it (None = clean), never raises."""
        return await asyncio.shield(self.closed)

    @property
    def is_closing(self) -> bool:
        return self._closing
