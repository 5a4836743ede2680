"""Hostile input for every decoder: random bytes, mutated valid streams, random chunking.

Only documented outcomes are allowed: frames, None, `.error` set to the documented exception
class (decoders never raise), or the documented exception from the one-shot helpers. Every
loop is bounded; hypothesis example counts are small so the file runs in seconds.
"""

from __future__ import annotations

import zlib
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fastpf import _frames as F
from fastpf.errors import SpdySessionError, WebSocketError

# No 'explain' phase: it is slow and a failing run should report quickly.
PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink)

FUZZ = settings(
    phases=PHASES,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def run_decoder(dec: Any, chunks: list[bytes], via_buffer: bool) -> list[Any]:
    frames = []
    for chunk in chunks:
        if via_buffer:
            view = memoryview(chunk)
            for _ in range(len(chunk) + 1):
                if not view:
                    break
                buf = dec.get_buffer(-1)
                assert len(buf) > 0
                n = min(len(buf), len(view))
                buf[:n] = view[:n]
                dec.buffer_updated(n)
                view = view[n:]
        else:
            dec.feed(chunk)
        # Each frame consumes at least 2 bytes, so this bound is never the limiting factor.
        for _ in range(len(chunk) + 2):
            frame = dec.next_frame()
            if frame is None:
                break
            frames.append(frame)
        else:
            raise AssertionError("decoder produced more frames than bytes")
    return frames


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    out, prev = [], 0
    for p in [*points, len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


def valid_spdy_stream() -> bytes:
    enc = F.SpdyEncoder()
    return b"".join(
        [
            enc.syn_stream(1, {"streamtype": "error", "port": "8080", "requestid": "0"}),
            enc.data(1, b"", F.FLAG_FIN),
            enc.syn_stream(3, {"streamtype": "data", "port": "8080", "requestid": "0"}),
            enc.syn_reply(1),
            enc.data(3, b"payload" * 10),
            enc.ping(1),
            enc.settings([(0, 4, 100)]),
            enc.window_update(3, 1000),
            enc.headers(3, {"x": "y"}),
            enc.rst_stream(3, F.RST_CANCEL),
            enc.goaway(3, 0),
        ]
    )


SPDY_STREAM = valid_spdy_stream()


def valid_ws_stream(masked: bool) -> bytes:
    parts = [
        F.ws_encode(F.WS_BINARY, b"abc", mask=masked),
        F.ws_encode(F.WS_BINARY, b"x" * 200, fin=False, mask=masked),
        F.ws_encode(F.WS_PING, b"p", mask=masked),
        F.ws_encode(F.WS_CONT, b"y" * 70000, mask=masked),
        F.ws_encode(F.WS_TEXT, b"", mask=masked),
        F.ws_encode(F.WS_CLOSE, F.ws_close_payload(1000, "bye"), mask=masked),
    ]
    return b"".join(parts)


WS_STREAMS = {True: valid_ws_stream(True), False: valid_ws_stream(False)}


def check_spdy(dec: F.SpdyDecoder) -> None:
    assert dec.error is None or type(dec.error) is SpdySessionError
    if dec.error is not None:
        assert dec.error.goaway_status in (F.GOAWAY_PROTOCOL_ERROR, F.GOAWAY_INTERNAL_ERROR)
        assert dec.next_frame() is None


def check_ws(dec: F.WsDecoder) -> None:
    assert dec.error is None or type(dec.error) is WebSocketError
    if dec.error is not None:
        assert dec.error.close_code in (1002, 1007, 1009, 1011)
        assert dec.next_frame() is None


@FUZZ
@given(
    data=st.binary(max_size=2000),
    cuts=st.lists(st.integers(0, 2000), max_size=10),
    via_buffer=st.booleans(),
    size=st.sampled_from([64, 1000, 256 * 1024]),
)
def test_spdy_random_bytes(data: bytes, cuts: list[int], via_buffer: bool, size: int) -> None:
    dec = F.SpdyDecoder(max_header_block=1 << 16, buffer_size=size)
    frames = run_decoder(dec, chunked(data, cuts), via_buffer)
    check_spdy(dec)
    for f in frames:
        assert isinstance(f, F.SpdyFrame)
        repr(f)


def _snap(f: Any) -> tuple[Any, ...]:
    payload = bytes(f.payload) if f.payload is not None else None
    return (f.type, f.flags, f.stream_id, payload, f.headers, f.status, f.ping_id, f.settings)


@FUZZ
@given(
    data=st.binary(max_size=3000),
    cuts=st.lists(st.integers(0, 3000), max_size=10),
    valid=st.booleans(),
)
def test_spdy_feed_borrowed_equals_feed(data: bytes, cuts: list[int], valid: bool) -> None:
    # Messages decoded in place (WS payloads) give exactly what copying them in gives, and a
    # source buffer scribbled over once its frames were taken and released changes nothing.
    if valid:
        data = SPDY_STREAM[: len(data)] + data[:16]
    chunks = chunked(data, cuts)
    copied = F.SpdyDecoder(max_header_block=1 << 16, buffer_size=100)
    expected = [_snap(f) for f in run_decoder(copied, chunks, False)]
    dec = F.SpdyDecoder(max_header_block=1 << 16, buffer_size=100)
    got = []
    for chunk in chunks:
        src = bytearray(chunk)
        dec.feed_borrowed(memoryview(src))
        for _ in range(len(chunk) + 2):
            frame = dec.next_frame()
            if frame is None:
                break
            got.append(_snap(frame))
        else:
            raise AssertionError("decoder produced more frames than bytes")
        del frame
        dec.release()
        src[:] = b"\xa5" * len(src)
    assert got == expected
    assert repr(dec.error) == repr(copied.error)
    check_spdy(dec)


@FUZZ
@given(
    data=st.binary(min_size=1, max_size=200),
    control=st.booleans(),
    ctype=st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0xFFFF]),
    flags=st.integers(0, 255),
)
def test_spdy_random_bodies_behind_valid_headers(
    data: bytes, control: bool, ctype: int, flags: int
) -> None:
    # Structure-aware: a plausible frame header, random body of the announced length.
    if control:
        head = bytes([0x80, 3, ctype >> 8, ctype & 0xFF, flags]) + len(data).to_bytes(3, "big")
    else:
        head = bytes([0, 0, 0, 1, flags]) + len(data).to_bytes(3, "big")
    dec = F.SpdyDecoder()
    run_decoder(dec, [head + data + SPDY_STREAM], False)
    check_spdy(dec)


@FUZZ
@given(
    flips=st.lists(
        st.tuples(st.integers(0, len(SPDY_STREAM) - 1), st.integers(1, 255)), min_size=1, max_size=4
    ),
    cuts=st.lists(st.integers(0, len(SPDY_STREAM)), max_size=6),
)
def test_spdy_mutated_valid_stream(flips: list[tuple[int, int]], cuts: list[int]) -> None:
    data = bytearray(SPDY_STREAM)
    for pos, x in flips:
        data[pos] ^= x
    dec = F.SpdyDecoder(max_header_block=1 << 16)
    run_decoder(dec, chunked(bytes(data), cuts), True)
    check_spdy(dec)


@FUZZ
@given(
    data=st.binary(max_size=2000),
    cuts=st.lists(st.integers(0, 2000), max_size=10),
    masked=st.booleans(),
    via_buffer=st.booleans(),
)
def test_ws_random_bytes(data: bytes, cuts: list[int], masked: bool, via_buffer: bool) -> None:
    dec = F.WsDecoder(expect_masked=masked, max_message=4096, buffer_size=1000)
    frames = run_decoder(dec, chunked(data, cuts), via_buffer)
    check_ws(dec)
    for f in frames:
        assert f.opcode in (0, 1, 2, 8, 9, 10)
        assert len(f.payload) <= 4096
        repr(f)


@FUZZ
@given(
    masked=st.booleans(),
    flips=st.lists(st.tuples(st.integers(0, 400), st.integers(1, 255)), min_size=1, max_size=4),
    cuts=st.lists(st.integers(0, 80000), max_size=6),
)
def test_ws_mutated_valid_stream(
    masked: bool, flips: list[tuple[int, int]], cuts: list[int]
) -> None:
    data = bytearray(WS_STREAMS[masked])
    for pos, x in flips:
        data[pos] ^= x
    dec = F.WsDecoder(expect_masked=masked, max_message=1 << 17)
    run_decoder(dec, chunked(bytes(data), cuts), False)
    check_ws(dec)


@FUZZ
@given(block=st.binary(max_size=500), prefix=st.booleans())
def test_header_decompressor_random(block: bytes, prefix: bool) -> None:
    d = F.HeaderDecompressor(max_output=1 << 16)
    if prefix:
        block = bytes.fromhex("78f9e3c6a7c2") + block
    try:
        headers = d.decompress(block)
    except SpdySessionError:
        return
    assert isinstance(headers, dict)


@FUZZ
@given(raw=st.binary(max_size=300))
def test_decode_header_block_random(raw: bytes) -> None:
    try:
        headers = F.decode_header_block(raw)
    except SpdySessionError:
        return
    assert all(k == k.lower() for k in headers)


@FUZZ
@given(raw=st.binary(max_size=300), level=st.integers(0, 9))
def test_compressed_random_blocks(raw: bytes, level: int) -> None:
    c = zlib.compressobj(
        level, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, zdict=F.SPDY_DICTIONARY
    )
    block = c.compress(raw) + c.flush(zlib.Z_SYNC_FLUSH)
    try:
        headers = F.HeaderDecompressor().decompress(block)
    except SpdySessionError:
        return
    assert F.decode_header_block(raw) == headers


@FUZZ
@given(opcode=st.sampled_from([0, 1, 2, 8]), message=st.binary(max_size=100), b64=st.booleans())
def test_channel_decode_random(opcode: int, message: bytes, b64: bool) -> None:
    try:
        ch, payload = F.channel_decode(opcode, message, base64=b64)
    except WebSocketError as exc:
        assert exc.close_code in (1002, 1003, 1007)
        return
    assert 0 <= ch <= 255
    assert isinstance(payload, (bytes, memoryview))


@FUZZ
@given(payload=st.binary(max_size=130))
def test_parse_close_payload_random(payload: bytes) -> None:
    try:
        code, reason = F.parse_close_payload(payload)
    except WebSocketError as exc:
        assert exc.close_code in (1002, 1007)
        return
    assert code is None or 1000 <= code <= 4999
    assert isinstance(reason, str)
