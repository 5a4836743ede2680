"""A small pure-Python SPDY/3 frame codec, written from the SPDY/3 draft and PROTOCOL.md section 4.

The reference the compiled codec (fastpf._frames) is tested against: plain code, no speed
tricks, no shared state with the code under test. It takes only the header dictionary's bytes
from the codec, and checks them against the digests PROTOCOL.md 4.3 publishes first.

Frames are plain dataclasses. `Encoder` builds bytes; `Decoder` takes bytes in any chunks and
gives frames; a peer's violation of PROTOCOL.md 4.5 raises `RefProtocolError`.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from fastpf._frames import SPDY_DICTIONARY

# PROTOCOL.md 4.3: 1423 bytes, Adler-32 0xE3C6A7C2, SHA-256 51d27341...407f02.
DICTIONARY = SPDY_DICTIONARY
if (
    len(DICTIONARY) != 1423
    or zlib.adler32(DICTIONARY) != 0xE3C6A7C2
    or hashlib.sha256(DICTIONARY).hexdigest()
    != "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
):
    raise RuntimeError("SPDY_DICTIONARY does not match PROTOCOL.md 4.3")

VERSION = 3
DATA_MAX = (1 << 24) - 1
ID_MASK = 0x7FFFFFFF

# Control frame types (PROTOCOL.md 4.1).
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = (
    1, 2, 3, 4, 6, 7, 8, 9,
)  # fmt: skip

Headers = dict[str, str]


class RefProtocolError(Exception):
    """The byte stream breaks a rule a spdystream peer enforces (fatal for the session).

    `frames`: the frames the failing feed() call decoded before the fault, in order."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.frames: list[Frame] = []


@dataclass(frozen=True)
class Data:
    stream_id: int
    payload: bytes
    flags: int = 0


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: Headers
    flags: int = 0
    assoc_id: int = 0
    priority: int = 0
    slot: int = 0


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: Headers
    flags: int = 0


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: Headers
    flags: int = 0


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int
    flags: int = 0


@dataclass(frozen=True)
class Settings:
    entries: tuple[tuple[int, int, int], ...]  # (flags, id, value)
    flags: int = 0


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_good_id: int
    status: int


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int
    delta: int


Frame = (
    Data | SynStream | SynReply | HeadersFrame | RstStream | Settings | Ping | GoAway | WindowUpdate
)


# --- header blocks (PROTOCOL.md 4.2) ---------------------------------------------------------


def pack_block(headers: Headers) -> bytes:
    """The uncompressed block: count, then (length, name, length, value) per header."""
    out = [struct.pack("!I", len(headers))]
    for name, value in headers.items():
        n = name.encode("utf-8", "surrogateescape")
        v = value.encode("utf-8", "surrogateescape")
        out += [struct.pack("!I", len(n)), n, struct.pack("!I", len(v)), v]
    return b"".join(out)


def unpack_block(block: bytes) -> Headers:
    """Parse an uncompressed block; every byte must be used, names lower-case and unique."""
    if len(block) < 4:
        raise RefProtocolError("header block without a count")
    (count,) = struct.unpack_from("!I", block, 0)
    pos = 4
    headers: Headers = {}
    for _ in range(count):
        fields: list[str] = []
        for _part in ("name", "value"):
            if len(block) - pos < 4:
                raise RefProtocolError("header block truncated")
            (n,) = struct.unpack_from("!I", block, pos)
            pos += 4
            if n > len(block) - pos:
                raise RefProtocolError("header block truncated")
            fields.append(block[pos : pos + n].decode("utf-8", "surrogateescape"))
            pos += n
        name, value = fields
        if name != name.lower():
            raise RefProtocolError(f"header name {name!r} is not lower-case")
        if name in headers:
            raise RefProtocolError(f"header name {name!r} repeated")
        headers[name] = value
    if pos != len(block):
        raise RefProtocolError("bytes after the last header")
    return headers


# --- encoder -----------------------------------------------------------------------------------


def _control(ctype: int, flags: int, payload: bytes) -> bytes:
    return struct.pack("!HHI", 0x8000 | VERSION, ctype, (flags << 24) | len(payload)) + payload


class Encoder:
    """One direction's frames; owns that direction's zlib stream (one per connection)."""

    def __init__(self, level: int = 9) -> None:
        self._z = zlib.compressobj(level, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, DICTIONARY)

    def compress(self, headers: Headers) -> bytes:
        return self._z.compress(pack_block(headers)) + self._z.flush(zlib.Z_SYNC_FLUSH)

    def encode(self, frame: Frame) -> bytes:
        if isinstance(frame, Data):
            return struct.pack("!II", frame.stream_id, (frame.flags << 24) | len(frame.payload)) + (
                frame.payload
            )
        if isinstance(frame, SynStream):
            fixed = struct.pack(
                "!IIBB", frame.stream_id, frame.assoc_id, frame.priority << 5, frame.slot
            )
            return _control(SYN_STREAM, frame.flags, fixed + self.compress(frame.headers))
        if isinstance(frame, SynReply):
            block = self.compress(frame.headers)
            return _control(SYN_REPLY, frame.flags, struct.pack("!I", frame.stream_id) + block)
        if isinstance(frame, HeadersFrame):
            block = self.compress(frame.headers)
            return _control(HEADERS, frame.flags, struct.pack("!I", frame.stream_id) + block)
        if isinstance(frame, RstStream):
            payload = struct.pack("!II", frame.stream_id, frame.status)
            return _control(RST_STREAM, frame.flags, payload)
        if isinstance(frame, Settings):
            body = b"".join(struct.pack("!II", (f << 24) | i, v) for f, i, v in frame.entries)
            return _control(SETTINGS, frame.flags, struct.pack("!I", len(frame.entries)) + body)
        if isinstance(frame, Ping):
            return _control(PING, 0, struct.pack("!I", frame.ping_id))
        if isinstance(frame, GoAway):
            return _control(GOAWAY, 0, struct.pack("!II", frame.last_good_id, frame.status))
        return _control(WINDOW_UPDATE, 0, struct.pack("!II", frame.stream_id, frame.delta))

    def encode_all(self, frames: Iterable[Frame]) -> bytes:
        return b"".join(self.encode(f) for f in frames)


# --- decoder -----------------------------------------------------------------------------------


@dataclass
class Decoder:
    """One direction's frames from bytes in any chunks. After a RefProtocolError it is spent."""

    _buf: bytearray = field(default_factory=bytearray)
    _z: zlib._Decompress = field(default_factory=lambda: zlib.decompressobj(zdict=DICTIONARY))
    _failed: bool = False

    def feed(self, data: bytes) -> list[Frame]:
        """Append `data`; return every frame now complete, in order."""
        if self._failed:
            raise RefProtocolError("decoder already failed")
        self._buf += data
        frames: list[Frame] = []
        try:
            while len(self._buf) >= 8:
                w0, w1 = struct.unpack_from("!II", self._buf, 0)
                length = w1 & 0xFFFFFF
                if len(self._buf) < 8 + length:
                    break
                payload = bytes(self._buf[8 : 8 + length])
                del self._buf[: 8 + length]
                frames.append(self._frame(w0, w1 >> 24, payload))
        except RefProtocolError as exc:
            self._failed = True
            exc.frames = frames
            raise
        return frames

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def _inflate(self, block: bytes) -> Headers:
        # Each block must inflate completely from its own frame's bytes (PROTOCOL.md 4.3).
        try:
            raw = self._z.decompress(block)
        except zlib.error as exc:
            raise RefProtocolError(f"header block does not inflate: {exc}") from None
        if self._z.eof:
            raise RefProtocolError("header zlib stream ended")
        return unpack_block(raw)

    def _frame(self, w0: int, flags: int, p: bytes) -> Frame:
        if not w0 & 0x80000000:
            sid = w0 & ID_MASK
            if sid == 0:
                raise RefProtocolError("DATA on stream 0")
            return Data(sid, p, flags)
        ctype = w0 & 0xFFFF  # the version (bits 16-30) is not checked, as in spdystream
        if ctype == SYN_STREAM:
            if len(p) < 10:
                raise RefProtocolError("short SYN_STREAM")
            sid, assoc, pri, slot = struct.unpack_from("!IIBB", p, 0)
            headers = self._inflate(p[10:])
            if sid & ID_MASK == 0:
                raise RefProtocolError("SYN_STREAM on stream 0")
            return SynStream(sid & ID_MASK, headers, flags, assoc & ID_MASK, pri >> 5, slot)
        if ctype in (SYN_REPLY, HEADERS):
            if len(p) < 4:
                raise RefProtocolError("short SYN_REPLY/HEADERS")
            sid = struct.unpack_from("!I", p, 0)[0] & ID_MASK
            headers = self._inflate(p[4:])
            if sid == 0:
                raise RefProtocolError("SYN_REPLY/HEADERS on stream 0")
            if ctype == SYN_REPLY:
                return SynReply(sid, headers, flags)
            return HeadersFrame(sid, headers, flags)
        if ctype == RST_STREAM:
            if len(p) != 8:
                raise RefProtocolError("RST_STREAM length")
            sid, status = struct.unpack("!II", p)
            if status == 0 or sid & ID_MASK == 0:
                raise RefProtocolError("RST_STREAM status 0 or stream 0")
            return RstStream(sid & ID_MASK, status, flags)
        if ctype == SETTINGS:
            if len(p) < 4:
                raise RefProtocolError("short SETTINGS")
            (count,) = struct.unpack_from("!I", p, 0)
            if 4 + 8 * count != len(p):
                raise RefProtocolError("SETTINGS count does not match the length")
            entries = []
            for i in range(count):
                fid, value = struct.unpack_from("!II", p, 4 + 8 * i)
                entries.append((fid >> 24, fid & 0xFFFFFF, value))
            return Settings(tuple(entries), flags)
        if ctype == PING:
            if flags or len(p) != 4:
                raise RefProtocolError("PING with flags or length != 4")
            (pid,) = struct.unpack("!I", p)
            if pid == 0:
                raise RefProtocolError("PING id 0")
            return Ping(pid)
        if ctype in (GOAWAY, WINDOW_UPDATE):
            if flags or len(p) != 8:
                raise RefProtocolError("GOAWAY/WINDOW_UPDATE with flags or length != 8")
            a, b = struct.unpack("!II", p)
            if ctype == GOAWAY:
                return GoAway(a & ID_MASK, b)
            return WindowUpdate(a & ID_MASK, b & ID_MASK)
        raise RefProtocolError(f"unknown control frame type {ctype}")
