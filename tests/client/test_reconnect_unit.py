"""Units of the reconnect layer (no network but one loopback TLS pair for keepalive): backoff, durations, console lines, dead-peer
detection on fake connections, the session pool's policy (least-loaded, reconnect, pods that
move, give-up, --reconnect=false) with a fake opener, the pod watcher's verdicts, Running-pod
selection, the new flags, TCP keepalive, and the SPDY PING record that must keep its oldest
timestamp."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Iterable
from typing import Any

import pytest

from fastpf.client.args import parse_args
from fastpf.client.console import Console
from fastpf.client.reconnect import Backoff, ConsoleObserver, DeadPeer, Observers
from fastpf.client.resolve import first_pod, is_serving
from fastpf.client.session_pool import Endpoint, SessionPool
from fastpf.client.watch import PodWatcher, gone_reason
from fastpf.errors import ApiError, ClientError, DeadPeerError, PoolUnavailable, UsageError

# ---- backoff, durations, lines ------------------------------------------------------------------


def test_backoff_is_capped_jittered_exponential() -> None:
    draws = iter([0.0, 1.0, 0.5, 1.0, 1.0, 1.0, 0.0])  # the first attempt draws none
    b = Backoff(initial=0.1, factor=2.0, cap=1.0, rng=lambda: next(draws))
    delays = [b.next() for _ in range(8)]
    assert delays[0] == 0.0  # the first attempt is immediate
    assert delays[1] == pytest.approx(0.05)  # 0.1 with the lowest jitter draw (d/2)
    assert delays[2] == pytest.approx(0.2)  # 0.2, highest draw
    assert delays[3] == pytest.approx(0.3)  # 0.4 * 0.75
    assert delays[4:7] == [pytest.approx(0.8), pytest.approx(1.0), pytest.approx(1.0)]
    assert delays[7] == pytest.approx(0.5)  # capped at 1.0, lowest draw
    b.reset()
    assert b.next() == 0.0


def _lines(buf: io.StringIO) -> list[str]:
    return [ln for ln in buf.getvalue().splitlines() if ln]


def test_console_lines_are_klog_and_throttled() -> None:
    err = io.StringIO()
    obs = ConsoleObserver(Console(io.StringIO(), err))
    obs.lost("web-1", "connection reset by peer", 2, 4)
    for attempt in range(1, 10):
        obs.reconnecting(attempt, 0.5, "connection refused")
    obs.reconnected("web-2", 9, 4.25)
    obs.pod_changed("web-1", "web-2", "was deleted")
    lines = _lines(err)
    assert all(re.match(r"^[WI]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ fastpf\] ", ln) for ln in lines)
    assert lines[0].endswith(
        "lost connection to pod web-1 (2 of 4 connections): connection reset by peer; reconnecting"
    )
    attempts = [int(m.group(1)) for ln in lines if (m := re.search(r"\(attempt (\d+)\)", ln))]
    assert attempts == [2, 4, 8]  # the reason changed at 2, then powers of two
    assert "reconnecting in 500ms (attempt 2): connection refused" in lines[1]
    assert lines[-2].endswith("reconnected to pod web-2 after 4.25s, 9 attempts")
    assert lines[-1].endswith("pod web-1 was deleted; new connections go to pod web-2")


def test_observers_fan_out() -> None:
    seen: list[tuple[str, tuple[Any, ...]]] = []

    class Rec:
        def reconnecting(self, *args: Any) -> None:
            seen.append(("reconnecting", args))

    Observers(Rec(), object()).reconnecting(3, 0.2, "x")
    assert seen == [("reconnecting", (3, 0.2, "x"))]


# ---- dead-peer detection ------------------------------------------------------------------------


class FakeLoop:
    """A clock the test moves; call_later records timers; anything else goes to `real`."""

    def __init__(self, real: Any = None) -> None:
        self.now = 100.0
        self.timers: list[tuple[float, Any]] = []
        self.real = real

    def __getattr__(self, name: str) -> Any:
        if self.real is None:
            raise AttributeError(name)
        return getattr(self.real, name)

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, fn: Any, *args: Any) -> Any:
        self.timers.append((delay, fn))

        class H:
            def cancel(self) -> None:
                pass

        return H()

    def run_for(self, seconds: float) -> None:
        """Advance time firing the (single, re-armed) tick timer."""
        end = self.now + seconds
        for _ in range(10000):
            if not self.timers:
                self.now = end
                return
            delay, fn = self.timers.pop(0)
            if self.now + delay > end:
                self.timers.insert(0, (self.now + delay - end, fn))
                self.now = end
                return
            self.now += delay
            fn()


class FakeTransport:
    def __init__(self) -> None:
        self.wbs = 0

    def get_write_buffer_size(self) -> int:
        return self.wbs


class FakeSpdy:
    """Answers pings only while `answering`."""

    def __init__(self, loop: FakeLoop) -> None:
        self.loop = loop
        self.transport = FakeTransport()
        self.is_closing = False
        self.input_paused = False
        self.last_ping_reply: float | None = None
        self.answering = True
        self.pings = 0
        self.failed: BaseException | None = None

    def ping(self) -> int:
        self.pings += 1
        if self.answering:
            self.last_ping_reply = self.loop.time()
        return self.pings

    def fail(self, exc: BaseException) -> None:
        self.failed = exc
        self.is_closing = True


class FakeWs(FakeSpdy):
    def __init__(self, loop: FakeLoop) -> None:
        super().__init__(loop)
        del self.last_ping_reply
        self.last_pong: float | None = None

    def ping(self) -> int:  # pragma: no cover - must not be used for WebSocket sessions
        raise AssertionError("SPDY ping on a WebSocket session")

    def ws_ping(self, payload: bytes = b"") -> None:
        self.pings += 1
        if self.answering:
            self.last_pong = self.loop.time()


def test_dead_peer_declared_after_timeout_only() -> None:
    loop = FakeLoop()
    dp = DeadPeer(loop, interval=1.0, timeout=4.0)
    alive, silent, ws = FakeSpdy(loop), FakeSpdy(loop), FakeWs(loop)
    for c in (alive, silent, ws):
        dp.add(c)
    loop.run_for(3.0)
    silent.answering = ws.answering = False
    loop.run_for(3.9)
    assert silent.failed is None and ws.failed is None  # not yet: 4 s since the last answer
    loop.run_for(2.5)  # the last answer is seen one check period after it came
    assert isinstance(silent.failed, DeadPeerError) and isinstance(ws.failed, DeadPeerError)
    assert str(silent.failed) == "no reply to PING within 4s"
    assert str(ws.failed) == "no reply to WebSocket ping within 4s"
    assert alive.failed is None and alive.pings >= 7
    assert ws.pings >= 4


def test_dead_peer_progress_counts_as_alive() -> None:
    loop = FakeLoop()
    dp = DeadPeer(loop, interval=1.0, timeout=2.0)
    paused, draining = FakeSpdy(loop), FakeSpdy(loop)
    paused.answering = draining.answering = False
    paused.input_paused = True  # we do not read: the answers may sit unread
    dp.add(paused)
    dp.add(draining)
    for step in range(20):  # 10 s: the write buffer shrinks every 0.5 s (the peer reads)
        draining.transport.wbs = 10_000_000 - step * 1000
        loop.run_for(0.5)
    assert paused.failed is None and draining.failed is None
    loop.run_for(3.0)  # now nothing moves any more
    assert draining.failed is not None and paused.failed is None


def test_dead_peer_with_rare_pings_gives_each_ping_time() -> None:
    loop = FakeLoop()
    dp = DeadPeer(loop, interval=10.0, timeout=2.0)  # pings rarer than the timeout
    conn = FakeSpdy(loop)
    dp.add(conn)
    loop.run_for(30.0)
    assert conn.failed is None  # answered pings, long silences between them are fine
    conn.answering = False
    loop.run_for(15.0)
    assert conn.failed is not None


def test_dead_peer_off_without_interval() -> None:
    loop = FakeLoop()
    dp = DeadPeer(loop, interval=0.0, timeout=2.0)
    conn = FakeSpdy(loop)
    conn.answering = False
    dp.add(conn)
    assert not loop.timers
    assert conn.pings == 0 and conn.failed is None


# ---- the SPDY PING record (transport/spdy.py) ---------------------------------------------------


class _SinkTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def write(self, data: Any) -> None:
        self.data += data

    def writelines(self, parts: Iterable[Any]) -> None:
        for p in parts:
            self.data += p

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def set_protocol(self, proto: Any) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def test_ping_timeout_fires_after_more_than_64_unanswered_pings() -> None:
    """The record of unanswered PINGs used to be cleared after 64 of them, so a ping timeout
    longer than 64 intervals could never fire. Now it stays bounded and keeps the oldest."""
    from fastpf.transport.spdy import SpdyConnection

    async def body() -> BaseException | None:
        conn = SpdyConnection(client=True, ping_interval=0.0, ping_timeout=100.0)
        conn.attach(_SinkTransport())
        real_loop = conn.loop
        fake = FakeLoop(real_loop)
        conn.loop = fake  # type: ignore[assignment]
        conn.ping_interval = 1.0
        for _ in range(150):  # 150 intervals without an answer, ticks as the timer runs them
            fake.now += 1.0
            conn._ping_tick()
        assert len(conn._ping_outstanding) <= 64
        assert min(conn._ping_outstanding.values()) == pytest.approx(101.0)  # the first one
        conn.loop = real_loop
        return await asyncio.wait_for(conn.wait_closed(), 1)

    result = asyncio.run(body())
    assert isinstance(result, TimeoutError) and "ping timeout" in str(result)


# ---- the session pool ---------------------------------------------------------------------------


class FakeConn:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.closed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.transport = None
        self.goaways = 0

    @property
    def is_closing(self) -> bool:
        return self.closed.done()

    def goaway(self, status: int = 0) -> None:
        self.goaways += 1
        if not self.closed.done():
            self.closed.set_result(None)

    def lose(self) -> None:
        self.closed.set_result(ConnectionResetError("connection reset by peer"))


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def lost(self, *args: Any) -> None:
        self.events.append(("lost", *args))

    def reconnecting(self, *args: Any) -> None:
        self.events.append(("reconnecting", *args))

    def reconnected(self, pod: str, attempts: int, downtime: float) -> None:
        self.events.append(("reconnected", pod, attempts))

    def pod_changed(self, *args: Any) -> None:
        self.events.append(("pod_changed", *args))


EP1 = Endpoint("web-1", "/api/v1/namespaces/default/pods/web-1/portforward", (80,))
EP2 = Endpoint("web-2", "/api/v1/namespaces/default/pods/web-2/portforward", (8080,))


class World:
    """A fake cluster for the pool: what resolves, which dials work."""

    def __init__(self) -> None:
        self.endpoint = EP1
        self.up = True
        self.conns: list[FakeConn] = []
        self.resolves = 0

    async def opener(self, endpoint: Endpoint, timeout: float | None) -> FakeConn:
        await asyncio.sleep(0)
        if not self.up:
            raise ClientError("The connection to the server was refused", prefix="")
        conn = FakeConn(endpoint)
        self.conns.append(conn)
        return conn

    async def resolver(self, prefer: str) -> Endpoint:
        self.resolves += 1
        if not self.up:
            raise ClientError("The connection to the server was refused", prefix="")
        return self.endpoint

    def pool(self, rec: Recorder, **kw: Any) -> SessionPool:
        args: dict[str, Any] = {
            "size": 3,
            "opener": self.opener,
            "resolver": self.resolver,
            "observer": rec,
            "backoff": Backoff(initial=0.001, cap=0.002),
        }
        args.update(kw)
        return SessionPool(**args)


async def _until(cond: Any, limit: int = 2000) -> None:
    for _ in range(limit):  # bounded in count; each pass yields to the loop
        if cond():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never held")


def test_pool_spreads_least_loaded() -> None:
    async def body() -> None:
        world, rec = World(), Recorder()
        pool = world.pool(rec)
        await pool.start(EP1)
        await _until(lambda: all(s.live for s in pool.slots))
        got = [await pool.acquire(1) for _ in range(7)]
        assert [s.index for s in got] == [0, 1, 2, 0, 1, 2, 0]
        pool.release(got[1])
        pool.release(got[4])  # slot 1 now idle
        assert (await pool.acquire(1)).index == 1
        await pool.close()
        assert all(c.goaways == 1 for c in world.conns)
        assert rec.events == []

    asyncio.run(body())


def test_pool_reconnects_and_waiters_flow() -> None:
    async def body() -> None:
        world, rec = World(), Recorder()
        pool = world.pool(rec)
        await pool.start(EP1)
        await _until(lambda: all(s.live for s in pool.slots))
        world.up = False
        for c in list(world.conns):
            c.lose()
        waiter = asyncio.ensure_future(pool.acquire(30))
        await _until(lambda: sum(e[0] == "reconnecting" for e in rec.events) >= 3)
        assert not waiter.done()  # held while nothing is up
        world.up = True
        slot = await asyncio.wait_for(waiter, 5)
        assert slot.live and slot.conn is not world.conns[0]
        await _until(lambda: all(s.live for s in pool.slots))
        await _until(lambda: rec.events[-1][0] == "reconnected")
        assert rec.events[0] == ("lost", "web-1", "connection reset by peer", 3, 3)
        assert not pool.fatal.done()
        await pool.close()

    asyncio.run(body())


def test_pool_reconnect_false_is_fatal_on_first_loss() -> None:
    async def body() -> None:
        world, rec = World(), Recorder()
        pool = world.pool(rec, reconnect=False)
        await pool.start(EP1)
        await _until(lambda: all(s.live for s in pool.slots))
        world.conns[1].lose()
        assert await asyncio.wait_for(pool.fatal, 5) == "lost connection to pod"
        await pool.close()

    asyncio.run(body())


def test_pool_gives_up_after_the_deadline() -> None:
    async def body() -> None:
        world, rec = World(), Recorder()
        pool = world.pool(rec, size=1, give_up_after=0.05)
        await pool.start(EP1)
        world.up = False
        world.conns[0].lose()
        msg = await asyncio.wait_for(pool.fatal, 10)
        assert msg.startswith(
            "lost connection to pod web-1 and could not reconnect within 50ms "
            "(--pod-running-timeout): "
        )
        assert "refused" in msg
        with pytest.raises(PoolUnavailable):
            await pool.acquire(1)
        await pool.close()

    asyncio.run(body())


def test_pool_follows_a_moved_pod_and_drains_the_old_one() -> None:
    async def body() -> None:
        world, rec = World(), Recorder()
        pool = world.pool(rec, size=2)
        await pool.start(EP1)
        await _until(lambda: all(s.live for s in pool.slots))
        busy = await pool.acquire(1)  # an established connection on web-1
        old_conns = list(world.conns)
        world.endpoint = EP2
        pool.moved("web-1", "was deleted")
        pool.moved("web-9", "was deleted")  # not ours: ignored
        slot = await pool.acquire(5)  # a new connection goes to web-2
        assert slot.endpoint == EP2 and slot.conn.endpoint == EP2
        idle_old = [c for c in old_conns if c is not busy.conn]
        assert all(c.goaways == 1 for c in idle_old)  # idle web-1 connections closed
        assert busy.conn.goaways == 0  # the busy one keeps going...
        pool.release(busy)
        assert busy.conn.goaways == 1  # ...until its last stream ended
        assert ("pod_changed", "web-1", "web-2", "was deleted") in rec.events
        assert not any(e[0] == "lost" for e in rec.events)
        await pool.close()

    asyncio.run(body())


def test_pool_without_resolver_keeps_its_endpoint() -> None:
    async def body() -> None:
        world, rec = World(), Recorder()
        pool = world.pool(rec, size=1, resolver=None)
        await pool.start(EP1)
        world.endpoint = EP2
        world.conns[0].lose()
        await _until(lambda: pool.pick() is not None)
        assert pool.pick().endpoint == EP1  # type: ignore[union-attr]
        assert world.resolves == 0
        await pool.close()

    asyncio.run(body())


# ---- pod watcher, pod selection ------------------------------------------------------------------


def _pod(
    name: str, phase: str = "Running", deleting: bool = False, ready: bool = True
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {"nodeName": "n"},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_gone_reason() -> None:
    assert gone_reason(None) == "was deleted"
    assert gone_reason(_pod("a")) is None
    assert gone_reason(_pod("a", "Failed")) == "is Failed"
    assert gone_reason(_pod("a", deleting=True)) == "is terminating"
    assert not is_serving(_pod("a", "Pending"))


class FakeApi:
    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.paths: list[str] = []

    async def get(self, path: str, query: dict[str, str] | None = None, what: str = "") -> Any:
        self.paths.append(path)
        answer = self.answers.get(path)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def test_pod_watcher_reports_gone_pods() -> None:
    base = "/api/v1/namespaces/ns/pods/"
    api = FakeApi(
        {
            base + "gone": ApiError('pods "gone" not found', status=404),
            base + "failed": _pod("failed", "Failed"),
            base + "ok": _pod("ok"),
            base + "flaky": ApiError("boom", status=500),
        }
    )
    seen: list[tuple[str, str]] = []

    async def body() -> None:
        w = PodWatcher(api, "ns", lambda: "", lambda p, r: seen.append((p, r)))  # type: ignore[arg-type]
        for name in ("gone", "failed", "ok", "flaky"):
            await w.check(name)

    asyncio.run(body())
    assert seen == [("gone", "was deleted"), ("failed", "is Failed")]


def test_running_only_selection_prefers_the_current_pod() -> None:
    pods = [_pod("old", "Failed"), _pod("a"), _pod("b"), _pod("c", deleting=True)]
    api = FakeApi({"/api/v1/namespaces/ns/pods": {"items": pods}})

    async def pick(**kw: Any) -> str:
        pod = await first_pod(api, "ns", "app=web", 0.0, **kw)  # type: ignore[arg-type]
        return str(pod["metadata"]["name"])

    assert asyncio.run(pick(running_only=True, prefer="b")) == "b"
    assert asyncio.run(pick(running_only=True, prefer="c")) in ("a", "b")  # c is terminating
    api.answers["/api/v1/namespaces/ns/pods"] = {"items": [_pod("old", "Failed")]}
    with pytest.raises(ClientError, match="no running pod matches the selector app=web"):
        asyncio.run(pick(running_only=True))


# ---- flags ---------------------------------------------------------------------------------------


def test_reconnect_flags() -> None:
    o = parse_args(["pod/x", "80"])
    assert (o.reconnect, o.ping_interval, o.ping_timeout, o.connections) == (True, 5.0, 30.0, 4)
    o = parse_args(
        [
            "--reconnect=false",
            "--ping-interval",
            "250ms",
            "--ping-timeout=0",
            "--connections",
            "8",
            "pod/x",
            "80",
        ]
    )
    assert (o.reconnect, o.ping_interval, o.ping_timeout, o.connections) == (False, 0.25, 0.0, 8)
    for argv, msg in (
        (["--connections", "0"], "--connections must be between 1 and 64"),
        (["--connections=65"], "--connections must be between 1 and 64"),
        (["--ping-timeout=-1s"], "--ping-timeout must not be negative"),
        (["--reconnect=maybe"], 'invalid argument "maybe" for "--reconnect"'),
    ):
        with pytest.raises(UsageError) as ei:
            parse_args([*argv, "pod/x", "80"])
        assert msg in ei.value.line


# ---- TCP keepalive on the upgraded connection's socket ---------------------------------------


def test_keepalive_on_a_tls_transport() -> None:
    """set_keepalive reaches the TCP socket under TLS (as the pool calls it on each upgraded
    connection): SO_KEEPALIVE with Go's 15 s idle / 15 s interval / 9 probes. Loopback only."""
    import socket
    import ssl
    from types import SimpleNamespace

    from fastpf.client.reconnect import set_keepalive
    from fastpf.loop import run
    from fastpf.serve import certs

    material = certs.generate(["127.0.0.1"])
    server_ctx = certs.server_context(material)
    client_ctx = ssl.create_default_context(cadata=material.ca_pem.decode())

    async def body() -> tuple[int, int, int, int]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await loop.create_connection(
            asyncio.Protocol, "127.0.0.1", port, ssl=client_ctx, server_hostname="127.0.0.1"
        )
        sock = transport.get_extra_info("socket")
        before = sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        set_keepalive(SimpleNamespace(transport=transport))
        got = (
            before,
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        )
        transport.close()
        server.close()
        return got

    before, on, idle, count = run(body())
    assert before == 0 and on == 1 and idle == 15 and count == 9
