"""Relay hot path: read buffers are reused once nothing holds them;
many DATA frames in one read (kubectl's 32 KiB frames, tunnelled as several WS messages each,
a WS ping in between) reach the local socket in order, then the FIN."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from fastpf import _frames as F
from fastpf._pump import SPARE_BUFFERS
from fastpf.transport import relay as relay_mod
from fastpf.transport.spdy import SpdyConnection, SpdyStream
from tests.support.fake_transport import BLOCK1, FakeTransport, HoldingSink, syn_stream_bytes
from tests.support.transport_harness import LOOPS, run


def test_exported_tracks_live_views() -> None:
    buf = bytearray(1000)
    assert not F.buffer_exported(buf)
    view = memoryview(buf)[10:20]
    assert F.buffer_exported(buf)  # a transport holding this view blocks reuse
    view.release()
    assert not F.buffer_exported(buf)
    assert len(buf) == 1000


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_relay_reuses_read_buffer_only_when_free(loop_kind: str) -> None:
    async def body() -> None:
        conn = SpdyConnection(client=False)
        t = FakeTransport()
        conn.attach(t)
        stream = SpdyStream(conn, 1, {}, local=False)
        conn.streams[1] = stream
        r = relay_mod._Relay(stream, 4096)
        first = r.get_buffer(-1)
        first[:3] = b"abc"
        buf1 = r.buf
        del first
        r.buffer_updated(3)
        assert t.calls, "the frame was written"
        second = r.get_buffer(-1)
        assert r.buf is not buf1  # the fake transport still holds a view of buf1
        del second
        t.calls.clear()  # the transport "sent" everything: buf1 is free again
        r.buffer_updated(3)  # writes from the current buffer (held again by the fake)
        r.get_buffer(-1)
        assert r.buf is buf1  # a free spare is reused, no fresh allocation
        assert r.spare_count <= SPARE_BUFFERS


@pytest.mark.parametrize("loop_kind", LOOPS)
@pytest.mark.parametrize("tunnel", [None, "ws-server"])
def test_many_frames_in_one_read_in_order_then_fin(tunnel: str | None, loop_kind: str) -> None:
    """Eight 32 KiB DATA frames and the FIN in one read: the local socket gets every byte in
    order, then EOF."""

    async def body() -> None:
        streams: list[SpdyStream] = []
        conn = SpdyConnection(client=False, tunnel=tunnel, on_stream=streams.append)
        t = FakeTransport()
        conn.attach(t)
        ws = tunnel is not None

        def wrap(spdy: bytes) -> bytes:
            if not ws:
                return spdy
            # kubectl's tunnel: header and payload of a DATA frame in separate WS messages
            out = b""
            for part in (spdy[:8], spdy[8:]) if len(spdy) > 8 else (spdy,):
                key = b"\x01\x02\x03\x04"
                masked = bytearray(part)
                F.mask_inplace(masked, key, 0, len(masked))
                out += F.ws_frame_header(F.WS_BINARY, len(part), True, key) + bytes(masked)
            return out

        conn._feed(wrap(syn_stream_bytes(1, BLOCK1)))
        stream = streams[0]
        stream.reply()
        a, b = socket.socketpair()
        task = asyncio.get_running_loop().create_task(relay_mod.relay(stream, a))
        for _ in range(200):  # bounded: until the relay took the stream
            if stream._sink is not None:
                break
            await asyncio.sleep(0.01)
        payloads = [bytes([65 + i]) * 32768 for i in range(8)]
        wire = b"".join(wrap(F.data_header(1, 0, len(p)) + p) for p in payloads)
        wire += wrap(F.data_header(1, F.FLAG_FIN, 0))
        if ws:  # a ping in the middle must not reorder anything
            ping = bytearray(b"hi")
            F.mask_inplace(ping, b"\x05\x06\x07\x08", 0, 2)
            mid = len(wrap(F.data_header(1, 0, 32768) + payloads[0])) * 4
            wire = (
                wire[:mid]
                + F.ws_frame_header(F.WS_PING, 2, True, b"\x05\x06\x07\x08")
                + bytes(ping)
                + wire[mid:]
            )
        # As few reads as the session offers room for (a size hint never grows its buffer,
        # so the FIN may come in a second read); the first one holds most of the frames.
        pos = 0
        for _ in range(4):  # bounded
            if pos == len(wire):
                break
            buf = conn.get_buffer(len(wire) - pos)
            n = min(len(buf), len(wire) - pos)
            assert pos or n >= 200_000
            buf[:n] = wire[pos : pos + n]
            del buf
            conn.buffer_updated(n)
            pos += n
        assert pos == len(wire)
        b.setblocking(False)
        loop = asyncio.get_running_loop()
        got = b""
        for _ in range(1000):  # bounded
            chunk = await asyncio.wait_for(loop.sock_recv(b, 1 << 20), 5)
            if not chunk:
                break
            got += chunk
        assert got == b"".join(payloads)
        b.close()
        result: Any = await asyncio.wait_for(task, 5)
        assert result.remote_eof and result.received == len(got)
        if ws:
            assert any(
                bytes(p[:1]) == bytes([0x80 | F.WS_PONG])
                for kind, d in t.calls
                for p in (d if kind == "writelines" else [d])
            )

    run(body, loop_kind)


def test_views_survive_relocation_past_the_receive_buffer() -> None:
    """Like test_transport_spdy's release test, but well past any receive buffer size (3 MiB
    undrained): DATA views stay valid while the sink has not drained, even when the decoder
    must switch buffers several times."""

    async def body() -> None:
        streams: list[SpdyStream] = []
        conn = SpdyConnection(client=False, on_stream=streams.append)
        conn.attach(FakeTransport())
        conn._feed(syn_stream_bytes(1, BLOCK1))
        got: list[memoryview] = []

        sink = HoldingSink(got)
        streams[0].set_sink(sink)
        count = 3 * (1 << 20) // 100000 + 1
        payloads = [bytes([i % 251]) * 100000 for i in range(count)]
        for p in payloads:
            wire = F.data_header(1, 0, len(p)) + p
            for pos in range(0, len(wire), 65536):
                chunk = wire[pos : pos + 65536]
                buf = conn.get_buffer(len(chunk))
                buf[: len(chunk)] = chunk
                del buf
                conn.buffer_updated(len(chunk))
        assert [bytes(v) for v in got] == payloads  # nothing overwritten while not drained
        sink.pending = False
        conn.get_buffer(-1)
        assert not conn._held

    run(body, "uvloop")
