"""Forwards that stay up (issue 12): what the client needs from the session layer, and the
pieces every reconnecting part shares (backoff, reconnect episodes and their console lines,
dead-peer detection, TCP keepalive).

The contract we rely on from fastpf.transport
----------------------------------------------
Everything here is built *above* the session layer; these are the only things used.

Opening: ``upgrade.connect(dialer, path, protocol, ports, *, ping_interval=0, timeout=T)``
    returns a live ``SpdyConnection`` (protocols "spdy" and "websocket", SPDY tunnelled in
    WebSocket) or a ``ChannelConnection`` ("ws-channel"), with ``.negotiated`` set. It raises
    ``UpgradeRefusedError`` (a HandshakeError; ``.status`` is the HTTP status or None) when
    the server answered anything but a good 101, and OSError (ssl.SSLError included) or
    TimeoutError / asyncio.TimeoutError when the dial, TLS or the 101 did not happen within
    ``timeout``. ``ping_interval=0`` switches the session's own PING timer off: one timer per
    pool (DeadPeer below) pings every connection instead.
How loss is signalled: ``conn.closed`` is a future that resolves exactly once and never raises:
    None after a clean end (peer GOAWAY, WebSocket close 1000/1001, our own goaway/close), else
    the exception that ended it (ConnectionResetError for EOF/reset, ssl.SSLError, a
    ProtocolError after hostile bytes, for which the session already sent GOAWAY
    (PROTOCOL_ERROR) or WebSocket close 1002, or the exception given to ``fail``).
    ``conn.is_closing`` is true from that moment. Before ``closed`` resolves, every stream's
    sink got ``connection_lost(exc)`` (the relay then resets its local socket), pending
    ``wait_replies`` return SessionClosedError, and ``start_stream`` raises SessionClosedError.
    ``SpdyConnection.goaway_received`` tells a peer GOAWAY from a plain close.
Opening streams (SPDY): ``conn.start_stream(headers)`` sends SYN_STREAM at once (raises
    SessionClosedError when the connection is closing); ``await conn.wait_replies(streams,
    timeout)`` returns None or the failure per stream; ``relay(stream, Accepted)`` pumps it.
Liveness: ``SpdyConnection.ping()`` sends a PING now (the record of unanswered PINGs is bounded
    and always keeps the oldest one); ``last_ping_reply`` is the loop time of the last answer
    (None before). ``UpgradedProtocol.ws_ping()`` / ``last_pong`` do the same with WebSocket
    ping/pong (ws-channel). ``conn.input_paused`` is true while *we* stopped reading (a local
    reader is slow), when an unanswered ping proves nothing; ``conn.transport.
    get_write_buffer_size()`` shrinking means the peer reads what we send.
Ending: ``conn.fail(exc)`` drops the connection now and ends the session with ``exc`` (streams
    see the loss: local sockets get a reset); ``SpdyConnection.goaway(0)`` ends it cleanly after
    flushing; ``ChannelConnection.close(code)`` likewise. ``conn.transport.get_extra_info(
    "socket")`` is the TCP socket (keepalive is set on it).
Everything runs on the loop thread; nothing here blocks.
"""

from __future__ import annotations

import contextlib
import random
import socket
from collections.abc import Callable
from typing import Any, Protocol

from fastpf.client.console import Console, klog_line
from fastpf.errors import DeadPeerError, ProtocolError
from fastpf.goparity import format_duration

# Capped, jittered exponential backoff between reconnect attempts. The cap is short because an
# attempt is cheap (one refused dial while the server is down) and the forward is unusable
# meanwhile: a restarted API server is found within about a second.
BACKOFF_INITIAL = 0.1
BACKOFF_FACTOR = 2.0
BACKOFF_CAP = 1.0
# A connection that stayed up less than this counts as part of the same failure (a server that
# accepts the upgrade and drops it at once must not be redialled in a tight loop).
STABLE_AFTER = 5.0
# One reconnect attempt (re-resolve + upgrade) may take this long: a frozen server accepts TCP
# (the kernel does) and then never answers.
ATTEMPT_TIMEOUT = 10.0
# Go's net.Dialer keepalive defaults (KeepAliveConfig): probe after 15 s idle, every 15 s, 9 times.
KEEPALIVE_IDLE = 15
KEEPALIVE_INTERVAL = 15
KEEPALIVE_COUNT = 9


class Backoff:
    """Delays between attempts: 0 for the first, then initial * factor^k, capped, each drawn
    uniformly from [d/2, d] (jitter: many clients of one server do not retry in step)."""

    def __init__(
        self,
        initial: float = BACKOFF_INITIAL,
        factor: float = BACKOFF_FACTOR,
        cap: float = BACKOFF_CAP,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.initial = initial
        self.factor = factor
        self.cap = cap
        self.rng = rng
        self.failures = 0

    def next(self) -> float:
        """The delay before the next attempt (and count one more failure)."""
        n = self.failures
        self.failures += 1
        if n == 0:
            return 0.0
        ceiling = min(self.cap, self.initial * self.factor ** min(n - 1, 32))
        return ceiling * (0.5 + 0.5 * self.rng())

    def reset(self) -> None:
        self.failures = 0


class ForwardObserver(Protocol):
    """Reconnect events (hooks for --stats / JSON event output). Called on the loop thread."""

    def lost(self, pod: str, reason: str, count: int, total: int) -> None: ...
    def reconnecting(self, attempt: int, delay: float, reason: str) -> None: ...
    def reconnected(self, pod: str, attempts: int, downtime: float) -> None: ...
    def pod_changed(self, old: str, new: str, reason: str) -> None: ...


class ConsoleObserver:
    """One stderr line per event in klog's format, as kubectl logs (W for trouble, I for
    recovery). Never contains credentials: reasons are error texts and pod names only."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._last_reason = ""

    def _line(self, severity: str, message: str) -> None:
        self.console.plain(klog_line(severity, message))

    def lost(self, pod: str, reason: str, count: int, total: int) -> None:
        self._last_reason = reason
        which = f" ({count} of {total} connections)" if total > 1 else ""
        self._line("W", f"lost connection to pod {pod}{which}: {reason}; reconnecting")

    def reconnecting(self, attempt: int, delay: float, reason: str) -> None:
        # The first attempt follows the "lost" line at once. After that a line when the reason
        # changes, else at attempts 2, 4, 8, ...: a server down for a minute (an attempt per
        # second) costs a handful of lines, not sixty.
        if attempt > 1 and (reason != self._last_reason or attempt & (attempt - 1) == 0):
            self._line(
                "W", f"reconnecting in {format_duration(delay)} (attempt {attempt}): {reason}"
            )
        self._last_reason = reason

    def reconnected(self, pod: str, attempts: int, downtime: float) -> None:
        tries = f", {attempts} attempts" if attempts > 1 else ""
        self._line("I", f"reconnected to pod {pod} after {format_duration(downtime)}{tries}")

    def pod_changed(self, old: str, new: str, reason: str) -> None:
        self._line("W", f"pod {old} {reason}; new connections go to pod {new}")


class Observers:
    """Fan-out to several observers (the console's lines plus, e.g., a JSON event writer)."""

    def __init__(self, *observers: Any) -> None:
        self.observers = list(observers)

    def __getattr__(self, name: str) -> Callable[..., None]:
        def call(*args: Any) -> None:
            for obs in self.observers:
                hook = getattr(obs, name, None)
                if hook is not None:
                    hook(*args)

        return call


def set_keepalive(conn: Any) -> None:
    """TCP keepalive on the upgraded connection's socket (Go's dialer defaults): a peer host
    that vanished is found by the kernel even when no PING is configured."""
    transport = getattr(conn, "transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError, ValueError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
        if hasattr(socket, "TCP_KEEPINTVL"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
        if hasattr(socket, "TCP_KEEPCNT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)


def describe_loss(conn: Any, exc: BaseException | None) -> str:
    """A short reason for a lost upgraded connection (error texts only, never credentials)."""
    if exc is None:
        if getattr(conn, "goaway_received", False):
            return "the server sent GOAWAY"
        return "connection closed by the server"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ProtocolError):
        return f"protocol error: {text}"
    return text


class _Watch:
    """Per-connection liveness state (see DeadPeer)."""

    __slots__ = ("conn", "last_ping", "last_alive", "pending_since", "seen_reply", "last_wbs")

    def __init__(self, conn: Any, now: float) -> None:
        self.conn = conn
        self.last_ping = now - 1e9  # ping at the first tick
        self.last_alive = now  # last sign of life
        self.pending_since: float | None = None  # first ping sent after that sign
        self.seen_reply: float | None = None
        self.last_wbs = 0


class DeadPeer:
    """Dead-peer detection for many connections with one timer: a PING (SPDY) or a WebSocket
    ping (ws-channel) every `interval`; a connection is declared dead (``conn.fail(
    DeadPeerError)``) when a ping is outstanding and nothing showed the peer alive for
    `timeout` (and a lone ping had at least timeout/2 to be answered, when pings are rarer
    than the timeout). Signs of life besides an answer: we paused reading ourselves (a slow
    local reader: the answer may sit unread), or our write buffer shrank (the peer reads what
    we send, e.g. a slow pod being uploaded to). interval 0: no pings, so nothing is ever
    declared dead; timeout 0: pings only (keepalive, as kubectl)."""

    def __init__(self, loop: Any, interval: float, timeout: float) -> None:
        self.loop = loop
        self.interval = interval
        self.timeout = timeout if interval > 0 else 0.0
        self._watched: dict[int, _Watch] = {}
        self._handle: Any = None
        # Check often enough that a dead peer is declared close to `timeout` after its last sign.
        period = interval
        if self.timeout > 0:
            period = min(period, self.timeout / 4)
        self.period = max(period, 0.01)

    @property
    def active(self) -> bool:
        return self.interval > 0

    def add(self, conn: Any) -> None:
        if not self.active:
            return
        self._watched[id(conn)] = _Watch(conn, self.loop.time())
        if self._handle is None:
            self._handle = self.loop.call_later(self.period, self._tick)

    def discard(self, conn: Any) -> None:
        self._watched.pop(id(conn), None)

    def close(self) -> None:
        self._watched.clear()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        self._handle = None
        now = self.loop.time()
        for key, w in list(self._watched.items()):
            if w.conn.is_closing:
                del self._watched[key]
                continue
            try:
                self._check(w, now)
            except Exception:  # noqa: BLE001 - a monitor must never take the loop down
                self._watched.pop(key, None)
        if self._watched:
            self._handle = self.loop.call_later(self.period, self._tick)

    def _check(self, w: _Watch, now: float) -> None:
        conn = w.conn
        spdy = hasattr(conn, "last_ping_reply")
        reply = conn.last_ping_reply if spdy else conn.last_pong
        transport = conn.transport
        wbs = transport.get_write_buffer_size() if transport is not None else 0
        if reply != w.seen_reply or conn.input_paused or wbs < w.last_wbs:
            w.last_alive = now  # alive (or not ours to judge while we do not read)
            w.pending_since = None
        w.seen_reply = reply
        w.last_wbs = wbs
        pending = w.pending_since
        if (
            self.timeout > 0
            and pending is not None
            and now - w.last_alive > self.timeout
            and now - pending > self.timeout / 2
        ):
            self._watched.pop(id(conn), None)
            conn.fail(
                DeadPeerError(
                    f"no reply to {'PING' if spdy else 'WebSocket ping'} within "
                    f"{format_duration(self.timeout)}"
                )
            )
            return
        if now - w.last_ping >= self.interval:
            w.last_ping = now
            if w.pending_since is None:
                w.pending_since = now
            if spdy:
                conn.ping()
            else:
                conn.ws_ping()


def give_up_message(pod: str, after: float, reason: str) -> str:
    """The fatal line when the forward stayed without a connection for --pod-running-timeout."""
    return (
        f"lost connection to pod {pod} and could not reconnect within {format_duration(after)} "
        f"(--pod-running-timeout): {reason or 'no connection'}"
    )


class Episode:
    """Bookkeeping of one outage, from the first loss until every connection is back: attempt
    count and backoff, and the observer call for each event."""

    def __init__(self, loop: Any, observer: Any, backoff: Backoff | None = None) -> None:
        self.loop = loop
        self.observer = observer
        self.backoff = backoff or Backoff()
        self.started: float | None = None  # loop time of the loss; None: no outage
        self.attempts = 0
        self.reason = ""
        self._last_ok = -1e9

    @property
    def open(self) -> bool:
        return self.started is not None

    def begin(self, pod: str, reason: str, count: int = 1, total: int = 1) -> None:
        """A loss: report it; start the clock unless an outage is already running."""
        self.observer.lost(pod, reason, count, total)
        self.begin_quiet(pod, reason)

    def begin_quiet(self, pod: str, reason: str) -> None:
        """Start the clock without a "lost" line (a pod that moved: nothing was lost yet)."""
        self.reason = reason
        if self.started is None:
            self.started = self.loop.time()
            self.attempts = 0
            # A connection that died soon after coming up continues the previous backoff.
            if self.started - self._last_ok >= STABLE_AFTER:
                self.backoff.reset()

    def next_delay(self) -> float:
        """Count an attempt and return its delay (reported to the observer)."""
        self.attempts += 1
        delay = self.backoff.next()
        self.observer.reconnecting(self.attempts, delay, self.reason)
        return delay

    def failed(self, reason: str) -> None:
        self.reason = reason

    def succeeded(self, pod: str) -> None:
        now = self.loop.time()
        self._last_ok = now
        if self.started is not None:
            self.observer.reconnected(pod, max(self.attempts, 1), now - self.started)
            self.started = None
            self.attempts = 0
