"""TCP socket <-> SPDY stream / WS port channel pump: zero-copy, half-close, backpressure.

The per-chunk work is compiled (fastpf/_pump.pyx, RelayCore: its docstring has the buffer
rules): local reads land in a buffer with `header_room` bytes free in front, so the stream
frames them in place (one write, no copy); the session hands data to us as memoryviews into
its receive buffer (written as they are; the session keeps the buffer until `drained()`), or,
through a compiled dispatcher, as raw bytes sent straight to the socket. This module keeps the
rest: half-close, lingers, budgets, resets, errors and the result.

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

from fastpf._frames import RST_CANCEL
from fastpf._pump import RelayCore
from fastpf.transport.contract import Pipe

LOCAL_HIGH = 1 << 20  # socket write buffer above which the upgraded connection stops reading
LOCAL_LOW = 256 << 10
DEFAULT_READ_SIZE = 256 * 1024
# Under an `eof_budget` every frame counts, so reads are gathered into whole-buffer frames and
# held at most this long before they leave.
BUDGET_HOLD = 0.02


@dataclass
class RelayResult:
    sent: int = 0  # bytes local -> remote
    received: int = 0  # bytes remote -> local
    local_eof: bool = False  # the local socket sent EOF
    remote_eof: bool = False  # the remote side sent FIN
    reset: int | None = None  # RST_STREAM status received, if any
    error: str | None = None  # local socket / connection error text, if any
    lingered: bool = False  # cut by eof_linger after the remote side's EOF


class _Relay(RelayCore, asyncio.BufferedProtocol):
    """The local socket's protocol, the pipe's sink and the session's output listener. The
    per-chunk paths (get_buffer, buffer_updated, data_received, drained, and deliver() for a
    compiled dispatcher) are RelayCore's (fastpf/_pump.pyx); the rest is here."""

    def __init__(
        self,
        pipe: Pipe,
        read_size: int,
        eof_linger: float | None = None,
        eof_budget: int | None = None,
        local_eof_linger: float | None = None,
    ) -> None:
        self.init_pump(pipe, read_size)
        self.eof_linger = eof_linger
        self.eof_budget = eof_budget  # frames still allowed local -> remote after remote EOF
        self.budgeted = eof_budget is not None
        self.local_eof_linger = local_eof_linger
        self._linger_handle: asyncio.TimerHandle | None = None
        self._hold_handle: asyncio.TimerHandle | None = None
        self.session = pipe.session
        self.loop = asyncio.get_running_loop()
        self._result = RelayResult()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self._reading_paused = False
        # Channels have no half-close: a socket EOF finishes the whole port.
        self.eof_ends_both = bool(getattr(pipe, "eof_ends_both", False))
        self.sink = _SinkAdapter(self)

    @property
    def result(self) -> RelayResult:
        """What happened so far (byte counts from the compiled pump)."""
        r = self._result
        r.sent = self.sent
        r.received = self.received
        return r

    # -- local socket protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.attach_transport(transport)
        transport.set_write_buffer_limits(high=LOCAL_HIGH, low=LOCAL_LOW)  # type: ignore[attr-defined]
        self.session.add_output_listener(self)
        if self.session.output_paused:
            self.pause_output()
        self.pipe.set_sink(self.sink)

    def _budget_updated(self, nbytes: int) -> None:
        # Few frames left after the remote EOF: make each a whole buffer (or what came within
        # BUDGET_HOLD).
        self.held += nbytes
        if self.held >= self.read_size:
            self._send_held()
        elif self._hold_handle is None:
            self._hold_handle = self.loop.call_later(BUDGET_HOLD, self._send_held)

    def _send_held(self) -> None:
        if self._hold_handle is not None:
            self._hold_handle.cancel()
            self._hold_handle = None
        n, self.held = self.held, 0
        if not n or self.local_done or self.buf is None or not self.send_buffered(n):
            return
        if self.eof_budget is not None:
            self.eof_budget -= 1
            if self.eof_budget <= 0:
                self._linger_expired()

    def eof_received(self) -> bool:
        self._result.local_eof = True
        if self.held:
            self._send_held()  # the gathered tail leaves before the FIN
        if not self.local_done:
            self.local_done = True
            with contextlib.suppress(Exception):
                self.pipe.write_eof()
        if self.eof_ends_both:
            self.remote_done = True
        elif self.local_eof_linger is not None and not self.remote_done and not self.closed:
            self._linger_handle = self.loop.call_later(
                self.local_eof_linger, self._local_linger_expired
            )
        self._maybe_finish()
        return True  # keep the write side open: the other direction may still flow

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._linger_handle is not None:
            self._linger_handle.cancel()
            self._linger_handle = None
        if self.held:
            self._send_held()  # read before the loss: still the pod's bytes, in order
        self.session.remove_output_listener(self)
        self.session.resume_input(self)
        if not (self.local_done and self.remote_done):
            if exc is not None and self._result.error is None:
                self._result.error = _err_text(exc)
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

    # -- sink (data from the remote side): data_received and drained are RelayCore's ------
    def eof_received_remote(self) -> None:
        self._result.remote_eof = True
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
        self._result.lingered = True
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
        self.held = 0  # cut: dropped like the rest of what the local side has unsent
        if self.closed or self.local_done:
            return
        self._result.lingered = True
        self.local_done = True
        with contextlib.suppress(Exception):
            self.pipe.write_eof()
        self.transport.abort()  # drop what the local side still has unsent

    def reset_received(self, status: int) -> None:
        self._result.reset = status
        self.remote_done = self.local_done = True
        if not self.closed:
            self.transport.abort()  # the pod/peer reset: pass the reset on

    def session_lost(self, exc: BaseException | None) -> None:
        if (
            exc is not None
            and self._result.error is None
            and not (self.local_done and self.remote_done)
        ):
            self._result.error = _err_text(exc)
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

    # -- helpers -------------------------------------------------------------------------------
    def pipe_closed(self) -> bool:
        return self.pipe.local_closed and self.pipe.remote_closed

    def _local_error(self, exc: BaseException) -> None:
        if self._result.error is None:
            self._result.error = _err_text(exc)
        if not self.closed:
            self.transport.abort()  # connection_lost then resets the stream

    def _maybe_finish(self) -> None:
        if self.local_done and self.remote_done and not self.closed:
            self.transport.close()


class _SinkAdapter:
    """Gives the pipe the Sink method names without clashing with the protocol's own
    eof_received/connection_lost (which mean the *local* socket there)."""

    __slots__ = ("r", "pump", "data_received", "drained")

    def __init__(self, relay: _Relay) -> None:
        self.r = relay
        self.pump = relay  # a compiled dispatcher delivers to RelayCore.deliver()
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
    stream_or_channel: Pipe,
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
    stream_or_channel: Pipe,
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
            proto.sent += len(chunk)
    except Exception as exc:  # session gone under us
        proto._local_error(exc)
        return
    accepted.early = []
    if accepted.eof:
        proto.eof_received()
    else:
        transport.resume_reading()


async def _until_done(proto: _Relay, stream_or_channel: Pipe) -> RelayResult:
    try:
        await proto.done  # cancelling us cancels this future too; its setters check done()
    except asyncio.CancelledError:
        if proto.transport is not None and not proto.closed:
            proto.transport.abort()
        with contextlib.suppress(Exception):
            stream_or_channel.reset(RST_CANCEL)
        raise
    return proto.result
