"""In-process client (upgrade.connect) <-> server (accept_portforward) pairs over loopback, for
every protocol, on plain asyncio and uvloop."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, cast

import pytest

from fastpf.errors import StreamResetError
from fastpf.transport import kubelet, upgrade
from fastpf.transport.channel import ChannelConnection
from fastpf.transport.relay import LOCAL_HIGH
from fastpf.transport.spdy import SpdyConnection
from fastpf.types import ServerOptions
from tests.support.patterns import pattern
from tests.support.pki import tls_contexts
from tests.support.targets import (
    Target,
    digest_handler,
    echo_handler,
    free_port,
    make_source_handler,
)
from tests.support.transport_harness import LOOPS, PATH, POD, ApiServer, Forward, connect, run

PROTOCOLS = ["spdy", "websocket", "ws-channel"]
SPDY_PROTOCOLS = ["spdy", "websocket"]


async def _finish(conn: Any) -> None:
    if isinstance(conn, SpdyConnection):
        conn.goaway()
    else:
        conn.close()
    await asyncio.wait_for(conn.wait_closed(), 5)


async def _pump_echo(fw: Forward, data: bytes) -> str:
    """Write `data` while reading the echo; returns the echo's sha256."""

    async def writer() -> None:
        view = memoryview(data)
        for pos in range(0, len(data), 1 << 20):
            fw.writer.write(view[pos : pos + (1 << 20)])
            await fw.writer.drain()

    task = asyncio.get_running_loop().create_task(writer())
    h = hashlib.sha256()
    left = len(data)
    for _ in range(1 << 20):
        if not left:
            break
        chunk = await fw.reader.read(min(left, 1 << 20))
        assert chunk, "EOF before the echo was complete"
        h.update(chunk)
        left -= len(chunk)
    await task
    return h.hexdigest()


@pytest.mark.parametrize("loop_kind", LOOPS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sha256_both_ways(protocol: str, loop_kind: str) -> None:
    size = 16 << 20

    async def body() -> None:
        async with Target(echo_handler) as t, ApiServer() as srv:
            conn = await connect(srv, protocol, [t.port])
            fw = await Forward.open(conn, t.port, 0)
            data = pattern(size, 1)
            assert await _pump_echo(fw, data) == hashlib.sha256(data).hexdigest()
            fw.writer.close()
            result = await asyncio.wait_for(fw.relay_task, 10)
            assert result.sent == size and result.received == size
            assert await fw.error_text() == b""
            await _finish(conn)

    run(body, loop_kind)


@pytest.mark.parametrize("loop_kind", LOOPS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_pod_to_client_sha256(protocol: str, loop_kind: str) -> None:
    size = 16 << 20

    async def body() -> None:
        async with Target(make_source_handler(size)) as t, ApiServer() as srv:
            conn = await connect(srv, protocol, [t.port])
            fw = await Forward.open(conn, t.port, 0)
            h = hashlib.sha256()
            n = 0
            for _ in range(1 << 20):
                chunk = await fw.reader.read(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
                n += len(chunk)
            assert n == size
            assert h.hexdigest() == hashlib.sha256(pattern(size, 7)).hexdigest()
            fw.writer.close()
            await asyncio.wait_for(fw.relay_task, 10)
            await _finish(conn)

    run(body, loop_kind)


@pytest.mark.parametrize("loop_kind", LOOPS)
@pytest.mark.parametrize("protocol", SPDY_PROTOCOLS)
def test_half_close_client_first(protocol: str, loop_kind: str) -> None:
    """Client EOF reaches the pod as EOF; the pod's answer still flows back afterwards."""

    async def body() -> None:
        async with Target(digest_handler) as t, ApiServer() as srv:
            conn = await connect(srv, protocol, [t.port])
            fw = await Forward.open(conn, t.port, 0)
            data = pattern(3 << 20, 2)
            fw.writer.write(data)
            await fw.writer.drain()
            fw.writer.write_eof()
            answer = await asyncio.wait_for(fw.reader.read(), 10)
            assert answer == f"{hashlib.sha256(data).hexdigest()} {len(data)}\n".encode()
            result = await asyncio.wait_for(fw.relay_task, 10)
            assert result.local_eof and result.remote_eof and result.reset is None
            assert await fw.error_text() == b""
            await _finish(conn)

    run(body, loop_kind)


@pytest.mark.parametrize("loop_kind", LOOPS)
@pytest.mark.parametrize("protocol", SPDY_PROTOCOLS)
def test_half_close_pod_first(protocol: str, loop_kind: str) -> None:
    """The pod's EOF reaches the client; the client keeps sending afterwards."""

    async def body() -> None:
        got: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"hello")
            writer.write_eof()
            await writer.drain()
            h = hashlib.sha256()
            for _ in range(1 << 20):
                chunk = await reader.read(1 << 18)
                if not chunk:
                    break
                h.update(chunk)
            got.set_result(h.hexdigest())

        async with Target(handler) as t, ApiServer() as srv:
            conn = await connect(srv, protocol, [t.port])
            fw = await Forward.open(conn, t.port, 0)
            assert await asyncio.wait_for(fw.reader.read(), 10) == b"hello"  # to EOF
            data = pattern(2 << 20, 3)
            fw.writer.write(data)
            await fw.writer.drain()
            fw.writer.write_eof()
            assert await asyncio.wait_for(got, 10) == hashlib.sha256(data).hexdigest()
            result = await asyncio.wait_for(fw.relay_task, 10)
            assert result.remote_eof and result.local_eof
            await _finish(conn)

    run(body, loop_kind)


@pytest.mark.parametrize("loop_kind", LOOPS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_many_concurrent_streams(protocol: str, loop_kind: str) -> None:
    count = 100

    async def body() -> None:
        async with Target(echo_handler) as t, ApiServer() as srv:
            conn = await connect(
                srv, protocol, [t.port] * (count if protocol == "ws-channel" else 1)
            )
            forwards = await asyncio.gather(
                *(Forward.open(conn, t.port, i, index=i) for i in range(count))
            )

            async def one(i: int, fw: Forward) -> bool:
                data = pattern(64 << 10, 100 + i)
                return await _pump_echo(fw, data) == hashlib.sha256(data).hexdigest()

            assert all(await asyncio.gather(*(one(i, fw) for i, fw in enumerate(forwards))))
            for fw in forwards:
                fw.writer.close()
            results = await asyncio.wait_for(
                asyncio.gather(*(fw.relay_task for fw in forwards)), 10
            )
            assert all(r.received == 64 << 10 for r in results)
            if isinstance(conn, SpdyConnection):
                ids = sorted(fw.data.stream_id for fw in forwards)
                assert len(set(ids)) == count and all(i % 2 == 1 for i in ids)
                await _finish(conn)
            else:
                # every local socket closed: the client ends the session itself
                await asyncio.wait_for(conn.wait_closed(), 5)

    run(body, loop_kind)


@pytest.mark.parametrize("loop_kind", LOOPS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("mode", ["rst", "fin", "silent"])
def test_refused_pod_port(protocol: str, mode: str, loop_kind: str) -> None:
    if protocol == "ws-channel" and mode == "fin":
        pytest.skip("no FIN/RST choice on the channel protocol")
    options = ServerOptions(reset_after_error=mode != "fin", silent_errors=mode == "silent")
    port = free_port()

    async def body() -> None:
        async with ApiServer(options=options) as srv:
            conn = await connect(srv, protocol, [port])
            fw = await Forward.open(conn, port, 0)
            text = (await fw.error_text()).decode()
            if mode == "fin" or protocol == "ws-channel":
                # the remote side ended with EOF: the local connection sees EOF, then closes
                assert await asyncio.wait_for(fw.reader.read(), 10) == b""
                fw.writer.close()
            result = await asyncio.wait_for(fw.relay_task, 10)
            if mode == "silent":
                assert text == ""
            else:
                assert text.startswith(
                    f"error forwarding port {port} to pod {kubelet.sandbox_id(POD)}, uid {POD.uid}: "
                    'failed to execute portforward in network namespace "/var/run/netns/cni-'
                )
                assert f"IPv4: dial tcp4 127.0.0.1:{port}: connect: connection refused" in text
            if protocol != "ws-channel":
                assert result.reset == (None if mode == "fin" else 5)
                assert result.remote_eof == (mode == "fin")
                # the session survives a refused connection
                assert not conn.is_closing
                await _finish(conn)
            else:
                await asyncio.wait_for(conn.wait_closed(), 5)

    run(body, loop_kind)


def _server_session() -> Any:
    sessions = list(kubelet._sessions)
    assert len(sessions) == 1
    return sessions[0].conn


@pytest.mark.parametrize("loop_kind", LOOPS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_stalled_reader_memory_bounded(protocol: str, loop_kind: str) -> None:
    """The local reader stops reading: buffers stay at the high-water marks (measured as
    transport buffer sizes), then everything arrives intact once it reads again."""
    size = 48 << 20

    async def body() -> None:
        async with (
            Target(make_source_handler(size), small=True) as t,
            ApiServer(small_buffers=True) as srv,
        ):
            conn = await connect(srv, protocol, [t.port])
            fw = await Forward.open(conn, t.port, 0)
            cast(asyncio.Transport, fw.writer.transport).pause_reading()
            sink = fw.data._sink.r  # the client relay (socket protocol + sink)
            server = _server_session()
            last = -1
            stable = 0
            for _ in range(500):  # until the flow stops (bounded)
                await asyncio.sleep(0.01)
                now = sink.result.received
                stable = stable + 1 if now == last else 0
                last = now
                if stable >= 15:
                    break
            assert stable >= 15, "flow never stopped"
            assert sink.result.received < size // 2
            frame = 256 << 10
            assert sink.transport.get_write_buffer_size() <= LOCAL_HIGH + frame
            assert (
                server.transport.get_write_buffer_size()
                <= server.transport.get_write_buffer_limits()[1] + 2 * frame
            )
            assert conn.input_paused  # the client stopped reading the upgraded connection
            assert fw.data._inbox.buffered == 0  # the relay's sink took everything, nothing queued
            # resume and check integrity
            cast(asyncio.Transport, fw.writer.transport).resume_reading()
            h = hashlib.sha256()
            n = 0
            for _ in range(1 << 20):
                chunk = await fw.reader.read(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
                n += len(chunk)
            assert n == size
            assert h.hexdigest() == hashlib.sha256(pattern(size, 7)).hexdigest()
            fw.writer.close()
            await asyncio.wait_for(fw.relay_task, 10)
            if isinstance(conn, SpdyConnection):
                await _finish(conn)

    run(body, loop_kind)


@pytest.mark.parametrize("loop_kind", LOOPS)
@pytest.mark.parametrize("protocol", SPDY_PROTOCOLS)
def test_client_ping_echoed(protocol: str, loop_kind: str) -> None:
    async def body() -> None:
        async with ApiServer() as srv:
            conn = await connect(srv, protocol, [1], ping_interval=0.05)
            for _ in range(200):
                if conn.last_ping_rtt is not None:
                    break
                await asyncio.sleep(0.01)
            assert conn.last_ping_rtt is not None
            pid = conn.ping()
            assert pid % 2 == 1
            for _ in range(200):
                if pid not in conn._ping_outstanding:
                    break
                await asyncio.sleep(0.01)
            assert pid not in conn._ping_outstanding
            await _finish(conn)

    run(body, loop_kind)


@pytest.mark.parametrize("loop_kind", LOOPS)
@pytest.mark.parametrize("protocol", SPDY_PROTOCOLS)
def test_stream_creation_timeout(protocol: str, loop_kind: str) -> None:
    options = ServerOptions(stream_creation_timeout=0.2)

    async def body() -> None:
        async with ApiServer(options=options) as srv:
            conn = await connect(srv, protocol, [])
            err = await conn.open_stream(
                {"streamtype": "error", "port": "80", "requestid": "7"}, timeout=5
            )
            text = (await asyncio.wait_for(err.read_all(), 5)).decode()
            assert text.startswith("(conn=&{0x") and text.endswith(
                ", request=7) timed out waiting for streams"
            )
            assert not conn.is_closing
            await _finish(conn)

    run(body, loop_kind)


@pytest.mark.parametrize("loop_kind", LOOPS)
@pytest.mark.parametrize("protocol", SPDY_PROTOCOLS)
def test_legacy_pairing_without_requestid(protocol: str, loop_kind: str) -> None:
    async def body() -> None:
        async with Target(digest_handler) as t, ApiServer() as srv:
            conn = await connect(srv, protocol, [])
            for round_ in range(3):
                fw = await Forward.open(conn, t.port, None)
                data = pattern(100_000, round_)
                fw.writer.write(data)
                fw.writer.write_eof()
                answer = await asyncio.wait_for(fw.reader.read(), 10)
                assert answer.startswith(hashlib.sha256(data).hexdigest().encode())
                await asyncio.wait_for(fw.relay_task, 10)
                assert await fw.error_text() == b""
            await _finish(conn)

    run(body, loop_kind)


@pytest.mark.parametrize("protocol", SPDY_PROTOCOLS)
def test_duplicate_stream_and_bad_headers(protocol: str) -> None:
    async def body() -> None:
        async with ApiServer(options=ServerOptions(stream_creation_timeout=0.3)) as srv:
            conn = await connect(srv, protocol, [])
            err = await conn.open_stream({"streamtype": "error", "port": "80", "requestid": "1"})
            dup = await conn.open_stream({"streamtype": "error", "port": "80", "requestid": "1"})
            assert dup.stream_id == err.stream_id + 2
            for bad in (
                {"streamtype": "data", "port": "x"},
                {"streamtype": "data"},
                {"streamtype": "data", "port": "0"},
                {"streamtype": "bogus", "port": "80"},
            ):
                with pytest.raises(StreamResetError):
                    await conn.open_stream(bad)
            text = (await asyncio.wait_for(err.read_all(), 5)).decode()
            assert text.startswith(
                "error processing stream for request 1: error stream already assigned"
            )
            await _finish(conn)

    run(body, "uvloop")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_shutdown_all(protocol: str) -> None:
    async def body() -> None:
        async with Target(echo_handler) as t, ApiServer() as srv:
            conn = await connect(srv, protocol, [t.port])
            fw = await Forward.open(conn, t.port, 0)
            assert kubelet.live_sessions() == 1
            await kubelet.shutdown_all(2.0)
            await asyncio.wait_for(conn.wait_closed(), 5)
            if isinstance(conn, SpdyConnection):
                assert conn.goaway_received
            await asyncio.wait_for(fw.relay_task, 5)
            assert kubelet.live_sessions() == 0

    run(body, "uvloop")


def test_idle_timeout() -> None:
    async def body() -> None:
        async with ApiServer(options=ServerOptions(idle_timeout=0.2)) as srv:
            conn = await connect(srv, "spdy", [], ping_interval=0)
            await asyncio.wait_for(conn.wait_closed(), 5)
            assert conn.goaway_received
            # pings keep a session alive
            conn2 = await connect(srv, "spdy", [], ping_interval=0.05)
            await asyncio.sleep(0.5)
            assert not conn2.is_closing
            await _finish(conn2)

    run(body, "uvloop")


@pytest.mark.parametrize("variant", ["ws-channel", "ws-channel-base64"])
def test_channel_two_ports_one_session(variant: str) -> None:
    """Two ports in one channel session (binary and base64 text variants)."""

    async def body() -> None:
        async with Target(echo_handler) as t1, Target(digest_handler) as t2, ApiServer() as srv:
            conn = await connect(srv, variant, [t1.port, t2.port])
            assert isinstance(conn, ChannelConnection) and conn.base64 == variant.endswith("base64")
            fw1 = await Forward.open(conn, t1.port, 0, index=0)
            fw2 = await Forward.open(conn, t2.port, 0, index=1)
            data = pattern(1 << 20, 9)
            assert await _pump_echo(fw1, data) == hashlib.sha256(data).hexdigest()
            fw2.writer.write(data)
            await fw2.writer.drain()
            fw1.writer.close()
            fw2.writer.close()
            await asyncio.wait_for(asyncio.gather(fw1.relay_task, fw2.relay_task), 10)
            await asyncio.wait_for(conn.wait_closed(), 5)
            assert srv.requests[-1].query["ports"] == [f"{t1.port},{t2.port}"]

    run(body, "uvloop")


@pytest.mark.parametrize("loop_kind", LOOPS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_over_tls(protocol: str, loop_kind: str) -> None:
    """The takeover (set_protocol to a BufferedProtocol) works on TLS transports, both roles."""
    server_ctx, client_ctx = tls_contexts()

    async def body() -> None:
        async with (
            Target(echo_handler) as t,
            ApiServer(ssl=server_ctx, client_ssl=client_ctx) as srv,
        ):
            conn = await connect(srv, protocol, [t.port])
            fw = await Forward.open(conn, t.port, 0)
            data = pattern(4 << 20, 11)
            assert await _pump_echo(fw, data) == hashlib.sha256(data).hexdigest()
            fw.writer.close()
            await asyncio.wait_for(fw.relay_task, 10)
            if isinstance(conn, SpdyConnection):
                await _finish(conn)
            else:
                await asyncio.wait_for(conn.wait_closed(), 5)

    run(body, loop_kind)


@pytest.mark.parametrize("loop_kind", LOOPS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_stalled_pod_memory_bounded(protocol: str, loop_kind: str) -> None:
    """The pod stops reading while the client uploads: the server stops reading the upgraded
    connection, the client's upgraded transport fills to its high-water mark and the client
    stops reading the local socket. Buffers measured, then the upload completes intact."""
    size = 48 << 20

    async def body() -> None:
        go = asyncio.Event()
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await go.wait()
            h = hashlib.sha256()
            n = 0
            for _ in range(1 << 20):
                chunk = await reader.read(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
                n += len(chunk)
                if n >= size:
                    break
            done.set_result(h.hexdigest())
            writer.write(b"k")
            await writer.drain()

        async with Target(handler, small=True) as t, ApiServer(small_buffers=True) as srv:
            conn = await connect(srv, protocol, [t.port])
            fw = await Forward.open(conn, t.port, 0)
            data = pattern(size, 12)
            view = memoryview(data)

            async def upload() -> None:
                for pos in range(0, size, 1 << 20):
                    fw.writer.write(view[pos : pos + (1 << 20)])
                    await fw.writer.drain()

            up = asyncio.get_running_loop().create_task(upload())
            relay_proto = fw.data._sink.r
            server = _server_session()
            last = -1
            stable = 0
            for _ in range(500):
                await asyncio.sleep(0.01)
                now = relay_proto.result.sent
                stable = stable + 1 if now == last else 0
                last = now
                if stable >= 15:
                    break
            assert stable >= 15, "flow never stopped"
            assert relay_proto.result.sent < size // 2
            frame = 256 << 10
            assert (
                conn.transport.get_write_buffer_size()
                <= conn.transport.get_write_buffer_limits()[1] + 2 * frame
            )
            assert not relay_proto.transport.is_reading()  # client stopped reading the local socket
            assert server.input_paused  # server stopped reading the upgraded connection
            (pod_relay,) = [k for k in server._input_pauses if hasattr(k, "transport")]
            assert pod_relay.transport.get_write_buffer_size() <= LOCAL_HIGH + frame
            go.set()
            assert await asyncio.wait_for(done, 20) == hashlib.sha256(data).hexdigest()
            await up
            assert await asyncio.wait_for(fw.reader.readexactly(1), 5) == b"k"
            fw.writer.close()
            await asyncio.wait_for(fw.relay_task, 10)
            if isinstance(conn, SpdyConnection):
                await _finish(conn)

    run(body, loop_kind)


@pytest.mark.parametrize(
    ("user_agent", "old"),
    [
        ("kubectl/v1.29.14 (linux/amd64) kubernetes/abc", True),
        ("kubectl.1.31/v1.31.4 (linux/amd64) kubernetes/abc", True),
        ("oc/4.14.0 (linux/amd64) kubernetes/abc", True),  # OpenShift 4.14 = kubernetes 1.27
        ("oc/4.19.0 (linux/amd64) kubernetes/abc", False),  # = kubernetes 1.32
        ("kubectl/v1.33.1 (linux/amd64) kubernetes/abc", False),
        ("fastpf-test", False),
    ],
)
def test_half_close_policy_by_client(user_agent: str, old: bool) -> None:
    """After the client's FIN, kubectl <= 1.31 gets a bounded tail of pod data (whole 4 MiB
    frames, at most OLD_KUBECTL_EOF_FRAMES of them), then FIN: it stops reading a stream it
    FINed once its local socket is gone, and more would stall its session. Other clients keep
    the full pod -> client direction (pure half-close)."""
    size = 160 << 20

    async def body() -> None:
        async with Target(make_source_handler(size)) as t, ApiServer() as srv:
            dialer = srv.dialer
            dialer.headers = [("User-Agent", user_agent)]
            conn = await upgrade.connect(dialer, PATH, "spdy", [])
            fw = await Forward.open(conn, t.port, 0)
            await fw.reader.readexactly(1 << 20)
            fw.writer.write_eof()
            n = 1 << 20
            for _ in range(1 << 20):
                chunk = await asyncio.wait_for(fw.reader.read(1 << 20), 10)
                if not chunk:
                    break
                n += len(chunk)
            result = await asyncio.wait_for(fw.relay_task, 10)
            assert result.remote_eof and await fw.error_text() == b""
            if old:
                budget = kubelet.OLD_KUBECTL_EOF_FRAMES * kubelet.OLD_KUBECTL_MAX_DATA
                assert 8 << 20 < n <= (1 << 20) + budget + (16 << 20), n
                assert n < size
            else:
                assert n == size
            await _finish(conn)

    run(body, "uvloop")


@pytest.mark.parametrize(
    "user_agent",
    [
        "kubectl/v1.29.14 (linux/amd64) kubernetes/abc",
        "oc/4.14.0 (linux/amd64) kubernetes/abc",
        "kubectl/v1.33.1 (linux/amd64) kubernetes/abc",
        "fastpf-test",
    ],
)
def test_pod_close_ends_error_stream_without_client_fin(user_agent: str) -> None:
    """The pod sends and closes; the client never FINs its data stream (kubectl <= 1.31 closes
    its local socket only once the error stream ended). The server relays the FIN at once and
    ends the error stream after kubelet.POD_EOF_LINGER, for every client; what the client
    still sends afterwards is dropped without stalling the session."""
    size = 4 << 20

    async def body() -> None:
        loop = asyncio.get_running_loop()
        async with (
            Target(make_source_handler(size)) as t,
            Target(echo_handler) as e,
            ApiServer() as srv,
        ):
            srv.dialer.headers = [("User-Agent", user_agent)]
            conn = await upgrade.connect(srv.dialer, PATH, "spdy", [])
            assert isinstance(conn, SpdyConnection)
            error = await conn.open_stream(
                {"streamtype": "error", "port": str(t.port), "requestid": "0"}
            )
            error.write_eof()
            data = await conn.open_stream(
                {"streamtype": "data", "port": str(t.port), "requestid": "0"}
            )
            data.write(b"%d\n" % size)
            got = 0
            for _ in range(1 << 20):
                chunk = await asyncio.wait_for(data.read(), 10)
                if not chunk:
                    break
                got += len(chunk)
            assert got == size  # the pod's bytes, then its FIN
            fin_at = loop.time()
            assert await asyncio.wait_for(error.read_all(), 10) == b""
            waited = loop.time() - fin_at
            assert 0.5 * kubelet.POD_EOF_LINGER <= waited <= kubelet.POD_EOF_LINGER + 3, waited
            for _ in range(64):  # 16 MiB more after the cut: dropped, never buffered
                data.write(bytes(256 << 10))
            fw = await Forward.open(conn, e.port, 1)
            fw.writer.write(b"still flowing")
            assert await asyncio.wait_for(fw.reader.readexactly(13), 10) == b"still flowing"
            assert not conn.input_paused
            await _finish(conn)

    run(body, "uvloop")
