"""The compiled per-byte path: F.deliver_data (a run of SPDY DATA frames straight from the
receive buffer to the relays' pumps) and RelayCore.deliver (send(2) while nothing is queued, the
rest copied into the transport). Every byte arrives once, in order, and every frame the
dispatcher must not take (FIN, control, unknown stream, partial) is left for next_frame()."""

from __future__ import annotations

import random
import socket
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpf import _frames as F
from fastpf._pump import RelayCore, SinkTable


class FakeTransport:
    """What RelayCore uses of a transport; `sock` (optional) is the real socket behind it."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        self.sock = sock
        self.written: list[bytes] = []
        self.closing = False

    def get_extra_info(self, name: str) -> Any:
        return self.sock if name == "socket" else None

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return sum(len(b) for b in self.written)

    def write(self, data: bytes) -> None:
        assert type(data) is bytes  # deliver() copies what the socket did not take
        self.written.append(data)


class Core(RelayCore):
    def __init__(self, transport: FakeTransport) -> None:
        self.errors: list[BaseException] = []
        self.attach_transport(transport)  # type: ignore[arg-type]

    def _local_error(self, exc: BaseException) -> None:
        self.errors.append(exc)


def payload_of(frame: F.SpdyFrame) -> bytes:
    assert frame.payload is not None
    return bytes(frame.payload)


def data(sid: int, payload: bytes, fin: bool = False) -> bytes:
    return F.data_header(sid, F.FLAG_FIN if fin else 0, len(payload)) + payload


def test_run_of_data_goes_to_the_pump_and_stops_where_the_session_must_decide() -> None:
    enc = F.SpdyEncoder()
    dec = F.SpdyDecoder()
    dec.feed(
        data(1, b"aaa")
        + data(1, b"bbb")
        + data(3, b"zz")
        + data(1, b"c", fin=True)
        + enc.ping(7)
        + data(1, b"dd")
        + data(1, b"partial")[:10]
    )
    t = FakeTransport()
    core = Core(t)
    sinks = SinkTable()
    sinks.add(1, core)
    assert F.deliver_data(dec, sinks) == 6  # stops at stream 3: not in the table
    assert b"".join(t.written) == b"aaabbb"
    frame = dec.next_frame()
    assert frame is not None and frame.stream_id == 3 and payload_of(frame) == b"zz"
    assert F.deliver_data(dec, sinks) == 0  # a FIN: the session's table decides
    frame = dec.next_frame()
    assert frame is not None and frame.flags & F.FLAG_FIN and payload_of(frame) == b"c"
    assert F.deliver_data(dec, sinks) == 0  # a control frame
    frame = dec.next_frame()
    assert frame is not None and frame.type == F.PING and frame.ping_id == 7
    assert F.deliver_data(dec, sinks) == 2
    assert F.deliver_data(dec, sinks) == 0  # partial: waits for its bytes
    assert dec.next_frame() is None and dec.pending_data_stream == 1
    assert core.received == 8 and not core.errors
    sinks.discard(1)
    assert 1 not in sinks and len(sinks) == 0


def test_closed_or_done_pump_drops_nothing_else() -> None:
    t = FakeTransport()
    core = Core(t)
    core.remote_done = True  # the relay ended this direction: dropped, as the Python path does
    core.deliver_bytes(b"x" * 10)
    assert t.written == [] and core.received == 0


def test_direct_send_then_the_rest_queued_in_order() -> None:
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
    a.setblocking(False)
    try:
        t = FakeTransport(a)
        core = Core(t)
        payload = random.Random(1).randbytes(8 << 20)  # far more than the socket takes
        core.deliver_bytes(payload)
        assert t.written, "the socket was full: the rest is queued (copied) in the transport"
        core.deliver_bytes(b"tail")  # queued behind it, never sent ahead of it
        got = bytearray()
        b.settimeout(5)
        queued = b"".join(t.written)
        want_direct = len(payload) + 4 - len(queued)
        for _ in range(10_000):  # bounded: read what deliver() sent directly
            if len(got) >= want_direct:
                break
            got += b.recv(1 << 20)
        assert bytes(got) + queued == payload + b"tail"
        assert core.received == len(payload) + 4 and not core.errors
    finally:
        a.close()
        b.close()


def test_send_error_reaches_the_relay_not_the_session() -> None:
    a, b = socket.socketpair()
    b.close()
    try:
        core = Core(FakeTransport(a))
        core.deliver_bytes(b"x" * 1000)  # EPIPE: no SIGPIPE, no exception into the caller
        assert core.errors and isinstance(core.errors[0], OSError)
    finally:
        a.close()


@settings(max_examples=150, deadline=None)
@given(
    frames=st.lists(
        st.tuples(st.sampled_from([1, 3, 5]), st.binary(min_size=0, max_size=300), st.booleans()),
        max_size=25,
    ),
    fast=st.sets(st.sampled_from([1, 3, 5])),
    cuts=st.lists(st.integers(min_value=1, max_value=200), max_size=12),
)
def test_fuzz_dispatch_agrees_with_next_frame(
    frames: list[tuple[int, bytes, bool]], fast: set[int], cuts: list[int]
) -> None:
    """Random DATA frames for three streams (some with FIN), fed in random pieces, some streams
    in the table: what each stream gets through the pump, plus what next_frame() returns, is
    exactly what was sent, in order; a stream leaves the table at its FIN as a session does."""
    wire = b"".join(data(sid, p, fin) for sid, p, fin in frames)
    sent: dict[int, bytearray] = {1: bytearray(), 3: bytearray(), 5: bytearray()}
    for sid, p, _ in frames:
        sent[sid] += p
    got: dict[int, bytearray] = {1: bytearray(), 3: bytearray(), 5: bytearray()}
    transports = {sid: FakeTransport() for sid in (1, 3, 5)}
    sinks = SinkTable()
    for sid in fast:
        sinks.add(sid, Core(transports[sid]))
    dec = F.SpdyDecoder()
    pos = 0
    pieces = []
    for c in cuts:
        pieces.append(wire[pos : pos + c])
        pos += c
    pieces.append(wire[pos:])
    for piece in pieces:
        dec.feed(piece)
        for _ in range(1000):  # bounded by the frames
            F.deliver_data(dec, sinks)
            frame = dec.next_frame()
            if frame is None:
                break
            assert frame.type == F.DATA
            got[frame.stream_id] += payload_of(frame)
            if frame.flags & F.FLAG_FIN:
                sinks.discard(frame.stream_id)
    assert dec.error is None and dec.buffered == 0
    for sid in (1, 3, 5):
        via_pump = b"".join(transports[sid].written)
        # per stream: pumped bytes and next_frame bytes interleave only by frame, in order;
        # the union in order equals what was sent when frames of a stream are split that way
        assert len(via_pump) + len(got[sid]) == len(sent[sid])
        merged = _merge_in_order(frames, sid, via_pump, bytes(got[sid]))
        assert merged == bytes(sent[sid])


def _merge_in_order(
    frames: list[tuple[int, bytes, bool]], sid: int, pumped: bytes, framed: bytes
) -> bytes:
    """Rebuild a stream's bytes frame by frame: each frame's payload came either from the pump
    (a plain DATA frame while the stream was in the table) or from next_frame()."""
    out = bytearray()
    ip = jf = 0
    in_table = True
    for s, p, fin in frames:
        if s != sid:
            continue
        if p and not fin and in_table and pumped[ip : ip + len(p)] == p:
            out += p
            ip += len(p)
        else:
            assert framed[jf : jf + len(p)] == p
            out += p
            jf += len(p)
        if fin:
            in_table = False
    assert ip == len(pumped) and jf == len(framed)
    return bytes(out)


@pytest.mark.parametrize("bad", [b"\x00\x00\x00\x00\x00\x00\x00\x01x"])
def test_stream_zero_is_left_to_the_decoder_error(bad: bytes) -> None:
    dec = F.SpdyDecoder()
    dec.feed(bad)
    sinks = SinkTable()
    sinks.add(1, Core(FakeTransport()))
    assert F.deliver_data(dec, sinks) == 0
    assert dec.next_frame() is None and dec.error is not None


def ws_message(
    channel: int, payload: bytes, masked: bool, opcode: int = F.WS_BINARY, fin: bool = True
) -> bytes:
    body = bytes([channel]) + payload
    if not masked:
        return F.ws_frame_header(opcode, len(body), fin=fin) + body
    return F.ws_encode(opcode, body, fin, True)


@pytest.mark.parametrize("masked", [True, False])
def test_channel_messages_go_to_the_pump_and_the_rest_to_next_frame(masked: bool) -> None:
    dec = F.WsDecoder(masked)
    wire = (
        ws_message(0, b"abc", masked)
        + ws_message(0, b"de", masked)
        + ws_message(2, b"other", masked)  # channel 2: not in the table
        + ws_message(1, b"error text", masked)  # error channel: never in the table
        + ws_message(0, b"", masked)  # no data byte: the session decides
        + ws_message(0, b"x" * 70_000, masked)  # 64-bit length form
        + ws_message(0, b"part", masked)[:5]
    )
    dec.feed(wire)
    t = FakeTransport()
    sinks = SinkTable()
    sinks.add(0, Core(t))
    assert F.deliver_channel_data(dec, sinks) == 5
    assert b"".join(t.written) == b"abcde"
    seen = []
    for _ in range(10):  # bounded
        F.deliver_channel_data(dec, sinks)
        frame = dec.next_frame()
        if frame is None:
            break
        assert frame.payload is not None
        seen.append(bytes(frame.payload))
    assert seen == [b"\x02other", b"\x01error text", b"\x00"]
    assert b"".join(t.written) == b"abcde" + b"x" * 70_000
    assert dec.error is None and dec.next_frame() is None


def test_channel_dispatch_leaves_fragments_text_and_control_frames() -> None:
    dec = F.WsDecoder(False)
    first = F.ws_frame_header(F.WS_BINARY, 3, fin=False) + b"\x00ab"
    cont = F.ws_frame_header(F.WS_CONT, 2) + b"cd"
    dec.feed(
        first
        + cont
        + F.ws_frame_header(F.WS_PING, 1)
        + b"p"
        + F.ws_frame_header(F.WS_TEXT, 3)
        + b"\x00hi"
    )
    sinks = SinkTable()
    t = FakeTransport()
    sinks.add(0, Core(t))
    opcodes = []
    for _ in range(10):  # bounded
        assert F.deliver_channel_data(dec, sinks) == 0
        frame = dec.next_frame()
        if frame is None:
            break
        opcodes.append(frame.opcode)
    assert opcodes == [F.WS_BINARY, F.WS_CONT, F.WS_PING, F.WS_TEXT] and t.written == []


@settings(max_examples=150, deadline=None)
@given(
    messages=st.lists(
        st.tuples(st.sampled_from([0, 1, 2, 4]), st.binary(max_size=300)), max_size=20
    ),
    fast=st.sets(st.sampled_from([0, 2, 4])),
    masked=st.booleans(),
    cuts=st.lists(st.integers(min_value=1, max_value=200), max_size=12),
)
def test_fuzz_channel_dispatch_agrees_with_next_frame(
    messages: list[tuple[int, bytes]], fast: set[int], masked: bool, cuts: list[int]
) -> None:
    wire = b"".join(ws_message(ch, p, masked) for ch, p in messages)
    transports = {ch: FakeTransport() for ch in (0, 2, 4)}
    sinks = SinkTable()
    for ch in fast:
        sinks.add(ch, Core(transports[ch]))
    dec = F.WsDecoder(masked)
    framed: dict[int, bytearray] = {0: bytearray(), 1: bytearray(), 2: bytearray(), 4: bytearray()}
    pos = 0
    pieces = []
    for c in cuts:
        pieces.append(wire[pos : pos + c])
        pos += c
    pieces.append(wire[pos:])
    for piece in pieces:
        dec.feed(piece)
        for _ in range(1000):  # bounded by the messages
            F.deliver_channel_data(dec, sinks)
            frame = dec.next_frame()
            if frame is None:
                break
            assert frame.payload is not None and len(frame.payload) >= 1
            framed[frame.payload[0]] += frame.payload[1:]
    assert dec.error is None and dec.buffered == 0
    for ch in (0, 1, 2, 4):
        sent = b"".join(p for c, p in messages if c == ch)
        pumped = b"".join(transports[ch].written) if ch in transports else b""
        if ch in fast:
            assert pumped == sent and bytes(framed[ch]) == b""
        else:
            assert pumped == b"" and bytes(framed[ch]) == sent
