"""Server role of the port-forward engine: kubelet semantics behind an upgraded connection.

`accept_portforward` negotiates the upgrade (PROTOCOL.md 3.1, 3.2, 6.1), writes the 101 or the
error response itself, takes the transport over and runs the session until it ends.
SPDY sessions follow kubelet's httpstream handler (5.2): streams validated and replied at
once, paired by requestid (legacy fallback without it), a stream-creation timeout, the pod
port dialled on `pod.address`, bytes copied both ways with half-close, errors reported as
kubelet/containerd text on the error stream, and the error stream finished after every
forwarded connection. Channel sessions follow kubelet's websocket handler (6.1).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import re
import uuid
from typing import Any

from fastpf import _frames as F
from fastpf._frames import RST_CANCEL, RST_REFUSED_STREAM
from fastpf.goparity import errno_text
from fastpf.transport import handshake
from fastpf.transport.channel import ChannelConnection, PortChannel
from fastpf.transport.relay import RelayResult, dial_relay
from fastpf.transport.spdy import SpdyConnection, SpdyStream
from fastpf.types import PodTarget, ServerOptions, UpgradeRequest

log = logging.getLogger("fastpf.transport.kubelet")

# kubectl <= 1.31 stops reading a data stream once it FINed it because its local socket is gone
# (it reads the error stream to EOF, then drops both streams). Data relayed to it meanwhile
# piles up in spdystream's per-worker frame queues (50 frames); once one is full its frame
# reader blocks and every connection of the session stalls, including the error-stream FIN
# that would free it. So for those clients, after their FIN on a data stream the pod -> client
# direction gets at most OLD_KUBECTL_EOF_FRAMES more frames and OLD_KUBECTL_EOF_LINGER seconds
# (containerd's ~1 s), then both directions end (FIN data, close the pod socket, FIN error).
# A client that only half-closed its local socket is still read by kubectl, so the budgeted
# frames are gathered to whole 4 MiB buffers: a reply after a half-close still gets up to
# 64 MiB within that second (containerd gives the second, unbounded, and then cuts too).
# Other clients (fastpf, kubectl >= 1.32) keep pure half-close.
OLD_KUBECTL_EOF_FRAMES = 16  # of up to OLD_KUBECTL_MAX_DATA each: <= 64 MiB, 1/3 of a queue
OLD_KUBECTL_EOF_LINGER = 1.0
OLD_KUBECTL_MAX_DATA = 4 << 20
# The other way round, for every client (containerd's portForward): once the pod closed its
# sending side (FIN relayed at once), the client -> pod direction gets POD_EOF_LINGER seconds,
# then the pod socket, the data stream and the error stream all end. kubectl <= 1.31 closes
# its local socket only when the error stream ends, so without this a download that ends with
# the pod's close never reaches EOF there; newer clients see the FIN at once.
POD_EOF_LINGER = 1.0
_KUBECTL_UA = re.compile(r"^(kubectl|oc)[^/]*/v?(\d+)\.(\d+)")


def _old_kubectl(user_agent: str | None) -> bool:
    """kubectl <= 1.31 (its binary name may carry a suffix, e.g. kubectl.1.29), or oc <= 4.18
    (OpenShift 4.N ships kubernetes 1.(N+13))."""
    m = _KUBECTL_UA.match(user_agent or "")
    if not m:
        return False
    major, minor = int(m.group(2)), int(m.group(3))
    if m.group(1) == "oc" and major == 4:
        major, minor = 1, minor + 13
    return (major, minor) <= (1, 31)


# Live sessions, for shutdown_all(). Strong references also keep their tasks alive.
_sessions: set[Any] = set()
_tasks: set[asyncio.Task[Any]] = set()


def accept_portforward(
    transport: asyncio.Transport,
    request: UpgradeRequest,
    pod: PodTarget,
    options: ServerOptions,
) -> None:
    """Negotiate and serve one port-forward upgrade on `transport`.

    Handles SPDY/3.1 (`Upgrade: SPDY/3.1` + `X-Stream-Protocol-Version`), the WebSocket tunnel
    `SPDY/3.1+portforward.k8s.io`, and the WebSocket channel protocols `v4.channel.k8s.io`,
    `v4.base64.channel.k8s.io` or none (with `?ports=` / `?port=`). Writes the 101 or the error
    response (400/403 with kubelet's texts) itself, then calls `transport.set_protocol()` and
    runs the session in the background until it ends (errors never propagate to the caller).
    `request.trailing` (bytes already read after the head) is fed to the session first.
    The caller must not touch the transport afterwards. Pod ports are dialled on `pod.address`.
    Must be called from the event loop's thread (inside a protocol callback is fine).
    """
    result = handshake.negotiate(request)
    if isinstance(result, handshake.Refused):
        log.info("port-forward upgrade refused (%d): %s", result.status, result.reason)
        transport.write(result.response)
        transport.close()
        return
    if result.kind == handshake.KIND_CHANNEL:
        # The 101 goes out together with the port announcements: one write, one TLS record.
        channel = _ChannelSession(pod, options, result.ports, result.base64)
        channel.start(transport, request.trailing, head=result.response)
        return
    transport.write(result.response)
    session = _SpdySession(pod, options, tunnel=result.kind == handshake.KIND_TUNNEL)
    if _old_kubectl(request.header("user-agent")):
        session.old_kubectl = True
        # Fewer, bigger frames: spdystream's queues count frames, not bytes.
        session.conn.max_data = OLD_KUBECTL_MAX_DATA
    session.start(transport, request.trailing)


async def shutdown_all(timeout: float = 2.0) -> None:
    """GOAWAY (SPDY) / WebSocket close 1001 (channel) every live session, wait up to `timeout`
    seconds for them to end, then abort what is left."""
    sessions = list(_sessions)
    for s in sessions:
        s.shutdown()
    waits = [s.conn.closed for s in sessions if not s.conn.closed.done()]
    if waits:
        await asyncio.wait(waits, timeout=timeout)
    for s in sessions:
        if not s.conn.closed.done():
            s.conn.abort()
    tasks = list(_tasks)
    for t in tasks:
        t.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)


def live_sessions() -> int:
    """Number of port-forward sessions currently running (for status/metrics)."""
    return len(_sessions)


def _spawn(coro: Any) -> asyncio.Task[Any]:
    task = asyncio.get_running_loop().create_task(coro)
    _tasks.add(task)
    task.add_done_callback(_task_done)
    return task


def _task_done(task: asyncio.Task[Any]) -> None:
    _tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        # A bug, not a peer: keep it to this one forwarded connection, never the loop.
        log.error("port-forward connection failed: %r", task.exception())


# ---------------------------------------------------------------------------------------------
# Error texts (kubelet + containerd, PROTOCOL.md 5.2)


def sandbox_id(pod: PodTarget) -> str:
    """A stable 64-hex "sandbox id" for the pod (containerd's id format)."""
    return hashlib.sha256(f"{pod.namespace}/{pod.name}/{pod.uid}".encode()).hexdigest()


def _netns(pod: PodTarget) -> str:
    return "/var/run/netns/cni-" + str(uuid.UUID(bytes=hashlib.md5(pod.uid.encode()).digest()))


def _go_errno_text(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "i/o timeout"
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.errno == errno.ECONNREFUSED:
            return "connect: connection refused"
        return "connect: " + errno_text(exc)
    return str(exc)


def dial_error_text(pod: PodTarget, port: int, exc: BaseException) -> str:
    why = _go_errno_text(exc)
    sid = sandbox_id(pod)
    return (
        f"error forwarding port {port} to pod {sid}, uid {pod.uid}: failed to execute portforward in "
        f'network namespace "{_netns(pod)}": failed to connect to localhost:{port} inside namespace '
        f'"{sid}", IPv4: dial tcp4 127.0.0.1:{port}: {why} IPv6 dial tcp6 [::1]:{port}: {why} '
    )


def copy_error_text(pod: PodTarget, port: int, error: str) -> str:
    return f"error forwarding port {port} to pod {sandbox_id(pod)}, uid {pod.uid}: {error}"


DIAL_TIMEOUT = 10.0  # seconds for a pod connection (kubelet's dial has no shorter bound)
# Stream pairs waiting for their second stream, per session (kubelet has no bound: 200,000
# SYN_STREAMs that never pair took 500 MiB). A stream that would start one more is refused
# (RST_STREAM REFUSED_STREAM); streams completing a pair are always taken.
MAX_UNPAIRED = 4096


# ---------------------------------------------------------------------------------------------
# SPDY (raw or tunnelled)


class _Pair:
    __slots__ = ("request_id", "error", "data", "timer", "started")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.error: SpdyStream | None = None
        self.data: SpdyStream | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.started = False


class _SpdySession:
    def __init__(self, pod: PodTarget, options: ServerOptions, tunnel: bool) -> None:
        self.pod = pod
        self.options = options
        self.pairs: dict[str, _Pair] = {}
        self.old_kubectl = False  # see OLD_KUBECTL_EOF_FRAMES
        self.conn = SpdyConnection(
            client=False,
            tunnel="ws-server" if tunnel else None,
            idle_timeout=options.idle_timeout,
            on_stream=self._on_stream,
        )

    def start(self, transport: asyncio.Transport, initial: bytes) -> None:
        _sessions.add(self)
        self.conn.closed.add_done_callback(self._ended)
        self.conn.attach(transport, initial)

    def shutdown(self) -> None:
        self.conn.goaway(F.GOAWAY_OK, ws_close_code=1001)

    def _ended(self, _fut: Any) -> None:
        _sessions.discard(self)
        for pair in self.pairs.values():
            if pair.timer is not None:
                pair.timer.cancel()
        self.pairs.clear()

    def _on_stream(self, stream: SpdyStream) -> None:
        headers = stream.headers
        port_text = headers.get("port")
        stream_type = headers.get("streamtype")
        port = _parse_port(port_text)
        if port is None or stream_type not in ("error", "data"):
            # kubelet: logged only, the stream is reset and never replied to
            log.info(
                "port-forward stream %d rejected: port=%r streamtype=%r",
                stream.stream_id,
                port_text,
                stream_type,
            )
            stream.reset(RST_CANCEL)
            return
        request_id = headers.get("requestid")
        if request_id is None:
            # pre-requestID clients: error stream then data stream, back to back
            request_id = str(stream.stream_id if stream_type == "error" else stream.stream_id - 2)
        if len(self.pairs) >= MAX_UNPAIRED and request_id not in self.pairs:
            stream.reset(RST_REFUSED_STREAM)
            return
        stream.reply()
        pair = self.pairs.get(request_id)
        if pair is None:
            pair = _Pair(request_id)
            self.pairs[request_id] = pair
            pair.timer = self.conn.loop.call_later(
                self.options.stream_creation_timeout, self._timeout, pair
            )
        if stream_type == "error":
            if pair.error is not None:
                self._duplicate(pair, stream, "error")
                return
            pair.error = stream
            stream.set_sink(_DISCARD)  # clients never write here; never buffer it either
        else:
            if pair.data is not None:
                self._duplicate(pair, stream, "data")
                return
            pair.data = stream
        if pair.error is not None and pair.data is not None and not pair.started:
            pair.started = True
            if pair.timer is not None:
                pair.timer.cancel()
                pair.timer = None
            del self.pairs[request_id]
            _spawn(self._run(pair.error, pair.data, port))

    def _duplicate(self, pair: _Pair, stream: SpdyStream, kind: str) -> None:
        msg = (
            f"error processing stream for request {pair.request_id}: {kind} stream already assigned"
        )
        log.info("%s", msg)
        if pair.error is not None and not pair.error.local_closed:
            pair.error.write(msg.encode())
        stream.reset(RST_CANCEL)

    def _timeout(self, pair: _Pair) -> None:
        pair.timer = None
        if self.pairs.get(pair.request_id) is pair:
            del self.pairs[pair.request_id]
        msg = f"(conn=&{{{id(self.conn):#x}}}, request={pair.request_id}) timed out waiting for streams"
        log.info("%s", msg)
        if pair.error is not None:
            pair.error.write(msg.encode())
        # Better than kubelet (which leaves them open): end what was created, so the client
        # does not hang on the error stream.
        self._end_streams(pair.error, pair.data, failed=True)

    def _end_streams(self, error: SpdyStream | None, data: SpdyStream | None, failed: bool) -> None:
        for s in (error, data):
            if s is None:
                continue
            if failed and self.options.reset_after_error:
                s.reset(RST_CANCEL)
            else:
                s.write_eof()

    async def _run(self, error: SpdyStream, data: SpdyStream, port: int) -> None:
        try:
            await self._forward(error, data, port)
        except BaseException:
            error.reset(RST_CANCEL)
            data.reset(RST_CANCEL)
            raise

    async def _forward(self, error: SpdyStream, data: SpdyStream, port: int) -> None:
        pod, options = self.pod, self.options
        limits: dict[str, Any] = {"local_eof_linger": POD_EOF_LINGER}
        if self.old_kubectl:
            limits.update(
                read_size=OLD_KUBECTL_MAX_DATA,
                eof_linger=OLD_KUBECTL_EOF_LINGER,
                eof_budget=OLD_KUBECTL_EOF_FRAMES,
            )
        try:
            result: RelayResult = await dial_relay(
                data, pod.address, port, connect_timeout=DIAL_TIMEOUT, **limits
            )
            if not data.remote_closed:
                # Cut by a linger while the client still sends: drop the rest (kubelet keeps
                # nothing for a finished forward), never buffer it or pause the session.
                data.set_sink(_DISCARD)
        except (OSError, asyncio.TimeoutError) as exc:
            if options.silent_errors:
                error.reset(RST_CANCEL)
                data.reset(RST_CANCEL)
                return
            text = dial_error_text(pod, port, exc)
            log.info("%s", text)
            error.write(text.encode())
            self._end_streams(error, data, failed=True)
            return
        if result.error and result.reset is None and not self.conn.is_closing:
            # copy failure (e.g. the pod reset its socket while data was in flight)
            if options.silent_errors:
                error.reset(RST_CANCEL)
                data.reset(RST_CANCEL)
                return
            error.write(copy_error_text(pod, port, result.error).encode())
            self._end_streams(error, data, failed=True)
            return
        error.write_eof()  # kubelet finishes the error stream after every connection


class _Discard:
    """Sink that drops what arrives (the server's view of an error stream)."""

    def data_received(self, view: memoryview) -> None:
        pass

    def eof_received(self) -> None:
        pass

    def reset_received(self, status: int) -> None:
        pass

    def connection_lost(self, exc: BaseException | None) -> None:
        pass

    def drained(self) -> bool:
        return True


_DISCARD = _Discard()


def _parse_port(text: str | None) -> int | None:
    if text is None or not text.isdigit():
        return None
    port = int(text)
    return port if 0 < port <= 65535 else None


# ---------------------------------------------------------------------------------------------
# WebSocket channel protocol


class _ChannelSession:
    def __init__(
        self, pod: PodTarget, options: ServerOptions, ports: list[int], base64: bool
    ) -> None:
        self.pod = pod
        self.options = options
        self.conn = ChannelConnection(
            client=False,
            ports=ports,
            base64=base64,
            idle_timeout=options.idle_timeout,
            auto_close=False,
        )
        self.remaining = len(ports)

    def start(self, transport: asyncio.Transport, initial: bytes, head: bytes = b"") -> None:
        """`head` (the 101) is written together with the port announcements."""
        _sessions.add(self)
        self.conn.closed.add_done_callback(self._ended)
        self.conn.greeting = head
        self.conn.attach(transport, initial)
        if not self.conn.is_closing:
            for ch in self.conn.channels:
                _spawn(self._run(ch))

    def shutdown(self) -> None:
        self.conn.close(1001)

    def _ended(self, _fut: Any) -> None:
        _sessions.discard(self)

    async def _run(self, ch: PortChannel) -> None:
        try:
            await self._forward(ch)
        finally:
            self.remaining -= 1
            if self.remaining <= 0:
                self.conn.close(1000)  # every pod connection ended (kubelet's handler returns)

    async def _forward(self, ch: PortChannel) -> None:
        try:
            # Connect and relay in one: the loop makes the pod connection natively (no Python
            # socket, no resolver thread for the numeric address, no task for the timeout).
            result = await dial_relay(ch, self.pod.address, ch.port, connect_timeout=DIAL_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            text = dial_error_text(self.pod, ch.port, exc)
            log.info("%s", text)
            if not self.options.silent_errors:
                ch.write_error(text)
            ch.reset()
            return
        if result.error and not self.conn.is_closing and not self.options.silent_errors:
            ch.write_error(copy_error_text(self.pod, ch.port, result.error))
        ch.write_eof()
