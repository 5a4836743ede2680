"""TCP socket <-> SPDY stream / WS port channel pump: zero-copy, half-close, backpressure.

Local -> remote: the socket reads (BufferedProtocol) into a buffer with `header_room` bytes
reserved in front, so the stream packs its frame header(s) in place and sends header + payload
in ONE write without copying. A buffer is reused only once no memoryview of it is alive any more
(uvloop holds written memoryviews until sent; a TLS transport encrypts at once and holds
nothing): the bytearray's export count is the exact test. A few spare
buffers are kept so a busy transport does not cost a fresh zero-filled allocation per read.

Remote -> local: the session hands us memoryviews into its receive buffer; we write them to
the socket transport as they are. The session releases its buffer only when `drained()`.

Backpressure (SPDY has no flow control): the socket transport's pause_writing pauses reading
of the whole upgraded connection; the upgraded transport's pause_writing pauses every local
reader. Both resume on drain, so memory stays bounded by the high-water marks.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
from dataclasses import dataclass
from typing import Any

from fastpf import _frames as F
from fastpf._frames import RST_CANCEL

LOCAL_HIGH = 1 << 20  # socket write buffer above which the upgraded connection stops reading
LOCAL_LOW = 256 << 10
DEFAULT_READ_SIZE = 256 * 1024
SPARE_BUFFERS = 3  # per relay: reusable read buffers besides the current one
# Under an `eof_budget` every frame counts, so reads are gathered into whole-buffer frames and
# held at most this long before they leave.
BUDGET_HOLD = 0.02


def _exported(buf: bytearray) -> bool:
    """True while a memoryview of `buf` is alive (e.g. held by a transport until sent)."""
    return F.buffer_exported(buf)


@dataclass
class RelayResult:
    sent: int = 0  # bytes local -> remote
    received: int = 0  # bytes remote -> local
    local_eof: bool = False  # the local socket sent EOF
    remote_eof: bool = False  # the remote side sent FIN
    reset: int | None = None  # RST_STREAM status received, if any
    error: str | None = None  # local socket / connection error text, if any
    lingered: bool = False  # cut by eof_linger after the remote side's EOF


class _Relay(asyncio.BufferedProtocol):
    """The local socket's protocol, the pipe's sink and the session's output listener."""

    def __init__(
        self,
        pipe: Any,
        read_size: int,
        eof_linger: float | None = None,
        eof_budget: int | None = None,
        local_eof_linger: float | None = None,
    ) -> None:
        self.eof_linger = eof_linger
        self.eof_budget = eof_budget  # frames still allowed local -> remote after remote EOF
        self.local_eof_linger = local_eof_linger
        self._linger_handle: asyncio.TimerHandle | None = None
        self._held = 0  # bytes gathered in self.buf for one budgeted frame (see BUDGET_HOLD)
        self._hold_handle: asyncio.TimerHandle | None = None
        self.pipe = pipe
        self.session = pipe.session
        self.loop = asyncio.get_running_loop()
        self.transport: Any = None
        self.result = RelayResult()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.room = pipe.header_room
        self.read_size = max(1024, min(read_size, pipe.max_payload))
        # Allocated on the first read: an idle connection costs no buffer. Never keep a
        # memoryview of it here: that would count as an export and block reuse.
        self.buf: bytearray | None = None
        self._spares: list[bytearray] = []
        self.local_done = False  # local -> remote direction ended
        self.remote_done = False  # remote -> local direction ended
        self.closed = False
        self._reading_paused = False
        # Channels have no half-close: a socket EOF finishes the whole port.
        self.eof_ends_both = bool(getattr(pipe, "eof_ends_both", False))
        self.sink = _SinkAdapter(self)

    # -- local socket protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=LOCAL_HIGH, low=LOCAL_LOW)  # type: ignore[attr-defined]
        self.session.add_output_listener(self)
        if self.session.output_paused:
            self.pause_output()
        self.pipe.set_sink(self.sink)

    def get_buffer(self, sizehint: int) -> memoryview:
        buf = self.buf
        if self._held and buf is not None:  # gathering a budgeted frame: nobody holds buf
            return memoryview(buf)[self.room + self._held :]
        if buf is None or _exported(buf):
            buf = self._take_buffer()
        # uvloop releases this view before buffer_updated(), so it blocks no reuse.
        return memoryview(buf)[self.room :]

    def _take_buffer(self) -> bytearray:
        """The current buffer is still held by the upgraded transport (or there is none yet):
        switch to a spare nobody holds, else a fresh one. Bounded, since local reads pause
        once the upgraded transport passes its high-water mark."""
        spares = self._spares
        old = self.buf
        for i, spare in enumerate(spares):
            if not _exported(spare):
                buf = spares.pop(i)
                break
        else:
            # Not zero-filled: pages are committed only as reads fill them, so a connection
            # that moved a few bytes costs a few pages, not the whole buffer.
            buf = F.alloc_buffer(self.room + self.read_size)
        if old is not None and len(spares) < SPARE_BUFFERS:
            spares.append(old)  # freed by the transport later; then reusable
        self.buf = buf
        return buf

    def buffer_updated(self, nbytes: int) -> None:
        if self.local_done or self.buf is None:
            return
        if self.remote_done and self.eof_budget is not None:
            # Few frames left: make each a whole buffer (or what came within BUDGET_HOLD).
            self._held += nbytes
            if self._held >= self.read_size:
                self._send_held()
            elif self._hold_handle is None:
                self._hold_handle = self.loop.call_later(BUDGET_HOLD, self._send_held)
            return
        self._send(self.buf, nbytes)

    def _send(self, buf: bytearray, n: int) -> bool:
        """buf[room:room+n] as one frame; False when the session is gone."""
        try:
            self.pipe.send_inplace(buf, self.room, n)
        except Exception as exc:  # session gone under us
            self._local_error(exc)
            return False
        self.result.sent += n
        return True

    def _send_held(self) -> None:
        if self._hold_handle is not None:
            self._hold_handle.cancel()
            self._hold_handle = None
        n, self._held = self._held, 0
        if not n or self.local_done or self.buf is None or not self._send(self.buf, n):
            return
        if self.eof_budget is not None:
            self.eof_budget -= 1
            if self.eof_budget <= 0:
                self._linger_expired()

    def eof_received(self) -> bool:
        self.result.local_eof = True
        if self._held:
            self._send_held()  # the gathered tail leaves before the FIN
        if not self.local_done:
            self.local_done = True
            with contextlib.suppress(Exception):
                self.pipe.write_eof()
        if self.eof_ends_both:
            self.remote_done = True
        elif self.local_eof_linger is not None and not self.remote_done and not self.closed:
            self._linger_handle = self.loop.call_later(self.local_eof_linger, self._local_linger_expired)
        self._maybe_finish()
        return True  # keep the write side open: the other direction may still flow

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._linger_handle is not None:
            self._linger_handle.cancel()
            self._linger_handle = None
        if self._held:
            self._send_held()  # read before the loss: still the pod's bytes, in order
        self.session.remove_output_listener(self)
        self.session.resume_input(self)
        if not (self.local_done and self.remote_done):
            if exc is not None and self.result.error is None:
                self.result.error = _err_text(exc)
            if not self.pipe_closed():
                with contextlib.suppress(Exception):
                    self.pipe.reset(RST_CANCEL)
        self.local_done = self.remote_done = True
        self.pipe.set_sink(None)
        if not self.done.done():
            self.done.set_result(None)

    def pause_writing(self) -> None:
        # The local peer reads slower than the remote sends: stop reading the upgraded conn.
        self.session.pause_input(self)

    def resume_writing(self) -> None:
        self.session.resume_input(self)

    # -- output listener (the upgraded transport is full / drained) ----------------------------
    def pause_output(self) -> None:
        if not self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_output(self) -> None:
        if self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()

    # -- sink (data from the remote side) ------------------------------------------------------
    def data_received(self, view: memoryview) -> None:
        t = self.transport
        if self.closed or self.remote_done or t.is_closing():
            return  # local side gone: drop (the stream is being reset)
        self.result.received += len(view)
        try:
            t.write(view)
        except (OSError, RuntimeError) as exc:  # never into the session's read callback
            self._local_error(exc)

    def eof_received_remote(self) -> None:
        self.result.remote_eof = True
        if self.remote_done:
            return
        self.remote_done = True
        if self._linger_handle is not None:  # a local-EOF linger: no longer needed
            self._linger_handle.cancel()
            self._linger_handle = None
        if not self.closed:
            try:
                if self.transport.can_write_eof():
                    self.transport.write_eof()  # flushes first, then shutdown(SHUT_WR)
            except (OSError, RuntimeError):
                pass
            if self.eof_linger is not None and not self.local_done:
                self._linger_handle = self.loop.call_later(self.eof_linger, self._linger_expired)
            if self.eof_budget is not None and self.eof_budget <= 0:
                self._linger_expired()
        self._maybe_finish()

    def _local_linger_expired(self) -> None:
        # containerd-style, the other way round: the local side (the pod) closed its sending
        # side and the remote side has not ended within `local_eof_linger`: end both. Old
        # kubectl closes its local socket only once the error stream ends, which needs this.
        self._linger_handle = None
        if self.closed or self.remote_done:
            return
        self.result.lingered = True
        self.remote_done = True
        self._maybe_finish()  # flushes what the local side has not read yet, then closes

    def _linger_expired(self) -> None:
        # containerd-style: once the remote side ended, the local -> remote direction gets
        # `eof_linger` seconds, then both close. kubectl <= 1.31 stops reading a data stream it
        # has FINed; relaying on would block its frame workers and stall the whole session.
        if self._linger_handle is not None:
            self._linger_handle.cancel()
            self._linger_handle = None
        if self._hold_handle is not None:
            self._hold_handle.cancel()
            self._hold_handle = None
        self._held = 0  # cut: dropped like the rest of what the local side has unsent
        if self.closed or self.local_done:
            return
        self.result.lingered = True
        self.local_done = True
        with contextlib.suppress(Exception):
            self.pipe.write_eof()
        self.transport.abort()  # drop what the local side still has unsent

    def reset_received(self, status: int) -> None:
        self.result.reset = status
        self.remote_done = self.local_done = True
        if not self.closed:
            self.transport.abort()  # the pod/peer reset: pass the reset on

    def session_lost(self, exc: BaseException | None) -> None:
        if (
            exc is not None
            and self.result.error is None
            and not (self.local_done and self.remote_done)
        ):
            self.result.error = _err_text(exc)
        if not self.remote_done:
            self.remote_done = True
            self.local_done = True
            if not self.closed:
                if exc is None:
                    self.transport.close()  # graceful end of a channel session: flush
                else:
                    # In-flight data was lost with the session: the local peer must see a
                    # reset, not a FIN it could take for a complete transfer.
                    _abort_with_reset(self.transport)
        else:
            self.local_done = True
            self._maybe_finish()

    def drained(self) -> bool:
        t = self.transport
        return t is None or self.closed or t.get_write_buffer_size() == 0

    # -- helpers -------------------------------------------------------------------------------
    def pipe_closed(self) -> bool:
        return bool(
            getattr(self.pipe, "local_closed", False) and getattr(self.pipe, "remote_closed", False)
        )

    def _local_error(self, exc: BaseException) -> None:
        if self.result.error is None:
            self.result.error = _err_text(exc)
        if not self.closed:
            self.transport.abort()  # connection_lost then resets the stream

    def _maybe_finish(self) -> None:
        if self.local_done and self.remote_done and not self.closed:
            self.transport.close()


class _SinkAdapter:
    """Gives the pipe the Sink method names without clashing with the protocol's own
    eof_received/connection_lost (which mean the *local* socket there)."""

    __slots__ = ("r", "data_received", "drained")

    def __init__(self, relay: _Relay) -> None:
        self.r = relay
        self.data_received = relay.data_received
        self.drained = relay.drained

    def eof_received(self) -> None:
        self.r.eof_received_remote()

    def reset_received(self, status: int) -> None:
        self.r.reset_received(status)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.r.session_lost(exc)


def _abort_with_reset(transport: Any) -> None:
    """abort() closes with a FIN when nothing is unread; SO_LINGER 0 makes it an RST."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError, ValueError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    transport.abort()


_LINGER_ZERO = struct.pack("ii", 1, 0)


def _err_text(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


class Accepted(asyncio.Protocol):
    """Protocol of a freshly accepted local connection until its stream/channel exists
    (`loop.create_server(Accepted, sock=...)`: accepted natively, no Python socket object).
    What arrives meanwhile is kept in order and reading pauses at once; relay() takes over
    the transport and sends it first."""

    __slots__ = ("transport", "early", "eof", "lost")

    def __init__(self) -> None:
        self.transport: Any = None
        self.early: list[bytes] = []
        self.eof = False
        self.lost: BaseException | None | bool = False  # False: still connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.early.append(data)
        self.transport.pause_reading()  # one read's worth at most: bounded

    def eof_received(self) -> bool:
        self.eof = True
        return True  # the other direction may still flow

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc

    def close(self) -> None:
        """Close the local connection (no stream could be opened for it)."""
        if self.transport is not None:
            self.transport.close()


async def relay(
    stream_or_channel: Any,
    local: socket.socket | Accepted,
    *,
    read_size: int = DEFAULT_READ_SIZE,
    eof_linger: float | None = None,
    eof_budget: int | None = None,
    local_eof_linger: float | None = None,
) -> RelayResult:
    """Copy both ways between `local` (a connected TCP socket, or an Accepted connection; the
    relay owns and closes it) and a SpdyStream / PortChannel until both directions ended.
    Local EOF -> DATA FIN;
    remote FIN -> shutdown(SHUT_WR) on `sock`; the other direction keeps flowing. RST from the
    peer or connection loss aborts the socket; a local error resets the stream (CANCEL).
    `eof_linger` (seconds, None = forever): after the remote side's EOF, end the local ->
    remote direction too (FIN, drop unsent local data) if it has not ended by then; this is
    containerd's behaviour. `eof_budget` (frames, None = unlimited): the same cut once that
    many more frames were sent after the remote EOF (kubelet side, for kubectl <= 1.31).
    `local_eof_linger` (seconds, None = forever): after the local socket's EOF (FIN sent on
    the pipe), the remote -> local direction gets that long, then both end (containerd).
    Pauses the faster side at high-water marks so memory stays bounded. Never raises on
    peer/socket errors: they are reported in the result. Cancelling it aborts the socket
    and resets the stream."""
    proto = _Relay(stream_or_channel, read_size, eof_linger, eof_budget, local_eof_linger)
    if isinstance(local, Accepted):
        if local.lost is not False or local.transport is None or local.transport.is_closing():
            stream_or_channel.reset(RST_CANCEL)
            return RelayResult(error="connection closed")
        _adopt(proto, local)
    else:
        loop = asyncio.get_running_loop()
        local.setblocking(False)
        with contextlib.suppress(OSError):
            local.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await loop.connect_accepted_socket(lambda: proto, local)
        except OSError as exc:
            local.close()
            stream_or_channel.reset(RST_CANCEL)
            return RelayResult(error=_err_text(exc))
    return await _until_done(proto, stream_or_channel)


async def dial_relay(
    stream_or_channel: Any,
    host: str,
    port: int,
    *,
    connect_timeout: float,
    read_size: int = DEFAULT_READ_SIZE,
    eof_linger: float | None = None,
    eof_budget: int | None = None,
    local_eof_linger: float | None = None,
) -> RelayResult:
    """Connect to host:port (numeric address) and relay() with the new connection. A failed
    connect raises OSError / asyncio.TimeoutError before anything was sent on the pipe."""
    loop = asyncio.get_running_loop()
    proto = _Relay(stream_or_channel, read_size, eof_linger, eof_budget, local_eof_linger)
    # The transport is created natively by the loop (no Python socket object, no task).
    connect = loop.create_connection(lambda: proto, host, port)
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(connect_timeout):
            await connect
    else:  # pragma: no cover - Python 3.10
        await asyncio.wait_for(connect, connect_timeout)
    return await _until_done(proto, stream_or_channel)


def _adopt(proto: _Relay, accepted: Accepted) -> None:
    transport = accepted.transport
    transport.set_protocol(proto)
    proto.connection_made(transport)
    try:
        for chunk in accepted.early:  # bytes that came before the stream existed, in order
            proto.pipe.write(chunk)
            proto.result.sent += len(chunk)
    except Exception as exc:  # session gone under us
        proto._local_error(exc)
        return
    accepted.early = []
    if accepted.eof:
        proto.eof_received()
    else:
        transport.resume_reading()


async def _until_done(proto: _Relay, stream_or_channel: Any) -> RelayResult:
    try:
        await proto.done  # cancelling us cancels this future too; its setters check done()
    except asyncio.CancelledError:
        if proto.transport is not None and not proto.closed:
            proto.transport.abort()
        with contextlib.suppress(Exception):
            stream_or_channel.reset(RST_CANCEL)
        raise
    return proto.result
