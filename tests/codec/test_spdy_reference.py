"""The SPDY/3 codec against the pure-Python reference in tests/support/spdy_reference.py.

Random frame sequences encoded by one and decoded by the other, the wire split at random
points and fed through every entry point (feed, get_buffer/buffer_updated, feed_borrowed);
the two encoders must produce the same bytes (same zlib stream, same level); mutated streams
must be refused alike; the kubectl captures of PROTOCOL.md decode to what kubectl sent.
"""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastpf import _frames as F
from fastpf.errors import SpdySessionError
from tests.support import spdy_reference as R

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- frames as values ------------------------------------------------------------------------

stream_ids = st.integers(1, R.ID_MASK)
flags8 = st.integers(0, 255)
u32 = st.integers(0, 0xFFFFFFFF)
# Names: non-empty and lower-case after any Unicode mapping (the receiver's rule); values: any
# text, NULs included (several values travel NUL-joined).
names = st.text(min_size=1, max_size=12).filter(lambda s: s == s.lower())
values = st.text(max_size=40)
header_dicts = st.dictionaries(names, values, max_size=5)
payloads = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda n, unit: (unit * (n // len(unit) + 1))[:n],
        st.integers(300, 70000),
        st.binary(min_size=1, max_size=5),
    ),
)

frames = st.one_of(
    st.builds(R.Data, stream_ids, payloads, flags8),
    st.builds(
        R.SynStream,
        stream_ids,
        header_dicts,
        flags8,
        st.integers(0, R.ID_MASK),
        st.integers(0, 7),
        flags8,
    ),
    st.builds(R.SynReply, stream_ids, header_dicts, flags8),
    st.builds(R.HeadersFrame, stream_ids, header_dicts, flags8),
    st.builds(R.RstStream, stream_ids, st.integers(1, 0xFFFFFFFF)),
    st.builds(
        R.Settings,
        st.lists(st.tuples(flags8, st.integers(0, 0xFFFFFF), u32), max_size=4).map(tuple),
        flags8,
    ),
    st.builds(R.Ping, st.integers(1, 0xFFFFFFFF)),
    st.builds(R.GoAway, st.integers(0, R.ID_MASK), u32),
    st.builds(R.WindowUpdate, st.integers(0, R.ID_MASK), st.integers(0, R.ID_MASK)),
)
sequences = st.lists(frames, max_size=12)
cut_points = st.lists(st.integers(0, 1 << 20), max_size=10)
modes = st.sampled_from(["feed", "buffer", "borrowed"])


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out: list[bytes] = []
    prev = 0
    for p in [*points, len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


# --- ours, spoken in the reference's terms -----------------------------------------------------


def our_encode(enc: F.SpdyEncoder, frame: R.Frame, gather: bool) -> bytes:
    if isinstance(frame, R.Data):
        if gather:  # the relay's way: a separate 8-byte header, the payload untouched
            return F.data_header(frame.stream_id, frame.flags, len(frame.payload)) + frame.payload
        return enc.data(frame.stream_id, frame.payload, frame.flags)
    if isinstance(frame, R.SynStream):
        return enc.syn_stream(
            frame.stream_id, frame.headers, frame.flags, frame.assoc_id, frame.priority, frame.slot
        )
    if isinstance(frame, R.SynReply):
        return enc.syn_reply(frame.stream_id, frame.headers, frame.flags)
    if isinstance(frame, R.HeadersFrame):
        return enc.headers(frame.stream_id, frame.headers, frame.flags)
    if isinstance(frame, R.RstStream):
        assert frame.flags == 0  # ours never sends flags on RST_STREAM
        return enc.rst_stream(frame.stream_id, frame.status)
    if isinstance(frame, R.Settings):
        return enc.settings(frame.entries, frame.flags)
    if isinstance(frame, R.Ping):
        return enc.ping(frame.ping_id)
    if isinstance(frame, R.GoAway):
        return enc.goaway(frame.last_good_id, frame.status)
    return enc.window_update(frame.stream_id, frame.delta)


def as_reference(f: F.SpdyFrame) -> R.Frame:
    headers = dict(f.headers or {})
    if f.type == F.DATA:
        assert f.payload is not None
        return R.Data(f.stream_id, bytes(f.payload), f.flags)
    if f.type == F.SYN_STREAM:
        return R.SynStream(f.stream_id, headers, f.flags, f.assoc_id, f.priority, f.slot)
    if f.type == F.SYN_REPLY:
        return R.SynReply(f.stream_id, headers, f.flags)
    if f.type == F.HEADERS:
        return R.HeadersFrame(f.stream_id, headers, f.flags)
    if f.type == F.RST_STREAM:
        return R.RstStream(f.stream_id, f.status, f.flags)
    if f.type == F.SETTINGS:
        return R.Settings(tuple(f.settings or ()), f.flags)
    if f.type == F.PING:
        return R.Ping(f.ping_id)
    if f.type == F.GOAWAY:
        return R.GoAway(f.last_good_id, f.status)
    assert f.type == F.WINDOW_UPDATE
    return R.WindowUpdate(f.stream_id, f.delta)


def our_decode(chunks: list[bytes], mode: str) -> tuple[list[R.Frame], SpdySessionError | None]:
    """Every frame ours decodes from `chunks` (payloads copied out), and its error if any."""
    dec = F.SpdyDecoder(buffer_size=4096)
    out: list[R.Frame] = []
    for chunk in chunks:
        if mode == "feed":
            dec.feed(chunk)
        elif mode == "borrowed":
            dec.feed_borrowed(chunk)  # decoded where it lies; views into `chunk`
        else:
            view = memoryview(chunk)
            for _ in range(len(chunk) + 1):
                if not view:
                    break
                buf = dec.get_buffer(-1)
                n = min(len(buf), len(view))
                buf[:n] = view[:n]
                dec.buffer_updated(n)
                view = view[n:]
        for _ in range(len(chunk) + 2):  # every frame takes at least 8 bytes
            frame = dec.next_frame()
            if frame is None:
                break
            out.append(as_reference(frame))
        dec.release()
        if dec.error is not None:
            break
    return out, dec.error


def ref_decode(chunks: list[bytes]) -> tuple[list[R.Frame], bool, R.Decoder]:
    dec = R.Decoder()
    out: list[R.Frame] = []
    for chunk in chunks:
        try:
            out += dec.feed(chunk)
        except R.RefProtocolError as exc:
            return out + exc.frames, True, dec
    return out, False, dec


# --- differential round trips ------------------------------------------------------------------


@SETTINGS
@given(seq=sequences, gather=st.booleans(), cuts=cut_points, level=st.sampled_from([6, 9]))
def test_ours_encodes_reference_decodes(
    seq: list[R.Frame], gather: bool, cuts: list[int], level: int
) -> None:
    enc = F.SpdyEncoder(header_level=level)
    wire = b"".join(our_encode(enc, f, gather) for f in seq)
    # Same zlib level and stream: the very same bytes as the reference encoder.
    assert wire == R.Encoder(level).encode_all(seq)
    decoded, failed, dec = ref_decode(split(wire, cuts))
    assert not failed and dec.buffered == 0
    assert decoded == seq


@SETTINGS
@given(seq=sequences, cuts=cut_points, mode=modes)
def test_reference_encodes_ours_decodes(seq: list[R.Frame], cuts: list[int], mode: str) -> None:
    wire = R.Encoder().encode_all(seq)
    decoded, error = our_decode(split(wire, cuts), mode)
    assert error is None
    assert decoded == seq


# --- hostile streams: refused alike -------------------------------------------------------------


@SETTINGS
@given(
    seq=st.lists(
        frames.filter(lambda f: not isinstance(f, R.Data) or len(f.payload) < 400),
        min_size=1,
        max_size=6,
    ),
    flips=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(1, 255)), min_size=1, max_size=3),
    cuts=cut_points,
    mode=modes,
)
def test_mutated_streams_refused_alike(
    seq: list[R.Frame], flips: list[tuple[int, int]], cuts: list[int], mode: str
) -> None:
    wire = bytearray(R.Encoder().encode_all(seq))
    for at, xor in flips:
        wire[at % len(wire)] ^= xor
    chunks = split(bytes(wire), cuts)
    ref_frames, ref_failed, ref = ref_decode(chunks)
    ours, error = our_decode(chunks, mode)
    assert ours == ref_frames
    if ref_failed:
        assert isinstance(error, SpdySessionError)
    elif ref.buffered == 0:
        assert error is None
    elif error is not None:
        # Ours refuses some frames from their 8-byte header alone, before the payload is in
        # (a PING of 4000 bytes); the reference would refuse them once complete.
        header = bytes(wire[len(wire) - ref.buffered :][:8])
        if len(header) == 8:
            missing = 8 + (struct.unpack("!I", header[4:])[0] & 0xFFFFFF) - ref.buffered
            with pytest.raises(R.RefProtocolError):
                ref.feed(b"\0" * missing)


@st.composite
def raw_blocks(draw: st.DrawFn) -> bytes:
    """Header blocks near the rules: upper-case or repeated names, wrong counts, extra bytes."""
    entries: list[tuple[str, str]] = draw(
        st.lists(st.tuples(st.text(max_size=6), st.text(max_size=6)), max_size=4)
    )
    repeat: bool = draw(st.booleans())
    if entries and repeat:
        entries.append(entries[0])
    count = len(entries) + draw(st.sampled_from([0, 0, 0, -1, 1]))
    block = struct.pack("!I", max(count, 0))
    for name, value in entries:
        n, v = name.encode(), value.encode()
        block += struct.pack("!I", len(n)) + n + struct.pack("!I", len(v)) + v
    return block + draw(st.sampled_from([b"", b"", b"\0", b"\0\0\0\0"]))


@SETTINGS
@given(block=st.one_of(raw_blocks(), st.binary(max_size=60)))
def test_header_block_rules_agree(block: bytes) -> None:
    try:
        expected: dict[str, str] | None = R.unpack_block(block)
    except R.RefProtocolError:
        expected = None
    if expected is None:
        with pytest.raises(SpdySessionError):
            F.decode_header_block(block)
    else:
        assert F.decode_header_block(block) == expected
    # The same block behind a SYN_STREAM, compressed: the frame decoders agree too.
    z = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, R.DICTIONARY)
    compressed = z.compress(block) + z.flush(zlib.Z_SYNC_FLUSH)
    wire = struct.pack("!HHI", 0x8003, R.SYN_STREAM, 10 + len(compressed))
    wire += struct.pack("!IIBB", 1, 0, 0, 0) + compressed
    ref_frames, ref_failed, _ = ref_decode([wire])
    ours, error = our_decode([wire], "feed")
    assert ref_failed == (expected is None) == (error is not None)
    assert ours == ref_frames


# --- kubectl captures (PROTOCOL.md 4.1-4.4) -----------------------------------------------------

BLOCK_1 = bytes.fromhex(
    "78f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45e01c60616061c0c0c0c0590489c64c50f2663400000000ffff"
)
BLOCK_2 = bytes.fromhex("c2aa19540e2512d60b000000ffff")
ERROR_HEADERS = {"streamtype": "error", "port": "8080", "requestid": "0"}
DATA_HEADERS = {"streamtype": "data", "port": "8080", "requestid": "0"}


def _syn_stream(sid: int, block: bytes) -> bytes:
    return (
        struct.pack("!HHI", 0x8003, 1, 10 + len(block)) + struct.pack("!IIBB", sid, 0, 0, 0) + block
    )


def test_kubectl_header_blocks_decode_in_both() -> None:
    wire = _syn_stream(1, BLOCK_1) + bytes.fromhex("0000000101000000") + _syn_stream(3, BLOCK_2)
    expected: list[R.Frame] = [
        R.SynStream(1, ERROR_HEADERS),
        R.Data(1, b"", F.FLAG_FIN),  # kubectl's empty FIN on the error stream
        R.SynStream(3, DATA_HEADERS),
    ]
    assert R.Decoder().feed(wire) == expected
    for mode in ("feed", "buffer", "borrowed"):
        for size in (1, 7, len(wire)):
            chunks = [wire[i : i + size] for i in range(0, len(wire), size)]
            assert our_decode(chunks, mode) == (expected, None)


def test_kubectl_uncompressed_block_vector() -> None:
    vector = (
        bytes.fromhex("00000003") + b"\x00\x00\x00\x0astreamtype" + b"\x00\x00\x00\x05error"
        b"\x00\x00\x00\x04port" + b"\x00\x00\x00\x048080" + b"\x00\x00\x00\x09requestid"
        b"\x00\x00\x00\x010"
    )
    assert R.pack_block(ERROR_HEADERS) == F.encode_header_block(ERROR_HEADERS) == vector
    assert R.unpack_block(vector) == F.decode_header_block(vector) == ERROR_HEADERS


def test_kubectl_control_frames_and_empty_reply_blocks() -> None:
    ping = bytes.fromhex("800300060000000400000001")
    goaway = bytes.fromhex("80030007000000080000000000000000")
    ours, ref = F.SpdyEncoder(), R.Encoder()
    assert ours.ping(1) == ref.encode(R.Ping(1)) == ping
    assert ours.goaway(0, F.GOAWAY_OK) == ref.encode(R.GoAway(0, 0)) == goaway
    assert our_decode([ping + goaway], "feed") == ([R.Ping(1), R.GoAway(0, 0)], None)
    # Two empty SYN_REPLY blocks from a fresh compressor (kubelet's replies).
    first, second = ours.syn_reply(1, {}), ours.syn_reply(3, {})
    assert first[12:] == bytes.fromhex("78f9e3c6a7c202a6230600000000ffff")
    assert second[12:] == bytes.fromhex("020100000000ffff")
    assert first + second == ref.encode_all([R.SynReply(1, {}), R.SynReply(3, {})])
