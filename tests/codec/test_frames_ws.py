"""RFC 6455 codec tests: RFC examples, all length forms, fragmentation, control frames, errors
with their close codes, masking against a pure-Python reference, and the k8s channel helpers."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fastpf import _frames as F
from fastpf.errors import WebSocketError

KEY = bytes.fromhex("37fa213d")

# No 'explain' phase: it is slow and a failing run should report quickly.
PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink)


def ref_mask(data: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def raw_frame(
    opcode: int,
    payload: bytes,
    fin: bool = True,
    key: bytes | None = None,
    rsv: int = 0,
    length_form: str = "auto",
) -> bytes:
    """Independent pure-Python frame builder (not F.ws_frame_header)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv | opcode
    m = 0x80 if key is not None else 0
    if length_form == "auto":
        length_form = "7" if n <= 125 else ("16" if n <= 0xFFFF else "64")
    if length_form == "7":
        head = bytes([b0, m | n])
    elif length_form == "16":
        head = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, m | 127]) + struct.pack(">Q", n)
    if key is not None:
        return head + key + ref_mask(payload, key)
    return head + payload


def drain(dec: F.WsDecoder) -> list[F.WsFrame]:
    out: list[F.WsFrame] = []
    for _ in range(100_000):
        f = dec.next_frame()
        if f is None:
            return out
        out.append(f)
    raise AssertionError("decoder never ran dry")


def write_via_buffer(dec: F.WsDecoder, chunk: bytes) -> None:
    view = memoryview(chunk)
    for _ in range(len(chunk) + 1):
        if not view:
            return
        buf = dec.get_buffer(-1)
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        dec.buffer_updated(n)
        view = view[n:]
    raise AssertionError("get_buffer made no progress")


def decode(
    chunks: Iterable[bytes],
    masked: bool,
    mode: str = "feed",
    buffer_size: int = 256 * 1024,
    max_message: int = 64 << 20,
) -> tuple[list[tuple[Any, ...]], F.WsDecoder]:
    dec = F.WsDecoder(expect_masked=masked, max_message=max_message, buffer_size=buffer_size)
    frames: list[F.WsFrame] = []
    for c in chunks:
        if mode == "buffer":
            write_via_buffer(dec, c)
        elif mode == "bytearray":
            dec.feed(bytearray(c))
        elif mode == "memoryview":
            dec.feed(memoryview(c))
        else:
            dec.feed(c)
        frames.extend(drain(dec))
    # Snapshot at the end: views must still be intact (no release() was called).
    return [(f.opcode, f.fin, bytes(f.payload), f.message_opcode, f.first) for f in frames], dec


def test_large_frames_are_read_exactly_to_their_end_and_never_moved() -> None:
    size = 100_000
    frames = [F.ws_encode(F.WS_BINARY, bytes([65 + i]) * size) for i in range(4)]
    wire = b"".join(frames)
    dec = F.WsDecoder(expect_masked=False, buffer_size=size + 64)
    owner = None
    pos = 0
    for i in range(4):
        buf = dec.get_buffer(1 << 20)
        assert len(buf) <= size + 64  # a size hint never grows the buffer
        buf[:70_000] = wire[pos : pos + 70_000]
        del buf
        dec.buffer_updated(70_000)
        pos += 70_000
        assert dec.next_frame() is None
        buf = dec.get_buffer(1 << 20)
        assert len(buf) == len(frames[i]) - 70_000  # exactly the rest of this frame
        buf[:] = wire[pos : pos + len(buf)]
        dec.buffer_updated(len(buf))
        pos += len(buf)
        del buf
        (f,) = drain(dec)
        assert f.payload == bytes([65 + i]) * size
        owner = owner if owner is not None else f.payload.obj
        assert f.payload.obj is owner  # each frame at the front of the same buffer
        del f
        dec.release()


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    out, prev = [], 0
    for p in [*points, len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


# --- RFC 6455 section 5.7 examples --------------------------------------------------------


def test_rfc_examples() -> None:
    hello = b"Hello"
    assert decode([bytes.fromhex("810548656c6c6f")], False)[0] == [(1, True, hello, 1, True)]
    masked = bytes.fromhex("818537fa213d7f9f4d5158")
    assert decode([masked], True)[0] == [(1, True, hello, 1, True)]
    frag = bytes.fromhex("010348656c") + bytes.fromhex("80026c6f")
    assert decode([frag], False)[0] == [(1, False, b"Hel", 1, True), (0, True, b"lo", 1, False)]
    assert decode([bytes.fromhex("890548656c6c6f")], False)[0] == [(9, True, hello, 9, True)]
    pong = bytes.fromhex("8a8537fa213d7f9f4d5158")
    assert decode([pong], True)[0] == [(10, True, hello, 10, True)]
    assert F.ws_frame_header(F.WS_TEXT, 5) + hello == bytes.fromhex("810548656c6c6f")
    assert F.ws_frame_header(F.WS_TEXT, 5, mask_key=KEY) == bytes.fromhex("818537fa213d")
    assert F.ws_frame_header(F.WS_BINARY, 256) == bytes.fromhex("827e0100")
    assert F.ws_frame_header(F.WS_BINARY, 65536) == bytes.fromhex("827f0000000000010000")
    assert F.ws_frame_header(F.WS_TEXT, 3, fin=False) == bytes.fromhex("0103")
    assert F.ws_frame_header(F.WS_CONT, 2) == bytes.fromhex("8002")


def test_kubectl_close_and_empty_message() -> None:
    # kubectl's exit close (1000, no reason), masked; and an empty binary message (6.2).
    close = raw_frame(F.WS_CLOSE, b"\x03\xe8", key=KEY)
    empty = raw_frame(F.WS_BINARY, b"", key=KEY)
    frames, dec = decode([empty + close], True)
    assert dec.error is None
    assert frames == [(2, True, b"", 2, True), (8, True, b"\x03\xe8", 8, True)]
    assert F.parse_close_payload(frames[1][2]) == (1000, "")
    assert F.ws_close_payload(1000) == b"\x03\xe8"


@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("masked", [False, True])
def test_length_forms(n: int, masked: bool) -> None:
    payload = bytes(i & 0xFF for i in range(n))
    wire = F.ws_encode(F.WS_BINARY, payload, mask=masked)
    hlen = (2 if n <= 125 else 4 if n <= 0xFFFF else 10) + (4 if masked else 0)
    key = wire[hlen - 4 : hlen] if masked else None
    assert wire == raw_frame(F.WS_BINARY, payload, key=key)
    assert F.ws_frame_header(F.WS_BINARY, n, mask_key=key) == wire[:hlen]
    frames, dec = decode([wire], masked)
    assert dec.error is None and frames == [(2, True, payload, 2, True)]


def test_non_minimal_lengths_are_accepted() -> None:
    wire = raw_frame(F.WS_BINARY, b"abc", length_form="16") + raw_frame(
        F.WS_BINARY, b"de", length_form="64", key=KEY
    )
    frames, dec = decode([wire[:7]], False)
    assert frames == [(2, True, b"abc", 2, True)]
    frames, dec = decode([raw_frame(F.WS_BINARY, b"de", length_form="64", key=KEY)], True)
    assert frames == [(2, True, b"de", 2, True)]


def test_masked_encode_uses_fresh_random_keys() -> None:
    keys = {F.ws_encode(F.WS_BINARY, b"x", mask=True)[2:6] for _ in range(64)}
    assert len(keys) > 60
    assert len({F.new_mask_key() for _ in range(64)}) > 60
    assert all(len(F.new_mask_key()) == 4 for _ in range(4))


# --- fragmentation and control frames ---------------------------------------------------------


def test_fragmented_message_with_interleaved_controls() -> None:
    parts = [
        raw_frame(F.WS_BINARY, b"one", fin=False, key=KEY),
        raw_frame(F.WS_PING, b"p1", key=KEY),
        raw_frame(F.WS_CONT, b"", fin=False, key=KEY),
        raw_frame(F.WS_PONG, b"", key=KEY),
        raw_frame(F.WS_CONT, b"two", fin=False, key=KEY),
        raw_frame(F.WS_CLOSE, b"\x03\xe9bye", key=KEY),
        raw_frame(F.WS_CONT, b"three", fin=True, key=KEY),
        raw_frame(F.WS_TEXT, b"next", key=KEY),
    ]
    frames, dec = decode([b"".join(parts)], True)
    assert dec.error is None
    assert frames == [
        (2, False, b"one", 2, True),
        (9, True, b"p1", 9, True),
        (0, False, b"", 2, False),
        (10, True, b"", 10, True),
        (0, False, b"two", 2, False),
        (8, True, b"\x03\xe9bye", 8, True),
        (0, True, b"three", 2, False),
        (1, True, b"next", 1, True),
    ]


BAD: dict[str, tuple[bytes, bool, int]] = {
    "continuation without message": (raw_frame(0, b"x"), False, 1002),
    "new message inside fragmented": (
        raw_frame(2, b"a", fin=False) + raw_frame(1, b"b"),
        False,
        1002,
    ),
    "fragmented ping": (raw_frame(9, b"", fin=False), False, 1002),
    "fragmented close": (raw_frame(8, b"", fin=False), False, 1002),
    "control 126 bytes": (raw_frame(9, b"x" * 126), False, 1002),
    "control 16-bit length form": (raw_frame(10, b"x", length_form="16"), False, 1002),
    "rsv1": (raw_frame(2, b"x", rsv=0x40), False, 1002),
    "rsv2": (raw_frame(2, b"x", rsv=0x20), False, 1002),
    "rsv3": (raw_frame(2, b"x", rsv=0x10), False, 1002),
    "opcode 3": (raw_frame(3, b"x"), False, 1002),
    "opcode 7": (raw_frame(7, b""), False, 1002),
    "opcode 11": (raw_frame(11, b""), False, 1002),
    "opcode 15": (raw_frame(15, b""), False, 1002),
    "unmasked from client": (raw_frame(2, b"x"), True, 1002),
    "masked from server": (raw_frame(2, b"x", key=KEY), False, 1002),
    "64-bit top bit": (bytes([0x82, 127]) + struct.pack(">Q", 1 << 63), False, 1002),
    "64-bit huge": (bytes([0x82, 127]) + struct.pack(">Q", (1 << 62)), False, 1009),
    "close 1 byte": (raw_frame(8, b"\x03"), False, 1002),
    "close code 999": (raw_frame(8, struct.pack(">H", 999)), False, 1002),
    "close code 1005": (raw_frame(8, struct.pack(">H", 1005)), False, 1002),
    "close code 1006": (raw_frame(8, struct.pack(">H", 1006)), False, 1002),
    "close code 1015": (raw_frame(8, struct.pack(">H", 1015)), False, 1002),
    "close code 5000": (raw_frame(8, struct.pack(">H", 5000)), False, 1002),
    "close bad utf-8": (raw_frame(8, b"\x03\xe8\xff\xfe"), False, 1007),
    "oversize frame": (raw_frame(2, b"x" * 1001), False, 1009),
    "oversize message": (
        raw_frame(2, b"x" * 600, fin=False) + raw_frame(0, b"x" * 401),
        False,
        1009,
    ),
}


MULTI_FRAME = {"new message inside fragmented", "oversize message"}


@pytest.mark.parametrize("name", sorted(BAD))
def test_protocol_errors(name: str) -> None:
    wire, masked, code = BAD[name]
    good = raw_frame(F.WS_BINARY, b"ok", key=KEY if masked else None)
    for chunks in ([good + wire], [(good + wire)[i : i + 1] for i in range(len(good + wire))]):
        frames, dec = decode(chunks, masked, max_message=1000)
        # The first fragment of the two multi-frame cases is valid and comes out first.
        assert frames[0] == (2, True, b"ok", 2, True)
        assert len(frames) == (2 if name in MULTI_FRAME else 1)
        err = dec.error
        assert isinstance(err, WebSocketError), name
        assert err.close_code == code
        assert str(err)
        dec.feed(good)
        assert dec.next_frame() is None and dec.error is err
        assert len(dec.get_buffer(-1)) > 0


def test_oversize_detected_before_buffering() -> None:
    dec = F.WsDecoder(expect_masked=False, max_message=1 << 20)
    dec.feed(bytes([0x82, 127]) + struct.pack(">Q", 1 << 40))
    assert dec.next_frame() is None
    assert dec.error is not None and dec.error.close_code == 1009


def test_message_limit_counts_whole_message_and_resets() -> None:
    ok = raw_frame(2, b"x" * 600, fin=False) + raw_frame(0, b"x" * 400)
    frames, dec = decode([ok * 3], False, max_message=1000)
    assert dec.error is None and len(frames) == 6


def test_valid_close_codes_accepted() -> None:
    for code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1014, 3000, 4999):
        frames, dec = decode([raw_frame(8, struct.pack(">H", code) + "é".encode())], False)
        assert dec.error is None
        assert F.parse_close_payload(frames[0][2]) == (code, "é")


# --- chunking invariance --------------------------------------------------------------------

ws_frames = st.lists(
    st.one_of(
        st.tuples(st.sampled_from([F.WS_BINARY, F.WS_TEXT]), st.binary(max_size=300)),
        st.tuples(st.sampled_from([F.WS_PING, F.WS_PONG]), st.binary(max_size=125)),
    ),
    min_size=1,
    max_size=8,
)


@settings(
    phases=PHASES, max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(frames=ws_frames, masked=st.booleans(), data=st.data())
def test_round_trip_any_chunking(
    frames: list[tuple[int, bytes]], masked: bool, data: st.DataObject
) -> None:
    wire = b"".join(F.ws_encode(op, p, mask=masked) for op, p in frames)
    expected = [(op, True, p, op, True) for op, p in frames]
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12))
    mode = data.draw(st.sampled_from(["feed", "bytearray", "memoryview", "buffer"]))
    size = data.draw(st.sampled_from([64, 333, 256 * 1024]))
    got, dec = decode(split_at(wire, cuts), masked, mode, size)
    assert dec.error is None
    assert got == expected
    whole, _ = decode([wire], masked)
    single, _ = decode([wire[i : i + 1] for i in range(len(wire))], masked, "buffer", 64)
    assert whole == single == expected
    trailing, dec = decode([wire + wire[:1]], masked)
    assert trailing == expected and dec.error is None


def test_release_and_buffer_reuse() -> None:
    dec = F.WsDecoder(expect_masked=True, buffer_size=1024)
    owners = set()
    for i in range(50):
        write_via_buffer(dec, F.ws_encode(F.WS_BINARY, bytes([i]) * 300, mask=True))
        (f,) = drain(dec)
        assert f.payload == bytes([i]) * 300
        owners.add(id(f.payload.obj))
        del f
        dec.release()
    assert len(owners) == 1
    held: list[memoryview] = []
    for i in range(50):
        write_via_buffer(dec, F.ws_encode(F.WS_BINARY, bytes([i]) * 300, mask=True))
        held.extend(f.payload for f in drain(dec))
    assert [bytes(v) for v in held] == [bytes([i]) * 300 for i in range(50)]


# --- masking ----------------------------------------------------------------------------------


@settings(phases=PHASES, max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=200),
    key=st.binary(min_size=4, max_size=4),
    pre=st.integers(0, 9),
    post=st.integers(0, 9),
)
def test_mask_inplace_matches_reference(data: bytes, key: bytes, pre: int, post: int) -> None:
    buf = bytearray(b"\xaa" * pre + data + b"\x55" * post)
    F.mask_inplace(buf, key, pre, len(data))
    assert bytes(buf) == b"\xaa" * pre + ref_mask(data, key) + b"\x55" * post
    F.mask_inplace(memoryview(buf), key, pre, len(data))
    assert bytes(buf) == b"\xaa" * pre + data + b"\x55" * post
    whole = bytearray(data)
    F.mask_inplace(whole, bytearray(key))
    assert bytes(whole) == ref_mask(data, key)
    tail = bytearray(b"\xaa" * pre + data)
    F.mask_inplace(tail, memoryview(key), pre)  # length -1: to the end
    assert bytes(tail) == b"\xaa" * pre + ref_mask(data, key)


def test_mask_inplace_large_odd_sizes() -> None:
    for n in (31, 32, 33, 63, 64, 65, 1000, 4097):
        data = bytes((i * 7) & 0xFF for i in range(n))
        for offset in (0, 1, 3, 5):
            buf = bytearray(offset) + bytearray(data)
            F.mask_inplace(buf, KEY, offset)
            assert bytes(buf[offset:]) == ref_mask(data, KEY)


@pytest.mark.parametrize(
    "args",
    [
        (bytearray(4), b"abc"),
        (bytearray(4), b"abcde"),
        (bytearray(4), KEY, 5),
        (bytearray(4), KEY, -1),
        (bytearray(4), KEY, 2, 3),
    ],
)
def test_mask_inplace_rejects(args: tuple[Any, ...]) -> None:
    with pytest.raises(ValueError):
        F.mask_inplace(*args)


def test_mask_inplace_needs_writable() -> None:
    with pytest.raises((BufferError, TypeError)):
        F.mask_inplace(b"abcd", KEY)


def test_ws_encode_masked_with_given_header_key() -> None:
    payload = b"hello world, longer than eight bytes"
    head = F.ws_frame_header(F.WS_BINARY, len(payload), mask_key=KEY)
    buf = bytearray(payload)
    F.mask_inplace(buf, KEY)
    assert head + bytes(buf) == raw_frame(F.WS_BINARY, payload, key=KEY)


@pytest.mark.parametrize(
    "call",
    [
        lambda: F.ws_frame_header(3, 1),
        lambda: F.ws_frame_header(F.WS_PING, 126),
        lambda: F.ws_frame_header(F.WS_CLOSE, 2, fin=False),
        lambda: F.ws_frame_header(F.WS_BINARY, -1),
        lambda: F.ws_frame_header(F.WS_BINARY, 1, mask_key=b"abc"),
        lambda: F.ws_encode(F.WS_PONG, b"x" * 126),
        lambda: F.ws_close_payload(1005),
        lambda: F.ws_close_payload(70000),
        lambda: F.ws_close_payload(1000, "x" * 124),
        lambda: F.channel_encode(-1, b""),
        lambda: F.channel_encode(256, b""),
    ],
)
def test_local_misuse_raises_value_error(call: Any) -> None:
    with pytest.raises(ValueError):
        call()


# --- close payloads ---------------------------------------------------------------------------


def test_close_payload_helpers() -> None:
    assert F.ws_close_payload(1001, "going away") == b"\x03\xe9going away"
    assert F.parse_close_payload(b"") == (None, "")
    assert F.parse_close_payload(memoryview(b"\x03\xe9going away")) == (1001, "going away")
    assert F.parse_close_payload(F.ws_close_payload(4000, "ü" * 61)) == (4000, "ü" * 61)
    for bad, code in ((b"\x03", 1002), (b"\x03\xed", 1002), (b"\x03\xe8\xc3", 1007)):
        with pytest.raises(WebSocketError) as info:
            F.parse_close_payload(bad)
        assert info.value.close_code == code


# --- v4 channel helpers (PROTOCOL.md 6.1) ---------------------------------------------------


def test_channel_binary() -> None:
    assert F.channel_encode(0, b"\x90\x1f") == (F.WS_BINARY, b"\x00\x90\x1f")
    assert F.channel_encode(1, bytearray(b"\x90\x1f")) == (F.WS_BINARY, b"\x01\x90\x1f")
    ch, payload = F.channel_decode(F.WS_BINARY, b"\x02data")
    assert ch == 2 and bytes(payload) == b"data"
    assert isinstance(payload, memoryview)  # no copy
    src = bytearray(b"\x03xyz")
    ch, payload = F.channel_decode(F.WS_BINARY, memoryview(src))
    assert ch == 3 and isinstance(payload, memoryview) and payload.obj is src
    assert F.channel_decode(F.WS_BINARY, b"\x05") == (5, b"")


def test_channel_base64() -> None:
    op, msg = F.channel_encode(0, b"\x90\x1f", base64=True)
    assert (op, msg) == (F.WS_TEXT, b"0kB8=")
    assert F.channel_encode(3, b"hello", base64=True) == (F.WS_TEXT, b"3aGVsbG8=")
    assert F.channel_encode(1, b"", base64=True) == (F.WS_TEXT, b"1")
    assert F.channel_decode(F.WS_TEXT, b"3aGVsbG8=", base64=True) == (3, b"hello")
    assert F.channel_decode(F.WS_TEXT, b"1", base64=True) == (1, b"")
    # Channels past 9 continue past '9' in ASCII (chr(ord('0') + channel)).
    assert F.channel_encode(11, b"a", base64=True) == (F.WS_TEXT, b";YQ==")
    assert F.channel_decode(F.WS_TEXT, b";YQ==", base64=True) == (11, b"a")


@settings(phases=PHASES, max_examples=100, deadline=None)
@given(channel=st.integers(0, 200), payload=st.binary(max_size=200), b64=st.booleans())
def test_channel_round_trip(channel: int, payload: bytes, b64: bool) -> None:
    op, msg = F.channel_encode(channel, payload, base64=b64)
    ch, out = F.channel_decode(op, msg, base64=b64)
    assert (ch, bytes(out)) == (channel, payload)


@pytest.mark.parametrize(
    "opcode,message,b64,code",
    [
        (F.WS_BINARY, b"", False, 1002),
        (F.WS_TEXT, b"\x00ab", False, 1003),
        (F.WS_BINARY, b"0YQ==", True, 1003),
        (F.WS_TEXT, b"", True, 1002),
        (F.WS_TEXT, b"/YQ==", True, 1002),
        (F.WS_TEXT, b"0YQ=", True, 1007),
        (F.WS_TEXT, b"0Y!==", True, 1007),
    ],
)
def test_channel_decode_errors(opcode: int, message: bytes, b64: bool, code: int) -> None:
    with pytest.raises(WebSocketError) as info:
        F.channel_decode(opcode, message, base64=b64)
    assert info.value.close_code == code


def test_every_truncation_yields_only_complete_frames() -> None:
    parts = [
        raw_frame(F.WS_BINARY, b"a" * 130, fin=False, key=KEY),
        raw_frame(F.WS_PING, b"", key=KEY),
        raw_frame(F.WS_CONT, b"b" * 3, key=KEY),
        raw_frame(F.WS_TEXT, b"", key=KEY),
    ]
    wire = b"".join(parts)
    ends = [sum(len(p) for p in parts[: i + 1]) for i in range(len(parts))]
    full, _ = decode([wire], True)
    for cut in range(len(wire) + 1):
        frames, dec = decode([wire[:cut]], True)
        assert dec.error is None
        assert frames == full[: sum(1 for e in ends if e <= cut)]


def test_big_frame_grows_the_buffer() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    wire = F.ws_encode(F.WS_BINARY, payload, mask=True)
    frames, dec = decode(split_at(wire, [5, 100, 300_000]), True, "buffer", 4096)
    assert dec.error is None and frames == [(2, True, payload, 2, True)]


def test_frame_object_construct_and_repr() -> None:
    f = F.WsFrame(F.WS_PING, True, b"hi")
    assert (f.opcode, f.fin, bytes(f.payload), f.message_opcode, f.first) == (
        9,
        True,
        b"hi",
        9,
        True,
    )
    assert "opcode=9" in repr(f)
