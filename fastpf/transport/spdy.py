"""SPDY/3 over an upgraded connection (PROTOCOL.md 4), raw or tunnelled in WebSocket binary
messages (6.2), both roles: the asyncio adapter around the sans-IO `spdy_session.SpdySession`.

The adapter owns what needs a loop: the transport and its buffers (reads land in the session's
decoder buffer: BufferedProtocol), coalesced writes, the PING / first-frame / idle timers and
the futures of `wait_replies` and `closed`. Every protocol decision (stream lifecycle, ids,
PING record, GOAWAY, unknown streams) is the session's. Writes are synchronous on one
transport, so frames leave in call order (SYN_REPLY before DATA). Each DATA frame is one
gather write (raw) or one WS message (tunnel).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, cast

from fastpf import _frames as F
from fastpf._frames import (
    RST_CANCEL,
)
from fastpf.errors import (
    SessionClosedError,
    SpdySessionError,
    StreamResetError,
    StreamTimeoutError,
)
from fastpf.limits import trim_soon
from fastpf.transport._base import UpgradedProtocol
from fastpf.transport.spdy_session import (
    DEFAULT_MAX_DATA,
    MAX_OUTSTANDING_PINGS,
    RECV_BUFFER,
    SessionStream,
    SpdySession,
)

# A session that upgraded must show a complete frame within this (kubectl pings every 5 s,
# 10 s tunnelled): the server drops sessions that never speak; a pinging client drops a
# server that never answers. Later silence is the idle timeout's business.
FIRST_FRAME_TIMEOUT = 30.0


class SpdyStream(SessionStream):
    """One SPDY stream (see spdy_session.SessionStream) with its awaitable reads and the
    future its opener waits on for the SYN_REPLY."""

    def __init__(
        self,
        core: SpdySession | SpdyConnection,
        stream_id: int,
        headers: dict[str, str],
        local: bool,
        uni: bool = False,
    ) -> None:
        super().__init__(core, stream_id, headers, local, uni)
        self._reply_waiter: asyncio.Future[None] | None = None

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


def _expire_replies(waiters: list[asyncio.Future[None] | None]) -> None:
    for w in waiters:
        if w is not None and not w.done():
            w.set_exception(StreamTimeoutError())


class SpdyConnection(UpgradedProtocol):
    """One upgraded connection speaking SPDY/3 (the asyncio adapter of a SpdySession).

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
        self.client = client
        self.tunnel = tunnel
        self.core = SpdySession(
            self,
            client=client,
            ws=self._wsout,
            max_data=max_data,
            on_stream=cast("Callable[[SessionStream], None] | None", on_stream),
            clock=self._now,
            stream_class=SpdyStream,
        )
        self.get_buffer = self.core.get_buffer  # type: ignore[method-assign]
        self._on_data = self.core.buffer_updated  # type: ignore[method-assign]
        if ping_interval is None:
            ping_interval = (10.0 if tunnel else 5.0) if client else 0.0
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self._ping_handle: asyncio.TimerHandle | None = None
        self.first_frame_timeout = (
            FIRST_FRAME_TIMEOUT if first_frame_timeout is None else first_frame_timeout
        )
        self._first_frame_handle: asyncio.TimerHandle | None = None

    # -- what the session keeps (read through) ------------------------------------------------
    @property
    def streams(self) -> dict[int, SpdyStream]:
        return cast("dict[int, SpdyStream]", self.core.streams)

    @property
    def max_data(self) -> int:
        return self.core.max_data

    @max_data.setter
    def max_data(self, value: int) -> None:
        self.core.max_data = value

    @property
    def on_stream(self) -> Callable[[SpdyStream], None] | None:
        return self.core.on_stream

    @property
    def goaway_received(self) -> bool:
        return self.core.goaway_received

    @property
    def last_ping_rtt(self) -> float | None:
        return self.core.last_ping_rtt

    @property
    def last_ping_reply(self) -> float | None:
        """loop.time() of the last answer to our PING."""
        return self.core.last_ping_reply

    @property
    def _ping_outstanding(self) -> dict[int, float]:
        return self.core._ping_outstanding

    @property
    def _held(self) -> set[Any]:
        return self.core._held

    def _now(self) -> float:
        return self.loop.time()  # read late: tests swap the loop for a fake clock

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
        if self._closing or self.core.got_frame:
            return
        if self.client:  # the server never answered our pings
            self._abort(
                TimeoutError(f"no frame from the server within {self.first_frame_timeout:g}s")
            )
        else:
            self.goaway(F.GOAWAY_OK)

    def busy(self) -> bool:
        return not self._closing and self.core.busy()

    def _feed(self, data: bytes) -> None:
        self.core.feed(data)

    # -- reading (the session decodes in its own buffer) --------------------------------------
    # get_buffer and _on_data are the session's own bound methods (set in __init__): no extra
    # call per read on the hot path.
    def get_buffer(self, sizehint: int) -> memoryview:
        return self.core.get_buffer(sizehint)

    def _on_data(self, nbytes: int) -> None:
        self.core.buffer_updated(nbytes)

    # -- SpdyOwner: what the session asks of us ------------------------------------------------
    def end(self, exc: BaseException | None) -> None:
        self._close_transport(exc)

    def reply_settled(self, stream: SessionStream, failure: BaseException | None) -> None:
        w = getattr(stream, "_reply_waiter", None)
        if w is not None and not w.done():
            if failure is None:
                w.set_result(None)
            else:
                w.set_exception(failure)

    def streams_ended(self, count: int) -> None:
        trim_soon(self.loop, streams_ended=count)

    def _internal_error(self, exc: BaseException) -> None:
        self.core.internal_error()
        self._close_transport(exc)

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
        if self._closing:
            raise SessionClosedError("connection closed")
        stream = self.core.start_stream(headers)
        assert isinstance(stream, SpdyStream)
        stream._reply_waiter = self.loop.create_future()
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
                    with contextlib.suppress(
                        StreamTimeoutError, StreamResetError, SessionClosedError
                    ):
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
                self.core._forget(s)
            failures.append(exc)
        return failures

    def ping(self) -> int:
        """Send one PING now; returns its id."""
        return self.core.ping()

    def _ping_tick(self) -> None:
        self._ping_handle = None
        if self._closing:
            return
        if self.core.ping_overdue(self.ping_timeout):
            self._abort(TimeoutError("ping timeout"))
            return
        self._safe(self.ping)
        self._ping_handle = self.loop.call_later(self.ping_interval, self._ping_tick)

    def goaway(self, status: int = 0, ws_close_code: int = 1000) -> None:
        """Send GOAWAY(last good id, status) (tunnel: then WS close) and close the connection."""
        if self._closing:
            return
        self.core.goaway(status, ws_close_code)

    def close(self) -> None:
        """Close without GOAWAY (flushes what was written)."""
        self._close_transport(None)

    def abort(self) -> None:
        self._abort(None)

    def _on_idle(self) -> None:
        self.goaway(F.GOAWAY_OK)

    def _ended(self, exc: BaseException | None) -> None:
        if self._ping_handle is not None:
            self._ping_handle.cancel()
            self._ping_handle = None
        if self._first_frame_handle is not None:
            self._first_frame_handle.cancel()
            self._first_frame_handle = None
        self.core.connection_lost(exc)


__all__ = [
    "DEFAULT_MAX_DATA",
    "MAX_OUTSTANDING_PINGS",
    "RECV_BUFFER",
    "RST_CANCEL",
    "SessionClosedError",
    "SpdyConnection",
    "SpdySessionError",
    "SpdyStream",
    "StreamResetError",
    "StreamTimeoutError",
]
