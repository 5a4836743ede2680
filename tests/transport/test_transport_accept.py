"""The per-connection fast paths: streams opened together and awaited without tasks
(start_stream + wait_replies), local connections accepted natively (Accepted + relay), pod
connections dialled by the loop (dial_relay), and the error-text sink (TextCollector)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from fastpf import _frames as F
from fastpf.errors import SessionClosedError, StreamResetError, StreamTimeoutError
from fastpf.transport._base import TextCollector
from fastpf.transport.relay import Accepted, dial_relay, relay
from fastpf.transport.spdy import SpdyConnection
from tests.support.fake_transport import FakeTransport, decode_frames
from tests.support.transport_harness import LOOPS, run


def _client() -> tuple[SpdyConnection, FakeTransport]:
    conn = SpdyConnection(client=True, ping_interval=0)
    t = FakeTransport()
    conn.attach(t)
    return conn, t


def _sent(t: FakeTransport) -> list[tuple[int, int, int]]:
    """(type, stream id, status/flags) of every frame written so far."""
    out = []
    for f in decode_frames(t.wire()):
        out.append((f.type, f.stream_id, f.status if f.type == F.RST_STREAM else f.flags))
    return out


def test_streams_open_together_and_failures_are_reported_per_stream() -> None:
    async def body() -> None:
        conn, t = _client()
        enc = F.SpdyEncoder()
        err = conn.start_stream({"streamtype": "error", "port": "80", "requestid": "0"})
        data = conn.start_stream({"streamtype": "data", "port": "80", "requestid": "0"})
        assert [(k, sid) for k, sid, _ in _sent(t)] == [(F.SYN_STREAM, 1), (F.SYN_STREAM, 3)]
        waiting = asyncio.ensure_future(conn.wait_replies([err, data], timeout=5))
        await asyncio.sleep(0)
        conn._feed(enc.syn_reply(1) + enc.rst_stream(3, F.RST_REFUSED_STREAM))
        failures = await waiting
        assert failures[0] is None
        assert (
            isinstance(failures[1], StreamResetError) and failures[1].status == F.RST_REFUSED_STREAM
        )
        assert 3 not in conn.streams and 1 in conn.streams

        # A lost session fails what is still waiting.
        s5 = conn.start_stream({"streamtype": "error", "port": "80", "requestid": "1"})
        waiting = asyncio.ensure_future(conn.wait_replies([s5], timeout=5))
        await asyncio.sleep(0)
        conn.connection_lost(None)
        (failure,) = await waiting
        assert isinstance(failure, SessionClosedError)
        with pytest.raises(SessionClosedError):
            conn.start_stream({"streamtype": "data"})

    run(body, "uvloop")


def test_reply_timeout_resets_the_streams_that_timed_out() -> None:
    async def body() -> None:
        conn, t = _client()
        a = conn.start_stream({"streamtype": "error"})
        b = conn.start_stream({"streamtype": "data"})
        conn._feed(F.SpdyEncoder().syn_reply(1))  # only the first is answered
        failures = await conn.wait_replies([a, b], timeout=0.05)
        assert failures[0] is None and isinstance(failures[1], StreamTimeoutError)
        assert str(failures[1]) == "Timeout occurred"  # kubectl's text
        assert (F.RST_STREAM, 3, F.RST_CANCEL) in _sent(t)
        assert (F.RST_STREAM, 1, F.RST_CANCEL) not in _sent(t)
        with pytest.raises(StreamTimeoutError):
            await conn.open_stream({"streamtype": "data"}, timeout=0.01)

    run(body, "uvloop")


def test_cancelled_wait_leaves_no_half_open_stream() -> None:
    async def body() -> None:
        conn, t = _client()
        a = conn.start_stream({"streamtype": "error"})
        b = conn.start_stream({"streamtype": "data"})
        conn._feed(F.SpdyEncoder().syn_reply(1))
        waiting = asyncio.ensure_future(conn.wait_replies([a, b], timeout=5))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        resets = [(sid, st) for k, sid, st in _sent(t) if k == F.RST_STREAM]
        assert resets == [(1, F.RST_CANCEL), (3, F.RST_CANCEL)]  # the replied one too
        assert conn.streams == {}

    run(body, "uvloop")


def test_text_collector_keeps_text_until_the_end_and_bounds_it() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        c = TextCollector(loop, limit=8)
        buf = bytearray(b"refused: more than eight")
        c.data_received(memoryview(buf)[:5])
        buf[:5] = b"XXXXX"  # the receive buffer is reused: the text was copied
        c.data_received(memoryview(b" port 80"))
        assert not c.done.done() and c.drained()
        c.reset_received(F.RST_CANCEL)
        c.eof_received()  # a second end changes nothing
        assert await c.done == b"refus po"  # first 8 bytes, unaffected by the buffer reuse

    run(body, "uvloop")


class _Pipe:
    """Stand-in stream: records what relay sends, lets the test end it."""

    header_room = 8
    max_payload = 1 << 20
    local_closed = False
    remote_closed = False

    def __init__(self, session: Any) -> None:
        self.session = session
        self.sent: list[bytes] = []
        self.eof = False
        self.resets: list[int] = []
        self.sink: Any = None

    def send_inplace(self, buf: bytearray, start: int, n: int) -> None:
        self.sent.append(bytes(buf[start : start + n]))

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.sent.append(bytes(data))

    def write_eof(self) -> None:
        self.eof = True

    def reset(self, status: int = 5) -> None:
        self.resets.append(status)

    def set_sink(self, sink: Any) -> None:
        self.sink = sink


def _session() -> Any:
    conn = SpdyConnection(client=True, ping_interval=0)
    conn.attach(FakeTransport())
    return conn


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_accepted_connection_keeps_early_bytes_and_eof_in_order(loop_kind: str) -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        accepted: list[Accepted] = []

        def factory() -> Accepted:
            a = Accepted()
            accepted.append(a)
            return a

        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"before-the-stream")
            writer.write_eof()  # the client is done before the stream even exists
            for _ in range(200):  # bounded: until the bytes and the EOF arrived
                if accepted and accepted[0].eof:
                    break
                await asyncio.sleep(0.01)
            pipe = _Pipe(_session())
            task = asyncio.ensure_future(relay(pipe, accepted[0]))
            for _ in range(200):
                if pipe.eof:
                    break
                await asyncio.sleep(0.01)
            assert b"".join(pipe.sent) == b"before-the-stream" and pipe.eof
            pipe.sink.data_received(memoryview(b"answer"))  # the other direction still flows
            pipe.sink.eof_received()
            assert await asyncio.wait_for(reader.read(), 5) == b"answer"
            result = await asyncio.wait_for(task, 5)
            assert result.sent == len(b"before-the-stream") and result.received == 6
            assert result.local_eof and result.remote_eof and result.error is None
            writer.close()
        finally:
            server.close()

    run(body, loop_kind)


def test_accepted_connection_already_closed_resets_the_stream() -> None:
    async def body() -> None:
        a = Accepted()
        a.connection_lost(None)
        pipe = _Pipe(_session())
        result = await relay(pipe, a)
        assert pipe.resets == [5] and result.error

    run(body, "uvloop")


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_dial_relay_refused_raises_before_sending(loop_kind: str) -> None:
    async def body() -> None:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now
        pipe = _Pipe(_session())
        with pytest.raises(OSError):
            await dial_relay(pipe, "127.0.0.1", port, connect_timeout=5)
        assert pipe.sent == [] and pipe.sink is None and pipe.resets == []

    run(body, loop_kind)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_dial_relay_moves_both_ways(loop_kind: str) -> None:
    async def body() -> None:
        async def pod(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"banner")
            got = await reader.read()
            writer.write(got.upper())
            writer.close()

        server = await asyncio.start_server(pod, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            pipe = _Pipe(_session())
            task = asyncio.ensure_future(dial_relay(pipe, "127.0.0.1", port, connect_timeout=5))
            for _ in range(200):
                if pipe.sink is not None and pipe.sent:
                    break
                await asyncio.sleep(0.01)
            assert pipe.sent == [b"banner"]
            pipe.sink.data_received(memoryview(b"ping"))
            pipe.sink.eof_received()
            result = await asyncio.wait_for(task, 5)
            assert b"".join(pipe.sent) == b"bannerPING" and pipe.eof
            assert result.received == 4 and result.error is None
        finally:
            server.close()

    run(body, loop_kind)
