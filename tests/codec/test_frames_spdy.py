"""SPDY/3 codec tests: kubectl known-answer vectors (PROTOCOL.md 4), round trips, chunking,
fatal conditions (PROTOCOL.md 4.5), decompression bombs and the receive-buffer contract."""

from __future__ import annotations

import hashlib
import struct
import tracemalloc
import zlib
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fastpf import _frames as F
from fastpf.errors import SpdySessionError

# kubectl 1.33, consecutive header blocks of one connection direction (PROTOCOL.md 4.3).
KUBECTL_BLOCK_1 = bytes.fromhex(
    "78f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45e01c60616061c0c0c0c0"
    "590489c64c50f2663400000000ffff"
)
KUBECTL_BLOCK_2 = bytes.fromhex("c2aa19540e2512d60b000000ffff")
KUBECTL_HEADERS_1 = {"streamtype": "error", "port": "8080", "requestid": "0"}
KUBECTL_HEADERS_2 = {"streamtype": "data", "port": "8080", "requestid": "0"}
KUBECTL_PINGS = [bytes.fromhex(f"800300060000000400000{i:03x}") for i in (1, 3, 5)]
KUBECTL_GOAWAY = bytes.fromhex("80030007000000080000000000000000")
EMPTY_REPLY_1 = bytes.fromhex("78f9e3c6a7c202a6230600000000ffff")
EMPTY_REPLY_2 = bytes.fromhex("020100000000ffff")
DECOMPRESSED_EXAMPLE = (
    b"\x00\x00\x00\x03\x00\x00\x00\x0astreamtype\x00\x00\x00\x05error"
    b"\x00\x00\x00\x04port\x00\x00\x00\x048080\x00\x00\x00\x09requestid\x00\x00\x00\x010"
)

# No 'explain' phase: it is slow and a failing run should report quickly.
PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink)


# --- helpers -----------------------------------------------------------------------------------


def control(ctype: int, flags: int, body: bytes, version: int = 3) -> bytes:
    return struct.pack(">HHI", 0x8000 | version, ctype, (flags << 24) | len(body)) + body


def syn_stream_raw(stream_id: int, block: bytes, flags: int = 0) -> bytes:
    return control(F.SYN_STREAM, flags, struct.pack(">IIBB", stream_id, 0, 0, 0) + block)


def snapshot(frame: F.SpdyFrame) -> tuple[Any, ...]:
    payload = bytes(frame.payload) if frame.payload is not None else None
    return (
        frame.type,
        frame.flags,
        frame.stream_id,
        payload,
        frame.headers,
        frame.assoc_id,
        frame.priority,
        frame.slot,
        frame.status,
        frame.ping_id,
        frame.last_good_id,
        frame.delta,
        frame.settings,
    )


def drain(dec: F.SpdyDecoder) -> list[F.SpdyFrame]:
    out: list[F.SpdyFrame] = []
    for _ in range(100_000):
        frame = dec.next_frame()
        if frame is None:
            return out
        out.append(frame)
    raise AssertionError("decoder never ran dry")


def payload(frame: F.SpdyFrame) -> memoryview:
    """A DATA frame's payload (only DATA frames have one)."""
    assert frame.payload is not None, frame
    return frame.payload


def write_via_buffer(dec: F.SpdyDecoder | F.WsDecoder, chunk: bytes) -> None:
    """Deliver bytes the way asyncio.BufferedProtocol does (get_buffer / buffer_updated)."""
    view = memoryview(chunk)
    for _ in range(len(chunk) + 1):
        if not view:
            return
        buf = dec.get_buffer(-1)
        assert len(buf) > 0
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        dec.buffer_updated(n)
        view = view[n:]
    raise AssertionError("get_buffer made no progress")


def decode_chunks(
    chunks: Iterable[bytes], mode: str = "feed", buffer_size: int = 256 * 1024
) -> tuple[list[F.SpdyFrame], F.SpdyDecoder]:
    dec = F.SpdyDecoder(buffer_size=buffer_size)
    frames: list[F.SpdyFrame] = []
    sources: list[bytearray] = []  # borrowed: kept intact, DATA views point into them
    for chunk in chunks:
        if mode == "feed":
            dec.feed(chunk)
        elif mode == "borrowed":
            sources.append(bytearray(chunk))
            dec.feed_borrowed(memoryview(sources[-1]))
        elif mode == "bytearray":
            dec.feed(bytearray(chunk))
        elif mode == "memoryview":
            dec.feed(memoryview(b"xx" + chunk + b"yy")[2 : 2 + len(chunk)])
        else:
            write_via_buffer(dec, chunk)
        frames.extend(drain(dec))
    return frames, dec


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    out, prev = [], 0
    for p in [*points, len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


def encode_all(specs: list[tuple[Any, ...]]) -> bytes:
    enc = F.SpdyEncoder()
    out = []
    for kind, *args in specs:
        out.append(getattr(enc, kind)(*args))
    return b"".join(out)


def expected_snapshot(spec: tuple[Any, ...]) -> tuple[Any, ...]:
    kind, *a = spec
    base: dict[str, Any] = dict(
        type=0,
        flags=0,
        stream_id=0,
        payload=None,
        headers=None,
        assoc_id=0,
        priority=0,
        slot=0,
        status=0,
        ping_id=0,
        last_good_id=0,
        delta=0,
        settings=None,
    )
    if kind == "data":
        base.update(type=F.DATA, stream_id=a[0], payload=bytes(a[1]), flags=a[2])
    elif kind == "syn_stream":
        base.update(
            type=F.SYN_STREAM,
            stream_id=a[0],
            headers=lower(a[1]),
            flags=a[2],
            assoc_id=a[3],
            priority=a[4],
        )
    elif kind == "syn_reply":
        base.update(type=F.SYN_REPLY, stream_id=a[0], headers=lower(a[1]), flags=a[2])
    elif kind == "headers":
        base.update(type=F.HEADERS, stream_id=a[0], headers=lower(a[1]), flags=a[2])
    elif kind == "rst_stream":
        base.update(type=F.RST_STREAM, stream_id=a[0], status=a[1])
    elif kind == "settings":
        base.update(type=F.SETTINGS, settings=[tuple(e) for e in a[0]], flags=a[1])
    elif kind == "ping":
        base.update(type=F.PING, ping_id=a[0])
    elif kind == "goaway":
        base.update(type=F.GOAWAY, last_good_id=a[0], status=a[1])
    elif kind == "window_update":
        base.update(type=F.WINDOW_UPDATE, stream_id=a[0], delta=a[1])
    return tuple(base.values())


def lower(headers: dict[str, str] | None) -> dict[str, str]:
    return {k.lower(): v for k, v in (headers or {}).items()}


# --- strategies ----------------------------------------------------------------------------------

stream_ids = st.integers(1, 0x7FFFFFFF)
u8 = st.integers(0, 255)
u32 = st.integers(0, 0xFFFFFFFF)
header_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
header_names = st.text(
    st.characters(exclude_categories=["Cs", "Lu", "Lt"], max_codepoint=0x24F), max_size=12
).filter(lambda s: s.lower() == s)
header_sets = st.dictionaries(header_names, header_text, max_size=6)

frame_specs = st.one_of(
    st.tuples(st.just("data"), stream_ids, st.binary(max_size=300), u8),
    st.tuples(
        st.just("syn_stream"),
        stream_ids,
        header_sets,
        u8,
        st.integers(0, 0x7FFFFFFF),
        st.integers(0, 7),
    ),
    st.tuples(st.just("syn_reply"), stream_ids, header_sets, u8),
    st.tuples(st.just("headers"), stream_ids, header_sets, u8),
    st.tuples(st.just("rst_stream"), stream_ids, st.integers(1, 0xFFFFFFFF)),
    st.tuples(
        st.just("settings"), st.lists(st.tuples(u8, st.integers(0, 0xFFFFFF), u32), max_size=5), u8
    ),
    st.tuples(st.just("ping"), st.integers(1, 0xFFFFFFFF)),
    st.tuples(st.just("goaway"), st.integers(0, 0x7FFFFFFF), u32),
    st.tuples(st.just("window_update"), st.integers(0, 0x7FFFFFFF), st.integers(0, 0x7FFFFFFF)),
)

SETTINGS = settings(
    phases=PHASES,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- dictionary and constants --------------------------------------------------------------


def test_dictionary_is_the_spdy3_dictionary() -> None:
    d = F.SPDY_DICTIONARY
    assert isinstance(d, bytes)
    assert len(d) == 1423
    assert zlib.adler32(d) == 0xE3C6A7C2
    assert zlib.crc32(d) == 0x04C8490E
    assert hashlib.sha256(d).hexdigest() == (
        "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
    )
    assert d.startswith(b"\x00\x00\x00\x07options")
    assert d.endswith(b"enq=0.")


def test_constants() -> None:
    assert (F.DATA, F.SYN_STREAM, F.SYN_REPLY, F.RST_STREAM, F.SETTINGS) == (0, 1, 2, 3, 4)
    assert (F.PING, F.GOAWAY, F.HEADERS, F.WINDOW_UPDATE) == (6, 7, 8, 9)
    assert (F.FLAG_FIN, F.FLAG_UNIDIRECTIONAL, F.FLAG_CLEAR_SETTINGS) == (1, 2, 1)
    assert (F.RST_PROTOCOL_ERROR, F.RST_CANCEL, F.RST_FRAME_TOO_LARGE) == (1, 5, 11)
    assert (F.RST_REFUSED_STREAM, F.RST_INTERNAL_ERROR) == (3, 6)
    assert (F.GOAWAY_OK, F.GOAWAY_PROTOCOL_ERROR, F.GOAWAY_INTERNAL_ERROR) == (0, 1, 2)
    assert F.MAX_DATA_LENGTH == 16_777_215
    assert (F.WS_CONT, F.WS_TEXT, F.WS_BINARY, F.WS_CLOSE, F.WS_PING, F.WS_PONG) == (
        0,
        1,
        2,
        8,
        9,
        10,
    )


# --- known-answer vectors ------------------------------------------------------------------


def test_kubectl_header_blocks_with_one_persistent_decompressor() -> None:
    d = F.HeaderDecompressor()
    assert d.decompress(KUBECTL_BLOCK_1) == KUBECTL_HEADERS_1
    assert d.decompress(KUBECTL_BLOCK_2) == KUBECTL_HEADERS_2


def test_kubectl_block_2_needs_the_stream_state() -> None:
    with pytest.raises(SpdySessionError):
        F.HeaderDecompressor().decompress(KUBECTL_BLOCK_2)


def test_kubectl_blocks_in_syn_stream_frames() -> None:
    wire = syn_stream_raw(1, KUBECTL_BLOCK_1) + syn_stream_raw(3, KUBECTL_BLOCK_2)
    frames, dec = decode_chunks([wire])
    assert dec.error is None
    assert [(f.type, f.stream_id, f.headers) for f in frames] == [
        (F.SYN_STREAM, 1, KUBECTL_HEADERS_1),
        (F.SYN_STREAM, 3, KUBECTL_HEADERS_2),
    ]
    assert frames[0].version == 3


def test_compressor_first_block_header_and_empty_reply_vectors() -> None:
    c = F.HeaderCompressor()
    first = c.compress({})
    assert first[:6] == bytes.fromhex("78f9e3c6a7c2")
    assert first == EMPTY_REPLY_1
    assert c.compress({}) == EMPTY_REPLY_2
    assert c.compress(None) == EMPTY_REPLY_2
    # Every block ends with a sync flush.
    assert c.compress({"a": "b"}).endswith(b"\x00\x00\x00\xff\xff")
    d = F.HeaderDecompressor()
    assert d.decompress(EMPTY_REPLY_1) == {}
    assert d.decompress(EMPTY_REPLY_2) == {}


def test_decompressed_block_example() -> None:
    assert F.decode_header_block(DECOMPRESSED_EXAMPLE) == KUBECTL_HEADERS_1
    assert F.encode_header_block(KUBECTL_HEADERS_1) == DECOMPRESSED_EXAMPLE


def test_kubectl_ping_and_goaway_bytes_decode() -> None:
    frames, dec = decode_chunks([b"".join(KUBECTL_PINGS) + KUBECTL_GOAWAY])
    assert dec.error is None
    assert [(f.type, f.ping_id, f.flags) for f in frames[:3]] == [
        (F.PING, 1, 0),
        (F.PING, 3, 0),
        (F.PING, 5, 0),
    ]
    assert (frames[3].type, frames[3].last_good_id, frames[3].status) == (F.GOAWAY, 0, 0)
    enc = F.SpdyEncoder()
    assert [enc.ping(i) for i in (1, 3, 5)] == KUBECTL_PINGS
    assert enc.goaway(0) == KUBECTL_GOAWAY
    assert enc.goaway(0, F.GOAWAY_OK) == KUBECTL_GOAWAY


def test_syn_stream_for_kubectl_headers_is_byte_exact_and_decodes() -> None:
    enc = F.SpdyEncoder()
    frame = enc.syn_stream(1, KUBECTL_HEADERS_1)
    block = F.HeaderCompressor().compress(KUBECTL_HEADERS_1)
    assert frame == syn_stream_raw(1, block)
    assert frame[:4] == b"\x80\x03\x00\x01"
    assert frame[4] == 0  # flags
    assert int.from_bytes(frame[5:8], "big") == 10 + len(block)
    assert frame[8:18] == b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    assert block.startswith(bytes.fromhex("78f9e3c6a7c2"))
    # A second frame continues the stream (no new zlib header).
    frame2 = enc.syn_stream(3, KUBECTL_HEADERS_2)
    assert frame2[18:20] != b"\x78\xf9"
    frames, dec = decode_chunks([frame + frame2])
    assert [(f.stream_id, f.headers, f.assoc_id, f.priority, f.slot) for f in frames] == [
        (1, KUBECTL_HEADERS_1, 0, 0, 0),
        (3, KUBECTL_HEADERS_2, 0, 0, 0),
    ]
    # And our blocks decode with kubectl's own earlier state too: both ends share one format.
    d = F.HeaderDecompressor()
    assert d.decompress(block) == KUBECTL_HEADERS_1


def test_kubelet_syn_reply_is_empty_block() -> None:
    enc = F.SpdyEncoder()
    reply = enc.syn_reply(1)
    assert reply == control(F.SYN_REPLY, 0, b"\x00\x00\x00\x01" + EMPTY_REPLY_1)
    assert enc.syn_reply(3, {}) == control(F.SYN_REPLY, 0, b"\x00\x00\x00\x03" + EMPTY_REPLY_2)


def test_fixed_control_frames_byte_exact() -> None:
    enc = F.SpdyEncoder()
    assert enc.rst_stream(3, F.RST_CANCEL) == bytes.fromhex("80030003000000080000000300000005")
    assert enc.ping(2) == bytes.fromhex("800300060000000400000002")
    assert enc.goaway(7, 2) == bytes.fromhex("80030007000000080000000700000002")
    assert enc.window_update(5, 65536) == bytes.fromhex("80030009000000080000000500010000")
    assert enc.settings([(1, 4, 100)], F.FLAG_CLEAR_SETTINGS) == bytes.fromhex(
        "800300040100000c000000010100000400000064"
    )
    assert enc.settings([]) == bytes.fromhex("800300040000000400000000")
    syn = enc.syn_stream(9, {}, flags=F.FLAG_FIN | F.FLAG_UNIDIRECTIONAL, assoc_id=7, priority=5)
    assert syn[4] == 3
    assert syn[8:18] == bytes.fromhex("0000000900000007a000")


def test_data_frames_and_headers() -> None:
    enc = F.SpdyEncoder()
    assert F.data_header(3, 0, 5) == bytes.fromhex("0000000300000005")
    assert F.data_header(0x7FFFFFFF, F.FLAG_FIN, F.MAX_DATA_LENGTH) == bytes.fromhex(
        "7fffffff01ffffff"
    )
    assert enc.data(3, b"hello", F.FLAG_FIN) == bytes.fromhex("0000000301000005") + b"hello"
    assert enc.data(1, b"") == bytes.fromhex("0000000100000000")
    assert enc.data(1, memoryview(bytearray(b"ab"))) == bytes.fromhex("0000000100000002") + b"ab"
    buf = bytearray(b"\xee" * 8 + b"payload")
    F.pack_data_header(buf, 0, 5, F.FLAG_FIN, 7)
    assert bytes(buf) == F.data_header(5, F.FLAG_FIN, 7) + b"payload"
    buf2 = bytearray(20)
    F.pack_data_header(memoryview(buf2), 12, 1, 0, 0)
    assert bytes(buf2[12:]) == F.data_header(1, 0, 0)
    assert bytes(buf2[:12]) == bytes(12)


@pytest.mark.parametrize(
    "call",
    [
        lambda: F.data_header(0, 0, 1),
        lambda: F.data_header(1 << 31, 0, 1),
        lambda: F.data_header(1, 256, 1),
        lambda: F.data_header(1, 0, F.MAX_DATA_LENGTH + 1),
        lambda: F.data_header(1, 0, -1),
        lambda: F.pack_data_header(bytearray(7), 0, 1, 0, 0),
        lambda: F.pack_data_header(bytearray(16), 9, 1, 0, 0),
        lambda: F.pack_data_header(bytearray(16), -1, 1, 0, 0),
        lambda: F.SpdyEncoder().rst_stream(1, 0),
        lambda: F.SpdyEncoder().rst_stream(0, 5),
        lambda: F.SpdyEncoder().ping(0),
        lambda: F.SpdyEncoder().ping(1 << 32),
        lambda: F.SpdyEncoder().syn_stream(0, {}),
        lambda: F.SpdyEncoder().syn_stream(1, {}, priority=8),
        lambda: F.SpdyEncoder().syn_stream(1, {"A": "1", "a": "2"}),
        lambda: F.SpdyEncoder().goaway(-1),
        lambda: F.SpdyEncoder().settings([(0, 1 << 24, 0)]),
    ],
)
def test_encoder_rejects_local_misuse(call: Any) -> None:
    with pytest.raises(ValueError):
        call()


def test_pack_data_header_rejects_readonly_buffer() -> None:
    with pytest.raises((BufferError, TypeError)):
        F.pack_data_header(b"\x00" * 16, 0, 1, 0, 0)


def test_header_names_lowercased_values_joined() -> None:
    mixed: dict[str, Any] = {"Port": "8080", "X-Multi": ["a", "b"], "n": 7, "b": b"raw"}
    block = F.encode_header_block(mixed)
    assert F.decode_header_block(block) == {
        "port": "8080",
        "x-multi": "a\x00b",
        "n": "7",
        "b": "raw",
    }
    assert F.decode_header_block(F.encode_header_block([("A", "1")])) == {"a": "1"}
    with pytest.raises(TypeError):
        F.encode_header_block({"a": 1.5})  # type: ignore[arg-type]


# --- round trips and chunking ----------------------------------------------------------------


@SETTINGS
@given(specs=st.lists(frame_specs, min_size=1, max_size=8), data=st.data())
def test_round_trip_any_chunking(specs: list[tuple[Any, ...]], data: st.DataObject) -> None:
    wire = encode_all(specs)
    expected = [expected_snapshot(s) for s in specs]
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12))
    mode = data.draw(st.sampled_from(["feed", "bytearray", "memoryview", "buffer", "borrowed"]))
    buffer_size = data.draw(st.sampled_from([64, 100, 4096, 256 * 1024]))
    frames, dec = decode_chunks(split_at(wire, cuts), mode, buffer_size)
    assert dec.error is None
    assert [snapshot(f) for f in frames] == expected


@settings(phases=PHASES, max_examples=40, deadline=None)
@given(specs=st.lists(frame_specs, min_size=1, max_size=4))
def test_whole_vs_byte_at_a_time_vs_trailing(specs: list[tuple[Any, ...]]) -> None:
    wire = encode_all(specs)
    whole, _ = decode_chunks([wire])
    single, _ = decode_chunks([wire[i : i + 1] for i in range(len(wire))])
    single_buf, _ = decode_chunks([wire[i : i + 1] for i in range(len(wire))], "buffer", 64)
    assert [snapshot(f) for f in whole] == [snapshot(f) for f in single]
    assert [snapshot(f) for f in whole] == [snapshot(f) for f in single_buf]
    # A partial next frame behind the last complete one yields nothing extra and no error.
    for tail in (b"\x00", b"\x80\x03\x00", KUBECTL_PINGS[0][:11], F.data_header(1, 0, 9) + b"abc"):
        frames, dec = decode_chunks([wire + tail])
        assert [snapshot(f) for f in frames] == [snapshot(f) for f in whole]
        assert dec.error is None
        assert dec.next_frame() is None


@settings(phases=PHASES, max_examples=60, deadline=None)
@given(headers=header_sets)
def test_header_block_round_trip(headers: dict[str, str]) -> None:
    assert F.decode_header_block(F.encode_header_block(headers)) == headers
    c, d = F.HeaderCompressor(), F.HeaderDecompressor()
    for _ in range(3):
        assert d.decompress(c.compress(headers)) == headers


def test_many_frames_in_one_read_and_big_frames() -> None:
    enc = F.SpdyEncoder()
    small = b"".join(enc.data(1, bytes([i]) * i) for i in range(200))
    frames, dec = decode_chunks([small])
    assert [bytes(f.payload or b"") for f in frames] == [bytes([i]) * i for i in range(200)]
    big = bytes(range(256)) * 4096  # 1 MiB > the 256 KiB buffer: it grows
    frames, dec = decode_chunks(split_at(enc.data(7, big), [100, 70000, 500000]), "buffer")
    assert dec.error is None
    assert len(frames) == 1 and frames[0].payload is not None
    assert bytes(payload(frames[0])) == big


def test_max_length_data_frame() -> None:
    payload = b"\xab" * F.MAX_DATA_LENGTH
    wire = F.data_header(1, F.FLAG_FIN, F.MAX_DATA_LENGTH) + payload
    frames, dec = decode_chunks(split_at(wire, range(0, len(wire), 1 << 20)), "buffer")
    assert dec.error is None
    assert len(frames) == 1 and frames[0].flags == F.FLAG_FIN
    assert frames[0].payload is not None and len(frames[0].payload) == F.MAX_DATA_LENGTH
    assert frames[0].payload[-1] == 0xAB


def test_empty_data_frame_payload_is_empty_view() -> None:
    frames, _ = decode_chunks([F.data_header(1, F.FLAG_FIN, 0)])
    assert isinstance(frames[0].payload, memoryview)
    assert len(frames[0].payload) == 0
    assert frames[0].flags == F.FLAG_FIN


def test_control_version_is_not_checked_like_spdystream() -> None:
    frames, dec = decode_chunks([control(F.PING, 0, b"\x00\x00\x00\x01", version=2)])
    assert dec.error is None
    assert frames[0].ping_id == 1 and frames[0].version == 2


def test_reserved_stream_id_bit_is_ignored() -> None:
    # The top bit of a control frame's stream-id word is reserved (DATA uses it as control bit).
    rst = control(F.RST_STREAM, 0, b"\x80\x00\x00\x05\x00\x00\x00\x05")
    frames, dec = decode_chunks([rst])
    assert dec.error is None and frames[0].stream_id == 5


# --- fatal conditions (PROTOCOL.md 4.5) -------------------------------------------------------

_bad_block = F.HeaderCompressor().compress({"a": "b"})
FATAL = {
    "noop": control(5, 0, b""),
    "credential": control(10, 0, b"\x00" * 8),
    "type 0": control(0, 0, b""),
    "type 11": control(11, 0, b"\x00" * 4),
    "type 0xffff": control(0xFFFF, 0, b""),
    "ping flags": control(F.PING, 1, b"\x00\x00\x00\x01"),
    "ping id 0": control(F.PING, 0, b"\x00\x00\x00\x00"),
    "ping length 8": control(F.PING, 0, b"\x00\x00\x00\x01\x00\x00\x00\x00"),
    "goaway length 4": control(F.GOAWAY, 0, b"\x00" * 4),
    "goaway length 12": control(F.GOAWAY, 0, b"\x00" * 12),
    "goaway flags": control(F.GOAWAY, 1, b"\x00" * 8),
    "window_update length 4": control(F.WINDOW_UPDATE, 0, b"\x00\x00\x00\x01"),
    "window_update flags": control(F.WINDOW_UPDATE, 2, b"\x00\x00\x00\x01\x00\x00\x00\x01"),
    "rst status 0": control(F.RST_STREAM, 0, b"\x00\x00\x00\x01\x00\x00\x00\x00"),
    "rst stream 0": control(F.RST_STREAM, 0, b"\x00\x00\x00\x00\x00\x00\x00\x05"),
    "rst length 12": control(F.RST_STREAM, 0, b"\x00\x00\x00\x01\x00\x00\x00\x05" + b"\x00" * 4),
    "data stream 0": F.data_header(1, 0, 3).replace(b"\x00\x00\x00\x01", b"\x00" * 4, 1) + b"abc",
    "syn_stream id 0": syn_stream_raw(0, F.HeaderCompressor().compress({"a": "b"})),
    "syn_stream short": control(F.SYN_STREAM, 0, b"\x00\x00\x00\x01\x00\x00"),
    "syn_stream empty block": control(F.SYN_STREAM, 0, b"\x00\x00\x00\x01" + b"\x00" * 6),
    "syn_reply empty block": control(F.SYN_REPLY, 0, b"\x00\x00\x00\x01"),
    "syn_reply id 0": control(F.SYN_REPLY, 0, b"\x00\x00\x00\x00" + EMPTY_REPLY_1),
    "headers id 0": control(F.HEADERS, 0, b"\x00\x00\x00\x00" + EMPTY_REPLY_1),
    "settings count mismatch": control(F.SETTINGS, 0, b"\x00\x00\x00\x02" + b"\x00" * 8),
    "settings short": control(F.SETTINGS, 0, b"\x00\x00"),
    "block garbage": syn_stream_raw(1, b"\x78\xf9\xe3\xc6\xa7\xc2garbage!"),
    "block wrong dictid": syn_stream_raw(1, b"\x78\xf9\x00\x00\x00\x00" + EMPTY_REPLY_1[6:]),
    "block truncated": syn_stream_raw(1, _bad_block[:9]),
    "block two blocks": syn_stream_raw(1, KUBECTL_BLOCK_1 + KUBECTL_BLOCK_2),
}


def _compressed(raw: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, zdict=F.SPDY_DICTIONARY)
    return c.compress(raw) + c.flush(zlib.Z_SYNC_FLUSH)


FATAL["block upper-case"] = syn_stream_raw(
    1, _compressed(b"\x00\x00\x00\x01\x00\x00\x00\x01A\x00\x00\x00\x01v")
)
FATAL["block duplicate"] = syn_stream_raw(
    1, _compressed(b"\x00\x00\x00\x02" + b"\x00\x00\x00\x01a\x00\x00\x00\x01v" * 2)
)
FATAL["block trailing bytes"] = syn_stream_raw(1, _compressed(b"\x00\x00\x00\x00extra"))
FATAL["block count too big"] = syn_stream_raw(1, _compressed(b"\xff\xff\xff\xff\x00\x00\x00\x01a"))
FATAL["block name past end"] = syn_stream_raw(1, _compressed(b"\x00\x00\x00\x01\x00\x00\x10\x00a"))
_fin = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, zdict=F.SPDY_DICTIONARY)
FATAL["block finished stream"] = syn_stream_raw(1, _fin.compress(b"\x00" * 4) + _fin.flush())


def assert_failed(dec: F.SpdyDecoder) -> None:
    err = dec.error
    assert isinstance(err, SpdySessionError)
    assert err.goaway_status == F.GOAWAY_PROTOCOL_ERROR
    assert str(err)
    # Failed for good: later bytes, even valid ones, produce nothing and no exception.
    dec.feed(KUBECTL_PINGS[0])
    write_via_buffer(dec, KUBECTL_PINGS[1])
    assert dec.next_frame() is None
    assert dec.error is err
    assert len(dec.get_buffer(-1)) > 0


@pytest.mark.parametrize("name", sorted(FATAL))
@pytest.mark.parametrize("prefix", [b"", "pings"])
def test_fatal_frames(name: str, prefix: Any) -> None:
    pre = b"".join(KUBECTL_PINGS) if prefix else b""
    wire = pre + FATAL[name]
    for chunks in ([wire], [wire[i : i + 1] for i in range(len(wire))]):
        frames, dec = decode_chunks(chunks)
        assert len(frames) == (3 if prefix else 0)
        assert_failed(dec)


def test_fatal_header_check_happens_before_buffering() -> None:
    # A NOOP announcing 16 MiB is rejected from its 8-byte header; nothing is buffered.
    dec = F.SpdyDecoder()
    dec.feed(b"\x80\x03\x00\x05\x00\xff\xff\xff")
    assert dec.next_frame() is None
    assert_failed(dec)
    dec = F.SpdyDecoder(max_header_block=4096)
    dec.feed(b"\x80\x03\x00\x01\x00\x10\x00\x00")  # SYN_STREAM with a 1 MiB block
    assert dec.next_frame() is None
    assert_failed(dec)


def test_max_data_length_option() -> None:
    dec = F.SpdyDecoder(max_data_length=1024)
    dec.feed(F.data_header(1, 0, 1024) + b"x" * 1024 + F.data_header(1, 0, 1025))
    assert len(drain(dec)) == 1
    assert_failed(dec)
    with pytest.raises(ValueError):
        F.SpdyDecoder(max_data_length=F.MAX_DATA_LENGTH + 1)


def test_header_decompressor_errors_are_sticky() -> None:
    d = F.HeaderDecompressor()
    with pytest.raises(SpdySessionError):
        d.decompress(b"\x78\xf9\xe3\xc6\xa7\xc2garbage")
    with pytest.raises(SpdySessionError):
        d.decompress(EMPTY_REPLY_1)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\x00\x00",
        b"\x00\x00\x00\x01",
        b"\x00\x00\x00\x01\x00\x00\x00\x01a",
        b"\x00\x00\x00\x01\x00\x00\x00\x01a\x00\x00\x00\x02v",
        b"\x00\x00\x00\x00\x00",
        b"\x00\x00\x00\x01\x00\x00\x00\x04Port\x00\x00\x00\x00",
    ],
)
def test_decode_header_block_rejects(raw: bytes) -> None:
    with pytest.raises(SpdySessionError):
        F.decode_header_block(raw)


def test_empty_name_and_value_allowed() -> None:
    assert F.decode_header_block(F.encode_header_block({"": ""})) == {"": ""}


# --- decompression bombs ---------------------------------------------------------------------


def _bomb(total: int) -> bytes:
    """A header block claiming one 'total'-byte value, inflating to about `total` bytes."""
    c = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, zdict=F.SPDY_DICTIONARY)
    parts = [c.compress(b"\x00\x00\x00\x01\x00\x00\x00\x01a" + struct.pack(">I", total))]
    chunk = b"\x00" * (1 << 20)
    for _ in range(total >> 20):
        parts.append(c.compress(chunk))
    parts.append(c.flush(zlib.Z_SYNC_FLUSH))
    return b"".join(parts)


BOMB_100MB = None


def bomb_100mb() -> bytes:
    global BOMB_100MB
    if BOMB_100MB is None:
        BOMB_100MB = _bomb(100 << 20)
    return BOMB_100MB


def test_header_block_bomb_is_fatal_with_bounded_memory() -> None:
    block = bomb_100mb()
    assert len(block) < (1 << 20)  # fits under max_header_block: the inflate cap must act
    frame = syn_stream_raw(1, block)
    tracemalloc.start()
    try:
        dec = F.SpdyDecoder()
        dec.feed(frame)
        assert dec.next_frame() is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_failed(dec)
    assert "inflates past" in str(dec.error)
    assert peak < 16 << 20
    with pytest.raises(SpdySessionError):
        F.HeaderDecompressor(max_output=1 << 16).decompress(block)


def test_header_block_just_under_the_cap_is_fine() -> None:
    block = _bomb(1 << 20)  # value of 1 MiB + 13 bytes framing > 1 MiB cap
    d = F.HeaderDecompressor(max_output=(1 << 20) + 13)
    headers = d.decompress(block)
    assert len(headers["a"]) == 1 << 20
    with pytest.raises(SpdySessionError):
        F.HeaderDecompressor(max_output=(1 << 20) + 12).decompress(block)


# --- buffer contract --------------------------------------------------------------------------


def test_views_survive_more_data_without_release() -> None:
    enc = F.SpdyEncoder()
    payloads = [bytes([i]) * 700 for i in range(40)]
    dec = F.SpdyDecoder(buffer_size=4096)
    held: list[memoryview] = []
    for p in payloads:
        write_via_buffer(dec, enc.data(1, p))
        for f in drain(dec):
            assert f.payload is not None
            held.append(payload(f))
    # 40 * 708 bytes went through a 4 KiB buffer: it switched buffers, never overwrote a view.
    assert [bytes(v) for v in held] == payloads
    assert len({id(v.obj) for v in held}) > 1


def test_release_allows_in_place_compaction() -> None:
    enc = F.SpdyEncoder()
    dec = F.SpdyDecoder(buffer_size=4096)
    owners = set()
    for i in range(40):
        write_via_buffer(dec, enc.data(1, bytes([i]) * 700) + enc.data(1, b"z")[:5])
        frames = drain(dec)
        for f in frames:
            assert f.payload is not None
            assert bytes(f.payload) == bytes([i]) * 700
            owners.add(id(payload(f).obj))
        del frames, f
        dec.release()
        write_via_buffer(dec, enc.data(1, b"z")[5:])
        (fz,) = drain(dec)
        assert bytes(payload(fz)) == b"z"
        owners.add(id(payload(fz).obj))
        del fz
        dec.release()
    # Everything was released every time: one buffer served all 80 frames.
    assert len(owners) == 1


def test_outstanding_views_force_a_fresh_buffer_keeping_the_partial_tail() -> None:
    enc = F.SpdyEncoder()
    dec = F.SpdyDecoder(buffer_size=1024)
    first = enc.data(1, b"A" * 600)
    second = enc.data(3, b"B" * 600)
    dec.feed(first + second[:100])
    (f1,) = drain(dec)
    assert f1.payload is not None
    dec.feed(second[100:])  # does not fit behind the view: new buffer, tail copied
    (f2,) = drain(dec)
    assert f2.payload is not None
    assert bytes(payload(f1)) == b"A" * 600 and bytes(payload(f2)) == b"B" * 600
    assert payload(f1).obj is not payload(f2).obj


def test_large_frames_are_read_exactly_to_their_end_and_never_moved() -> None:
    enc = F.SpdyEncoder()
    size = 100_000
    frames = [enc.data(1, bytes([65 + i]) * size) for i in range(4)]
    wire = b"".join(frames)
    dec = F.SpdyDecoder(buffer_size=size + 64)
    owner = None
    pos = 0
    for i in range(4):
        # The first read of a frame may run on into the next one; a frame with at least
        # 64 KiB received is then read exactly up to its end.
        buf = dec.get_buffer(1 << 20)
        assert len(buf) <= size + 64  # a size hint never grows the buffer
        n = 70_000
        buf[:n] = wire[pos : pos + n]
        del buf
        dec.buffer_updated(n)
        pos += n
        assert dec.next_frame() is None
        buf = dec.get_buffer(1 << 20)
        assert len(buf) == len(frames[i]) - n
        buf[:] = wire[pos : pos + len(buf)]
        dec.buffer_updated(len(buf))
        pos += len(buf)
        del buf
        (f,) = drain(dec)
        assert bytes(payload(f)) == bytes([65 + i]) * size
        if owner is None:
            owner = payload(f).obj
        assert payload(f).obj is owner  # every frame landed at the front of the same buffer
        del f
        dec.release()


def test_between_large_frames_pinned_views_get_a_fresh_buffer_at_no_copy() -> None:
    enc = F.SpdyEncoder()
    size = 100_000
    dec = F.SpdyDecoder(buffer_size=150_000)  # the tail behind a frame could take a read
    held: list[memoryview] = []
    for i in range(6):
        wire = enc.data(1, bytes([97 + i]) * size)
        buf = dec.get_buffer(-1)
        assert len(buf) >= len(wire)  # room for the whole frame, not behind a pinned view
        buf[: len(wire)] = wire
        del buf
        dec.buffer_updated(len(wire))
        (f,) = drain(dec)
        held.append(payload(f))  # never released: every frame needs its own buffer
    assert [bytes(v) for v in held] == [bytes([97 + i]) * size for i in range(6)]
    assert len({id(v.obj) for v in held}) == 6


def test_feed_borrowed_known_answer_whole_messages_no_copy() -> None:
    # kubectl's SYN_STREAMs, pings and GOAWAY plus DATA, one frame per WS message as fastpf
    # serve sends them: DATA payloads are views into the message buffer itself.
    enc = F.SpdyEncoder()
    messages = [
        syn_stream_raw(1, KUBECTL_BLOCK_1),
        syn_stream_raw(3, KUBECTL_BLOCK_2),
        enc.data(3, b"hello"),
        *KUBECTL_PINGS,
        enc.data(3, b"x" * 70_000, F.FLAG_FIN),
        KUBECTL_GOAWAY,
    ]
    ws_buffer = bytearray(b"".join(messages))
    dec = F.SpdyDecoder(buffer_size=1024)
    out = []
    pos = 0
    for m in messages:
        dec.feed_borrowed(memoryview(ws_buffer)[pos : pos + len(m)])
        out.extend(drain(dec))
        pos += len(m)
        assert dec.buffered == 0 and dec.error is None
    assert [f.type for f in out] == [1, 1, 0, 6, 6, 6, 0, 7]
    assert out[0].headers == KUBECTL_HEADERS_1 and out[1].headers == KUBECTL_HEADERS_2
    assert [f.ping_id for f in out[3:6]] == [1, 3, 5]
    assert bytes(payload(out[2])) == b"hello" and bytes(payload(out[6])) == b"x" * 70_000
    assert out[6].flags == F.FLAG_FIN
    assert payload(out[2]).obj is ws_buffer and payload(out[6]).obj is ws_buffer


def test_feed_borrowed_copies_only_a_partial_tail_and_keeps_order() -> None:
    enc = F.SpdyEncoder()
    a, b, c = enc.data(1, b"A" * 3000), enc.data(1, b"B" * 3000), enc.data(1, b"C" * 10)
    dec = F.SpdyDecoder(buffer_size=64)
    src1 = bytearray(a + b[:100])
    dec.feed_borrowed(memoryview(src1))
    (fa,) = drain(dec)
    assert payload(fa).obj is src1 and dec.buffered == 100
    snapshot_a = bytes(payload(fa))
    dec.release()
    src1[3008:] = b"\xee" * 100  # the WS buffer is reused behind the view: the tail was copied
    # Bytes are waiting: the next message is appended (a copy), in order, then whole ones
    # are borrowed again.
    src2 = bytearray(b[100:])
    dec.feed_borrowed(memoryview(src2))
    (fb,) = drain(dec)
    assert bytes(payload(fb)) == b"B" * 3000 and payload(fb).obj is not src2
    src3 = bytearray(c)
    dec.feed_borrowed(memoryview(src3))
    (fc,) = drain(dec)
    assert bytes(payload(fc)) == b"C" * 10 and payload(fc).obj is src3
    assert snapshot_a == b"A" * 3000 and bytes(payload(fa)) == b"A" * 3000


def test_feed_borrowed_mixes_with_the_buffered_protocol_path() -> None:
    enc = F.SpdyEncoder()
    dec = F.SpdyDecoder(buffer_size=4096)
    write_via_buffer(dec, enc.data(1, b"1" * 500) + enc.data(1, b"2" * 500)[:20])
    (f1,) = drain(dec)
    dec.feed_borrowed(enc.data(1, b"2" * 500)[20:] + enc.data(1, b"3"))  # bytes work too
    f2, f3 = drain(dec)
    dec.feed_borrowed(memoryview(enc.data(5, b"4" * 9)))
    (f4,) = drain(dec)
    write_via_buffer(dec, enc.data(7, b"5"))
    (f5,) = drain(dec)
    assert [bytes(payload(f)) for f in (f1, f2, f3, f4, f5)] == [
        b"1" * 500,
        b"2" * 500,
        b"3",
        b"4" * 9,
        b"5",
    ]
    assert [f.stream_id for f in (f1, f2, f3, f4, f5)] == [1, 1, 1, 5, 7]


def test_feed_borrowed_errors_and_odd_buffers() -> None:
    dec = F.SpdyDecoder()
    dec.feed_borrowed(memoryview(b"\x00\x00\x00\x00\x00\x00\x00\x01z"))  # DATA on stream 0
    assert dec.next_frame() is None and isinstance(dec.error, SpdySessionError)
    dec.feed_borrowed(b"anything")  # failed: ignored
    assert dec.next_frame() is None
    dec = F.SpdyDecoder()
    wide = memoryview(bytearray(F.data_header(1, 0, 4) + b"abcd")).cast("I")
    dec.feed_borrowed(wide)  # 4-byte items: read as bytes
    (f,) = drain(dec)
    assert bytes(payload(f)) == b"abcd"
    strided = memoryview(F.data_header(1, 0, 2) * 2)[::2]
    for fn in (dec.feed, dec.feed_borrowed):  # "any contiguous buffer", as feed()
        with pytest.raises(BufferError):
            fn(strided)
    dec.feed_borrowed(b"")
    assert dec.next_frame() is None and dec.error is None


def test_buffer_updated_rejects_overrun() -> None:
    dec = F.SpdyDecoder(buffer_size=4096)
    buf = dec.get_buffer(-1)
    with pytest.raises(ValueError):
        dec.buffer_updated(len(buf) + 1)
    with pytest.raises(ValueError):
        dec.buffer_updated(-1)
    dec.buffer_updated(0)
    assert dec.next_frame() is None and dec.error is None


def test_get_buffer_sizehint_never_grows_but_a_pending_frame_does() -> None:
    dec = F.SpdyDecoder(buffer_size=4096)
    # The hint (uvloop's SSL transport: bytes pending + 256) only sizes one read; a larger
    # buffer would only let a read run past the frame in progress into the next one.
    assert len(dec.get_buffer(100_000)) == 4096
    assert len(dec.get_buffer(10)) == 4096
    dec = F.SpdyDecoder(buffer_size=4096)
    dec.feed(F.data_header(1, 0, 50_000))
    assert dec.next_frame() is None
    assert len(dec.get_buffer(-1)) >= 50_000  # room for the whole frame after one read
    assert dec.buffered == 8


def test_every_truncation_yields_only_complete_frames() -> None:
    enc = F.SpdyEncoder()
    parts = [
        enc.syn_stream(1, KUBECTL_HEADERS_1),
        enc.data(1, b"", F.FLAG_FIN),
        enc.ping(2),
        enc.data(3, b"0123456789"),
        enc.settings([(0, 7, 65536)]),
        enc.rst_stream(3, F.RST_CANCEL),
    ]
    wire = b"".join(parts)
    ends = [sum(len(p) for p in parts[: i + 1]) for i in range(len(parts))]
    full = [snapshot(f) for f in decode_chunks([wire])[0]]
    for cut in range(len(wire) + 1):
        frames, dec = decode_chunks([wire[:cut]])
        assert dec.error is None
        complete = sum(1 for e in ends if e <= cut)
        assert [snapshot(f) for f in frames] == full[:complete]


def test_frame_objects_construct_and_repr() -> None:
    f = F.SpdyFrame(type=F.PING, ping_id=7)
    assert (f.type, f.ping_id, f.payload, f.headers) == (F.PING, 7, None, None)
    assert "PING" in repr(f)
    for spec in ("data", "syn_stream", "rst_stream", "goaway", "window_update", "settings"):
        wire = encode_all(
            [
                {
                    "data": ("data", 1, b"x", 0),
                    "syn_stream": ("syn_stream", 1, {"a": "b"}, 0, 0, 0),
                    "rst_stream": ("rst_stream", 1, 5),
                    "goaway": ("goaway", 1, 0),
                    "window_update": ("window_update", 1, 1),
                    "settings": ("settings", [(0, 1, 2)], 0),
                }[spec]
            ]
        )
        (frame,) = decode_chunks([wire])[0]
        assert repr(frame).startswith("<SpdyFrame ")
    with pytest.raises(AttributeError):
        f.type = 1  # type: ignore[misc]


def test_header_compression_level_changes_cost_not_meaning() -> None:
    headers = [
        {"streamtype": t, "port": "8080", "requestid": str(i)}
        for i in range(50)
        for t in ("error", "data")
    ]
    fast, exact = F.HeaderCompressor(6), F.HeaderCompressor()
    d_fast, d_exact = F.HeaderDecompressor(), F.HeaderDecompressor()
    for h in headers:
        a, b = fast.compress(h), exact.compress(h)
        assert d_fast.decompress(a) == h and d_exact.decompress(b) == h
        assert len(a) <= len(b) + 2  # no bigger on the wire than kubectl's level 9
    assert F.HeaderCompressor(9).compress({}) == EMPTY_REPLY_1  # default stays kubelet-exact
    for bad in (0, 10):
        with pytest.raises(ValueError):
            F.HeaderCompressor(bad)
    enc = F.SpdyEncoder(header_level=6)
    frames, dec = decode_chunks([enc.syn_stream(1, headers[0]) + enc.syn_stream(3, headers[1])])
    assert dec.error is None and [f.headers for f in frames] == headers[:2]
