"""SpdyConnection / ChannelConnection against a recording fake transport: the write pattern
(one write per DATA frame, no copies, SYN_REPLY first), ping parity, kubectl's known-answer
SYN_STREAM bytes fed whole and one byte at a time, tunnel masking per role."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fastpf import _frames as F
from fastpf.transport._base import COALESCE_LIMIT
from fastpf.transport.channel import ChannelConnection
from fastpf.transport.spdy import SpdyConnection, SpdyStream
from tests.support.fake_transport import (
    BLOCK1,
    BLOCK2,
    FakeTransport,
    HoldingSink,
    decode_frames,
    syn_stream_bytes,
)
from tests.support.transport_harness import run


def _server(tunnel: str | None = None) -> tuple[SpdyConnection, FakeTransport, list[SpdyStream]]:
    streams: list[SpdyStream] = []
    conn = SpdyConnection(client=False, tunnel=tunnel, on_stream=streams.append)
    t = FakeTransport()
    conn.attach(t)
    return conn, t, streams


@pytest.mark.parametrize("chunking", ["whole", "bytewise"])
def test_kubectl_syn_streams_known_answer(chunking: str) -> None:
    async def body() -> None:
        conn, t, streams = _server()
        wire = syn_stream_bytes(1, BLOCK1) + syn_stream_bytes(3, BLOCK2)
        if chunking == "whole":
            conn._feed(wire)
        else:
            for i in range(len(wire)):
                buf = conn.get_buffer(1)
                buf[0] = wire[i]
                conn.buffer_updated(1)
        assert [s.headers for s in streams] == [
            {"streamtype": "error", "port": "8080", "requestid": "0"},
            {"streamtype": "data", "port": "8080", "requestid": "0"},
        ]
        assert not conn.is_closing

    run(body, "uvloop")


def test_data_is_one_gather_write_without_copy_and_reply_first() -> None:
    async def body() -> None:
        conn, t, streams = _server()
        conn._feed(syn_stream_bytes(1, BLOCK1))
        stream = streams[0]
        big = COALESCE_LIMIT + 1  # larger writes are never copied
        payload = b"x" * big
        stream.write(payload)  # not replied yet: SYN_REPLY must go first
        kinds = [f.type for f in decode_frames(t.wire())]
        assert kinds == [F.SYN_REPLY, F.DATA]
        kind, parts = t.calls[-1]
        assert kind == "writelines" and len(parts) == 2 and parts[1].obj is payload
        # relay fast path: header packed in the gap, one write of one contiguous view
        room = stream.header_room
        buf = bytearray(room + big)
        buf[room:] = b"y" * big
        t.calls.clear()
        stream.send_inplace(buf, room, big)
        assert len(t.calls) == 1 and t.calls[0][0] == "write"
        view = t.calls[0][1]
        assert isinstance(view, memoryview) and view.obj is buf
        (frame,) = decode_frames(t.wire())
        assert frame.type == F.DATA and frame.stream_id == 1 and bytes(frame.payload) == b"y" * big

    run(body, "uvloop")


@pytest.mark.parametrize("role", ["ws-server", "ws-client"])
def test_tunnel_one_message_per_frame_and_masking(role: str) -> None:
    async def body() -> None:
        conn = SpdyConnection(client=role == "ws-client", tunnel=role)
        t = FakeTransport()
        conn.attach(t)
        stream = SpdyStream(conn, 1, {}, local=True)
        room = stream.header_room
        buf = bytearray(room + 70000)
        buf[room:] = b"z" * 70000
        stream.send_inplace(buf, room, 70000)
        assert len(t.calls) == 1 and t.calls[0][0] == "write" and t.calls[0][1].obj is buf
        stream.write(b"abc")
        stream.write_eof()
        ws = F.WsDecoder(expect_masked=role == "ws-client")
        ws.feed(t.wire())
        messages = []
        for _ in range(10):
            f = ws.next_frame()
            if f is None:
                break
            assert f.opcode == F.WS_BINARY and f.fin
            messages.append(bytes(f.payload))
        assert ws.error is None and len(messages) == 3  # one WS message per SPDY frame
        frames = decode_frames(b"".join(messages))
        assert [(f.type, f.flags, len(f.payload)) for f in frames] == [
            (F.DATA, 0, 70000),
            (F.DATA, 0, 3),
            (F.DATA, F.FLAG_FIN, 0),
        ]

    run(body, "uvloop")


def test_ping_parity_and_client_ping_ids() -> None:
    async def body() -> None:
        conn, t, _ = _server()
        enc = F.SpdyEncoder()
        conn._feed(enc.ping(1) + enc.ping(4) + enc.ping(7))
        assert [(f.type, f.ping_id) for f in decode_frames(t.wire())] == [(F.PING, 1), (F.PING, 7)]
        client = SpdyConnection(client=True, ping_interval=0)
        ct = FakeTransport()
        client.attach(ct)
        assert [client.ping(), client.ping()] == [1, 3]
        client._feed(enc.ping(1) + enc.ping(2))  # reply to ours; the server's ping echoed
        assert client.last_ping_rtt is not None
        assert [f.ping_id for f in decode_frames(ct.wire())] == [1, 3, 2]

    run(body, "uvloop")


def test_decoder_release_waits_for_drained_sinks() -> None:
    """DATA views stay valid until every sink that got one drained."""

    async def body() -> None:
        conn, t, streams = _server()
        conn._feed(syn_stream_bytes(1, BLOCK1))
        stream = streams[0]
        got: list[memoryview] = []

        sink = HoldingSink(got)
        stream.set_sink(sink)
        payloads = [bytes([i]) * 50000 for i in range(12)]  # > the 256 KiB decoder buffer
        for p in payloads:
            wire = F.data_header(1, 0, len(p)) + p
            for pos in range(0, len(wire), 8192):
                chunk = wire[pos : pos + 8192]
                buf = conn.get_buffer(len(chunk))
                buf[: len(chunk)] = chunk
                conn.buffer_updated(len(chunk))
        assert [bytes(v) for v in got] == payloads  # nothing overwritten while not drained
        sink.pending = False
        conn.get_buffer(-1)
        assert not conn._held

    run(body, "uvloop")


@pytest.mark.parametrize("tunnel", ["ws-client", "ws-server"])
def test_tunnel_data_decoded_in_place_waits_for_drained_sinks(tunnel: str) -> None:
    """Tunnelled DATA is decoded inside the WS buffer (no copy into the SPDY decoder): its views
    stay valid until every sink drained, whole and split messages mixed, in order."""

    async def body() -> None:
        conn = SpdyConnection(client=tunnel == "ws-client", tunnel=tunnel, ping_interval=0)
        t = FakeTransport()
        conn.attach(t)
        stream = SpdyStream(conn, 1, {}, local=True)
        conn.streams[1] = stream
        got: list[memoryview] = []

        sink = HoldingSink(got)
        stream.set_sink(sink)
        key = b"\x01\x02\x03\x04" if tunnel == "ws-server" else None

        def message(part: bytes) -> bytes:
            if key is None:
                return F.ws_frame_header(F.WS_BINARY, len(part)) + part
            masked = bytearray(part)
            F.mask_inplace(masked, key, 0, len(masked))
            return F.ws_frame_header(F.WS_BINARY, len(part), True, key) + bytes(masked)

        payloads = [bytes([i]) * (50000 + 7 * i) for i in range(14)]  # > the buffer in all
        wire = b""
        for i, p in enumerate(payloads):
            frame = F.data_header(1, 0, len(p)) + p
            # fastpf serve: one message per frame; kubectl: header and payload apart
            parts = [frame] if i % 3 else [frame[:8], frame[8:]]
            wire += b"".join(message(part) for part in parts)

        def deliver(data: bytes, step: int) -> None:
            # As the transport does: at most what get_buffer offers, at most `step` per read.
            pos = 0
            for _ in range(len(data) + 1):  # bounded
                if pos == len(data):
                    return
                buf = conn.get_buffer(len(data) - pos)
                n = min(len(buf), len(data) - pos, step)
                buf[:n] = data[pos : pos + n]
                del buf
                conn.buffer_updated(n)
                pos += n
            raise AssertionError("get_buffer made no progress")

        deliver(wire, 8192)
        assert [bytes(v) for v in got] == payloads  # nothing overwritten while not drained
        assert conn._held and not conn.is_closing
        sink.pending = False
        conn.get_buffer(-1)
        assert not conn._held
        got.clear()
        # Released: the buffers are reused and the next frames still come out right.
        more = [b"x" * 70000, b"y" * 3]
        deliver(b"".join(message(F.data_header(1, 0, len(p)) + p) for p in more), 1 << 20)
        assert [bytes(v) for v in got] == more

    run(body, "uvloop")


def test_channel_server_announces_ports_little_endian() -> None:
    async def body() -> None:
        conn = ChannelConnection(client=False, ports=[8080, 443])
        t = FakeTransport()
        conn.attach(t)
        ws = F.WsDecoder(expect_masked=False)
        ws.feed(t.wire())
        msgs = []
        for _ in range(10):
            f = ws.next_frame()
            if f is None:
                break
            msgs.append(bytes(f.payload))
        assert msgs == [b"\x00\x90\x1f", b"\x01\x90\x1f", b"\x02\xbb\x01", b"\x03\xbb\x01"]

    run(body, "uvloop")


def test_session_survives_sink_and_decoder_trouble() -> None:
    async def body() -> None:
        errors: list[Any] = []
        asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: errors.append(ctx))
        conn, t, streams = _server()
        conn._feed(syn_stream_bytes(1, BLOCK1))

        class Boom:
            def data_received(self, view: memoryview) -> None:
                raise RuntimeError("boom")

            def drained(self) -> bool:
                return True

        streams[0].set_sink(Boom())  # type: ignore[arg-type]
        conn.buffer_updated(0)
        buf = conn.get_buffer(-1)
        wire = F.data_header(1, 0, 3) + b"abc"
        buf[: len(wire)] = wire
        conn.buffer_updated(len(wire))
        assert not conn.is_closing  # the stream was reset, the session lives
        assert decode_frames(t.wire())[-1].type == F.RST_STREAM
        conn._feed(bytes.fromhex("8003000500000000"))  # NOOP: fatal for spdystream
        assert conn.is_closing and t.closed
        assert decode_frames(t.wire())[-1].type == F.GOAWAY
        assert not errors

    run(body, "uvloop")


@pytest.mark.parametrize("kind", ["spdy", "ws-server", "channel"])
def test_fuzz_sessions_never_raise(kind: str) -> None:
    """Arbitrary bytes after a valid start: the session either keeps going or ends with a
    GOAWAY / close frame; nothing escapes into the loop."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    prefix = syn_stream_bytes(1, BLOCK1) + syn_stream_bytes(3, BLOCK2)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.binary(max_size=96), max_size=12))
    def check(chunks: list[bytes]) -> None:
        async def body() -> None:
            errors: list[Any] = []
            asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: errors.append(ctx))
            t = FakeTransport()
            conn: Any
            if kind == "channel":
                conn = ChannelConnection(client=False, ports=[80, 81])
                conn.attach(t)
                first = F.ws_encode(F.WS_BINARY, b"\x00hello", True, True)
            else:
                streams: list[SpdyStream] = []
                conn = SpdyConnection(
                    client=False, tunnel=None if kind == "spdy" else kind, on_stream=streams.append
                )
                conn.attach(t)
                first = prefix if kind == "spdy" else F.ws_encode(F.WS_BINARY, prefix, True, True)
            conn._feed(first)
            for chunk in chunks:
                if conn.is_closing:
                    break
                buf = conn.get_buffer(len(chunk) or 1)
                buf[: len(chunk)] = chunk
                conn.buffer_updated(len(chunk))
            if conn.is_closing and isinstance(conn.closed.result(), Exception):
                assert t.closed
            assert not errors

        run(body, "asyncio", 10)

    check()


def test_small_writes_coalesce_into_one_write_per_iteration_in_order() -> None:
    async def body() -> None:
        conn, t, streams = _server()
        conn._feed(syn_stream_bytes(1, BLOCK1) + syn_stream_bytes(3, BLOCK2))
        err, data = streams
        err.reply()
        data.reply()
        data.write(b"hello")
        err.write_eof()
        assert t.calls == [] and not conn.output_drained()  # waiting for the iteration's end
        await asyncio.sleep(0)
        assert len(t.calls) == 1 and t.calls[0][0] == "write"  # one TLS record, one syscall
        frames = decode_frames(t.wire())
        assert [(f.type, f.stream_id, f.flags) for f in frames] == [
            (F.SYN_REPLY, 1, 0),
            (F.SYN_REPLY, 3, 0),
            (F.DATA, 3, 0),
            (F.DATA, 1, F.FLAG_FIN),
        ]
        assert bytes(frames[2].payload) == b"hello" and conn.output_drained()

        # A large frame after small ones: the small ones leave first, the large one uncopied.
        t.calls.clear()
        room = data.header_room
        buf = bytearray(room + 2 * COALESCE_LIMIT)
        data.write(b"small")
        data.send_inplace(buf, room, 2 * COALESCE_LIMIT)
        assert [k for k, _ in t.calls] == ["write", "write"] and t.calls[1][1].obj is buf
        assert [len(f.payload) for f in decode_frames(t.wire())] == [5, 2 * COALESCE_LIMIT]

        # The relay may reuse its buffer at once: a small in-place frame was copied.
        t.calls.clear()
        small = bytearray(room + 3)
        small[room:] = b"abc"
        data.send_inplace(small, room, 3)
        small[room:] = b"XYZ"
        assert [bytes(f.payload) for f in decode_frames(t.wire())] == [b"abc"]

        # Closing flushes what is pending before the transport closes.
        t.calls.clear()
        data.write_eof()
        conn.goaway()
        assert t.closed
        assert [f.type for f in decode_frames(t.wire())] == [F.DATA, F.GOAWAY]

    run(body, "uvloop")


def test_coalesced_bytes_reach_the_limit_and_flush_early() -> None:
    async def body() -> None:
        conn, t, streams = _server()
        conn._feed(syn_stream_bytes(1, BLOCK1))
        (stream,) = streams
        chunk = b"c" * 4000
        for _ in range(5):  # 5 frames of ~4 KiB: past COALESCE_LIMIT after the 5th
            stream.write(chunk)
        assert len(t.calls) == 1  # flushed at the limit, not held back until the iteration's end
        await asyncio.sleep(0)
        assert len(t.calls) == 1
        assert [len(f.payload) for f in decode_frames(t.wire()) if f.type == F.DATA] == [4000] * 5

    run(body, "uvloop")
