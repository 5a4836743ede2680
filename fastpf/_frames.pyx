# cython: language_level=3, cdivision=True
"""Sans-IO SPDY/3 and RFC 6455 frame codecs (PROTOCOL.md sections 4 and 6).

The only place that knows frame layouts. Decoders take bytes through the BufferedProtocol pair
(`get_buffer`/`buffer_updated`) or `feed()`, decode from a raw pointer with explicit bounds checks,
and hand out DATA / WebSocket payloads as memoryviews into their receive buffer (no copy).
Decoders never raise into the caller's event-loop callback: a fatal peer error is stored in
`.error` and `next_frame()` returns None from then on.
"""

cimport cython
from cpython.buffer cimport (
    PyBUF_SIMPLE,
    PyBUF_WRITABLE,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeUTF8


cdef extern from "Python.h":
    # The export count CPython keeps so that a bytearray with live views cannot be resized.
    ctypedef struct PyByteArrayObject:
        Py_ssize_t ob_exports
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove

import base64 as _base64
import binascii as _binascii
import os as _os
import zlib as _zlib

from fastpf.errors import SpdySessionError, WebSocketError

__all__ = [
    "DATA", "SYN_STREAM", "SYN_REPLY", "RST_STREAM", "SETTINGS", "PING", "GOAWAY", "HEADERS",
    "WINDOW_UPDATE", "FLAG_FIN", "FLAG_UNIDIRECTIONAL", "FLAG_CLEAR_SETTINGS",
    "RST_PROTOCOL_ERROR", "RST_INVALID_STREAM", "RST_REFUSED_STREAM", "RST_UNSUPPORTED_VERSION",
    "RST_CANCEL", "RST_INTERNAL_ERROR", "RST_FLOW_CONTROL_ERROR", "RST_STREAM_IN_USE",
    "RST_STREAM_ALREADY_CLOSED", "RST_INVALID_CREDENTIALS", "RST_FRAME_TOO_LARGE",
    "GOAWAY_OK", "GOAWAY_PROTOCOL_ERROR", "GOAWAY_INTERNAL_ERROR", "MAX_DATA_LENGTH",
    "SPDY_DICTIONARY", "WS_CONT", "WS_TEXT", "WS_BINARY", "WS_CLOSE", "WS_PING", "WS_PONG",
    "SpdyFrame", "SpdyDecoder", "SpdyEncoder", "HeaderCompressor", "HeaderDecompressor",
    "data_header", "pack_data_header", "encode_header_block", "decode_header_block",
    "WsFrame", "WsDecoder", "ws_frame_header", "ws_encode", "mask_inplace", "new_mask_key",
    "alloc_buffer", "buffer_exported",
    "ws_close_payload", "parse_close_payload", "channel_encode", "channel_decode",
]

# --- constants (names as in PROTOCOL.md 4.1) -------------------------------------------------
DATA = 0
SYN_STREAM = 1
SYN_REPLY = 2
RST_STREAM = 3
SETTINGS = 4
PING = 6
GOAWAY = 7
HEADERS = 8
WINDOW_UPDATE = 9

FLAG_FIN = 1
FLAG_UNIDIRECTIONAL = 2
FLAG_CLEAR_SETTINGS = 1

RST_PROTOCOL_ERROR = 1
RST_INVALID_STREAM = 2
RST_REFUSED_STREAM = 3
RST_UNSUPPORTED_VERSION = 4
RST_CANCEL = 5
RST_INTERNAL_ERROR = 6
RST_FLOW_CONTROL_ERROR = 7
RST_STREAM_IN_USE = 8
RST_STREAM_ALREADY_CLOSED = 9
RST_INVALID_CREDENTIALS = 10
RST_FRAME_TOO_LARGE = 11

GOAWAY_OK = 0
GOAWAY_PROTOCOL_ERROR = 1
GOAWAY_INTERNAL_ERROR = 2

MAX_DATA_LENGTH = 0xFFFFFF

WS_CONT = 0
WS_TEXT = 1
WS_BINARY = 2
WS_CLOSE = 8
WS_PING = 9
WS_PONG = 10

# SPDY/3 header-compression dictionary: draft 3 section 2.6.10.1, byte-identical to
# moby/spdystream spdy/dictionary.go. 1423 bytes, Adler-32 0xE3C6A7C2 (the zlib DICTID every
# kubectl header block names), SHA-256 51d27341...407f02; tests pin all three.
SPDY_DICTIONARY = (
    b"\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put"
    b"\x00\x00\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eacc"
    b"ept-charset\x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00"
    b"\x00\x0daccept-ranges\x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthori"
    b"zation\x00\x00\x00\x0dcache-control\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent"
    b"-base\x00\x00\x00\x10content-encoding\x00\x00\x00\x10content-language\x00\x00\x00"
    b"\x0econtent-length\x00\x00\x00\x10content-location\x00\x00\x00\x0bcontent-md5\x00"
    b"\x00\x00\x0dcontent-range\x00\x00\x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00"
    b"\x00\x04etag\x00\x00\x00\x06expect\x00\x00\x00\x07expires\x00\x00\x00\x04from\x00"
    b"\x00\x00\x04host\x00\x00\x00\x08if-match\x00\x00\x00\x11if-modified-since\x00\x00"
    b"\x00\x0dif-none-match\x00\x00\x00\x08if-range\x00\x00\x00\x13if-unmodified-since\x00"
    b"\x00\x00\x0dlast-modified\x00\x00\x00\x08location\x00\x00\x00\x0cmax-forwards\x00"
    b"\x00\x00\x06pragma\x00\x00\x00\x12proxy-authenticate\x00\x00\x00\x13proxy-authorizat"
    b"ion\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-after\x00\x00"
    b"\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\x00\x00\x00\x11transfer-enco"
    b"ding\x00\x00\x00\x07upgrade\x00\x00\x00\x0auser-agent\x00\x00\x00\x04vary\x00\x00"
    b"\x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10www-authenticate\x00\x00\x00\x06me"
    b"thod\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\x06200 OK\x00\x00\x00\x07v"
    b"ersion\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\x00"
    b"\x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06origin1001012012022052063003"
    b"02303304305306307402405406407408409410411412413414415416417502504505203 Non-Authorit"
    b"ative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized4"
    b"03 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Una"
    b"vailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu"
    b", Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,"
    b"application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,s"
    b"dchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)

cdef bytes _DICT = SPDY_DICTIONARY
cdef object _EMPTY_VIEW = memoryview(b"")
cdef object _Z_SYNC_FLUSH = _zlib.Z_SYNC_FLUSH
cdef object _ZLIB_ERROR = _zlib.error
cdef object _SpdySessionError = SpdySessionError
cdef object _WebSocketError = WebSocketError

# Never offer less free space than this to a read (BufferedProtocol asks with sizehint -1).
cdef enum:
    _MIN_READ_CAP = 65536
    _MIN_BUFFER = 64
    # A frame with at least this much already received is read exactly up to its end, so the
    # next frame starts a read of its own at the front of the buffer instead of being moved
    # there by compaction (a copy of up to a whole frame per read with 256 KiB frames). Below
    # it, moving the partial frame costs less than the extra read (kubelet's 32 KiB frames).
    _EXACT_MIN = 65536


# --- masking -------------------------------------------------------------------------------

cdef void mask_bytes(unsigned char* data, Py_ssize_t length, const unsigned char* key,
                     Py_ssize_t phase) noexcept nogil:
    # 8 bytes per step with a uint64 XOR; memcpy keeps unaligned access legal and compiles
    # to plain loads/stores. Four independent words per iteration let -O2 keep the pipeline
    # busy (and let the vectoriser pair them) without depending on alignment.
    cdef unsigned char kb[8]
    cdef uint64_t k64, w0, w1, w2, w3
    cdef Py_ssize_t i = 0
    cdef int j
    for j in range(8):
        kb[j] = key[(j + phase) & 3]
    memcpy(&k64, kb, 8)
    while i + 32 <= length:
        memcpy(&w0, data + i, 8)
        memcpy(&w1, data + i + 8, 8)
        memcpy(&w2, data + i + 16, 8)
        memcpy(&w3, data + i + 24, 8)
        w0 ^= k64
        w1 ^= k64
        w2 ^= k64
        w3 ^= k64
        memcpy(data + i, &w0, 8)
        memcpy(data + i + 8, &w1, 8)
        memcpy(data + i + 16, &w2, 8)
        memcpy(data + i + 24, &w3, 8)
        i += 32
    while i + 8 <= length:
        memcpy(&w0, data + i, 8)
        w0 ^= k64
        memcpy(data + i, &w0, 8)
        i += 8
    while i < length:
        # kb repeats the key with period 4, so index by i & 7 keeps the phase.
        data[i] ^= kb[i & 7]
        i += 1


# --- receive buffer ------------------------------------------------------------------------

cdef class _FrameBuffer:
    """Receive buffer: BufferedProtocol entry points plus the view-safety rules.

    Bytes in [0, _start) may be referenced by payload views handed out since the last
    release(); they are never overwritten: with views outstanding, running out of tail space
    switches to a fresh buffer (copying only the undecoded tail [_start, _end)).
    """

    cdef int _init_buffer(self, Py_ssize_t size) except -1:
        if size < _MIN_BUFFER:
            size = _MIN_BUFFER
        self._default_size = size
        self._min_read = size // 4
        if self._min_read > _MIN_READ_CAP:
            self._min_read = _MIN_READ_CAP
        if self._min_read < 1:
            self._min_read = 1
        self._start = 0
        self._end = 0
        self._need = 0
        self._relocate(size)
        return 0

    cdef int _relocate(self, Py_ssize_t size) except -1:
        # Fresh bytearray (not zero-filled); the old one stays alive as long as views need it.
        cdef Py_ssize_t used = self._end - self._start
        cdef object old = self._buf
        cdef object buf = PyByteArray_FromStringAndSize(NULL, size)
        cdef unsigned char* ptr = <unsigned char*>PyByteArray_AS_STRING(buf)
        if used > 0:
            memcpy(ptr, self._ptr + self._start, used)
        self._buf = buf
        self._mv = memoryview(buf)
        self._ptr = ptr
        self._cap = size
        self._start = 0
        self._end = used
        self._exported = False
        old = None
        return 0

    cdef int _reserve(self, Py_ssize_t want) except -1:
        # Make at least `want` bytes of tail space, and room for the whole pending frame.
        cdef Py_ssize_t used = self._end - self._start
        cdef Py_ssize_t total, size
        if self._need > used and self._need - used > want:
            want = self._need - used
        if self._cap - self._end >= want:
            return 0
        total = used + want
        if not self._exported and total <= self._cap and not (
                self._cap > self._default_size and total <= self._default_size):
            # Nobody holds a view: compact in place.
            if used > 0 and self._start > 0:
                memmove(self._ptr, self._ptr + self._start, used)
            self._start = 0
            self._end = used
            return 0
        size = total if total > self._default_size else self._default_size
        self._relocate(size)
        return 0

    cdef int _settle(self) except -1:
        # Hook run before the buffer is touched (SpdyDecoder: stop decoding in place).
        return 0

    cdef void _consumed(self, Py_ssize_t n) noexcept:
        self._start += n
        self._last = n
        self._need = 0
        if self._start == self._end and not self._exported:
            # Drained and nothing handed out: restart at the front for free.
            self._start = 0
            self._end = 0

    def get_buffer(self, Py_ssize_t sizehint=-1):
        """Writable free space to receive into (asyncio.BufferedProtocol.get_buffer).

        Large frames are kept in place: while one is partly received the space offered ends
        where it ends, and between large frames there is room for a whole one, so no frame is
        ever moved by compaction. A size hint never grows the buffer (a pending frame does)."""
        cdef Py_ssize_t want = sizehint if sizehint > self._min_read else self._min_read
        cdef Py_ssize_t used, rest
        self._settle()
        if self._failed:
            # Still give the transport somewhere to write; whatever arrives is dropped.
            self._end = self._start
            self._need = 0
        used = self._end - self._start
        if self._need > used and used >= _EXACT_MIN:
            rest = self._need - used
            self._reserve(rest)
            return self._mv[self._end:self._end + rest]
        if want > self._cap - used and self._cap - used >= self._min_read:
            want = self._cap - used
        if used == 0 and self._last >= _EXACT_MIN and want < self._last:
            # Nothing pending: a fresh buffer if views pin this one's tail (no bytes to copy).
            want = self._last
        self._reserve(want)
        return self._mv[self._end:self._cap]

    def buffer_updated(self, Py_ssize_t nbytes):
        """`nbytes` were written at the start of the last get_buffer() region."""
        if nbytes < 0 or nbytes > self._cap - self._end:
            raise ValueError(f"buffer_updated({nbytes}) outside the buffer handed out")
        self._settle()
        if not self._failed:
            self._end += nbytes

    def feed(self, data):
        """Copy bytes (bytes, bytearray, memoryview, any contiguous buffer) into the buffer."""
        cdef Py_buffer pb
        if self._failed:
            return
        self._settle()
        PyObject_GetBuffer(data, &pb, PyBUF_SIMPLE)
        try:
            if pb.len > 0:
                self._reserve(pb.len)
                memcpy(self._ptr + self._end, pb.buf, pb.len)
                self._end += pb.len
        finally:
            PyBuffer_Release(&pb)

    def release(self):
        """No payload view handed out so far is still referenced: the buffer may be reused."""
        self._settle()
        self._exported = False
        if self._start == self._end:
            self._start = 0
            self._end = 0

    @property
    def buffered(self):
        """Bytes received but not yet returned as frames."""
        return self._end - self._start


# --- SPDY header blocks ----------------------------------------------------------------------

cdef bytes _block_bytes(object value):
    if isinstance(value, str):
        return (<str>value).encode("utf-8", "surrogateescape")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (list, tuple)):
        # Several values of one header travel joined by NUL (PROTOCOL.md 4.2).
        return b"\x00".join([_block_bytes(v) for v in value])
    if isinstance(value, int):
        return str(value).encode("ascii")
    raise TypeError(f"header value must be str or bytes, not {type(value).__name__}")


def encode_header_block(headers):
    """Uncompressed SPDY/3 name/value block (PROTOCOL.md 4.2). Names are lower-cased.

    `headers` is a mapping or an iterable of (name, value) pairs; a list/tuple value is joined
    with NUL. Two names equal after lower-casing raise ValueError.
    """
    cdef list parts = []
    cdef set seen = set()
    cdef bytes name_b, value_b
    cdef unsigned char lenbuf[4]
    cdef Py_ssize_t count = 0
    items = headers.items() if hasattr(headers, "items") else (headers if headers is not None else ())
    for name, value in items:
        if isinstance(name, str):
            name = (<str>name).lower()
            name_b = (<str>name).encode("utf-8", "surrogateescape")
        elif isinstance(name, (bytes, bytearray)):
            name_b = bytes(name).lower()
        else:
            raise TypeError(f"header name must be str or bytes, not {type(name).__name__}")
        if name_b in seen:
            raise ValueError(f"duplicate header name {name!r}")
        seen.add(name_b)
        value_b = _block_bytes(value)
        if len(name_b) > 0xFFFFFF or len(value_b) > 0xFFFFFF:
            raise ValueError("header name or value too long for a SPDY frame")
        store_be32(lenbuf, <uint32_t>len(name_b))
        parts.append(PyBytes_FromStringAndSize(<char*>lenbuf, 4))
        parts.append(name_b)
        store_be32(lenbuf, <uint32_t>len(value_b))
        parts.append(PyBytes_FromStringAndSize(<char*>lenbuf, 4))
        parts.append(value_b)
        count += 1
    if count > 0xFFFFFFFF:
        raise ValueError("too many headers")
    store_be32(lenbuf, <uint32_t>count)
    return PyBytes_FromStringAndSize(<char*>lenbuf, 4) + b"".join(parts)


cdef dict _parse_block(const unsigned char* p, Py_ssize_t n):
    # Decompressed block -> {name: value}. Exactly n bytes must be used: spdystream fails a
    # block with bytes left over ("compressed payload size was incorrect").
    cdef Py_ssize_t pos = 4
    cdef Py_ssize_t nlen, vlen
    cdef uint32_t count, i
    cdef dict headers = {}
    cdef str name, value
    if n < 4:
        raise _SpdySessionError("SPDY header block truncated (no count)")
    count = load_be32(p)
    for i in range(count):
        # Every entry needs at least 8 bytes, so the loop is bounded by n / 8.
        if n - pos < 4:
            raise _SpdySessionError("SPDY header block truncated")
        nlen = load_be32(p + pos)
        pos += 4
        if nlen > n - pos:
            raise _SpdySessionError("SPDY header block truncated (name)")
        name = PyUnicode_DecodeUTF8(<const char*>(p + pos), nlen, "surrogateescape")
        pos += nlen
        if n - pos < 4:
            raise _SpdySessionError("SPDY header block truncated")
        vlen = load_be32(p + pos)
        pos += 4
        if vlen > n - pos:
            raise _SpdySessionError("SPDY header block truncated (value)")
        value = PyUnicode_DecodeUTF8(<const char*>(p + pos), vlen, "surrogateescape")
        pos += vlen
        if name.lower() != name:
            raise _SpdySessionError(f"SPDY header name {name!r} is not lower-case")
        if name in headers:
            raise _SpdySessionError(f"SPDY header {name!r} appears twice")
        headers[name] = value
    if pos != n:
        raise _SpdySessionError("compressed payload size was incorrect (bytes after the headers)")
    return headers


def decode_header_block(block):
    """Parse an uncompressed name/value block; SpdySessionError if malformed (PROTOCOL.md 4.5)."""
    cdef Py_buffer pb
    PyObject_GetBuffer(block, &pb, PyBUF_SIMPLE)
    try:
        return _parse_block(<const unsigned char*>pb.buf, pb.len)
    finally:
        PyBuffer_Release(&pb)


cdef class HeaderCompressor:
    """The outgoing persistent zlib stream of one connection direction (SPDY dictionary).

    Level 9 is what kubectl and kubelet use (byte-identical blocks); any level decodes the same.
    Level 6 gives the same sizes for kubectl-style headers at a third of the CPU (level 9 walks
    hash chains up to 4096 long for every block)."""

    def __init__(self, int level=9):
        if not 1 <= level <= 9:
            raise ValueError("level must be 1..9")
        self._zc = _zlib.compressobj(level, _zlib.DEFLATED, 15, 8, _zlib.Z_DEFAULT_STRATEGY,
                                     zdict=_DICT)

    def compress(self, headers):
        """Compressed header block: deflate continued from the previous block, Z_SYNC_FLUSH."""
        raw = encode_header_block(headers)
        return self._zc.compress(raw) + self._zc.flush(_Z_SYNC_FLUSH)


cdef class HeaderDecompressor:
    """The incoming persistent zlib stream; output per block capped at `max_output` bytes."""

    def __init__(self, Py_ssize_t max_output=1 << 20):
        if max_output < 4:
            raise ValueError("max_output must be at least 4")
        self._zd = _zlib.decompressobj(zdict=_DICT)
        self._max_output = max_output
        self._broken = False

    cdef dict _inflate(self, object block):
        cdef bytes out
        if self._broken:
            raise _SpdySessionError("SPDY header stream already failed")
        # Any failure leaves the shared stream unusable, so mark it broken up front.
        self._broken = True
        try:
            # max_length bounds memory: a bomb stops at max_output + 1 bytes of output.
            out = self._zd.decompress(block, self._max_output + 1)
        except _ZLIB_ERROR as exc:
            raise _SpdySessionError(f"SPDY header block does not inflate: {exc}") from None
        if len(out) > self._max_output or self._zd.unconsumed_tail:
            raise _SpdySessionError(
                f"SPDY header block inflates past {self._max_output} bytes")
        if self._zd.eof:
            # A SPDY peer never finishes its stream; later blocks could not be decoded.
            raise _SpdySessionError("SPDY header zlib stream ended")
        headers = _parse_block(<const unsigned char*>PyBytes_AS_STRING(out), len(out))
        self._broken = False
        return headers

    def decompress(self, block):
        """Decompress and parse one block; SpdySessionError on any fault (then always)."""
        return self._inflate(block)


# --- SPDY frames -----------------------------------------------------------------------------

_TYPE_NAMES = {0: "DATA", 1: "SYN_STREAM", 2: "SYN_REPLY", 3: "RST_STREAM", 4: "SETTINGS",
               6: "PING", 7: "GOAWAY", 8: "HEADERS", 9: "WINDOW_UPDATE"}


@cython.freelist(64)
cdef class SpdyFrame:
    """One decoded SPDY frame (read-only). Fields not used by its type are 0 / None."""

    def __init__(self, int type=0, int flags=0, uint32_t stream_id=0, payload=None,
                 headers=None, uint32_t assoc_id=0, int priority=0, int slot=0,
                 uint32_t status=0, uint32_t ping_id=0, uint32_t last_good_id=0,
                 uint32_t delta=0, settings=None, int version=3):
        self.type = type
        self.flags = flags
        self.stream_id = stream_id
        self.payload = payload
        self.headers = headers
        self.assoc_id = assoc_id
        self.priority = priority
        self.slot = slot
        self.status = status
        self.ping_id = ping_id
        self.last_good_id = last_good_id
        self.delta = delta
        self.settings = settings
        self.version = version

    def __repr__(self):
        name = _TYPE_NAMES.get(self.type, str(self.type))
        if self.type == C_DATA:
            n = len(self.payload) if self.payload is not None else 0
            detail = f"stream_id={self.stream_id}, length={n}"
        elif self.type in (C_SYN_STREAM, C_SYN_REPLY, C_HEADERS):
            detail = f"stream_id={self.stream_id}, headers={self.headers!r}"
        elif self.type == C_RST_STREAM:
            detail = f"stream_id={self.stream_id}, status={self.status}"
        elif self.type == C_PING:
            detail = f"ping_id={self.ping_id}"
        elif self.type == C_GOAWAY:
            detail = f"last_good_id={self.last_good_id}, status={self.status}"
        elif self.type == C_WINDOW_UPDATE:
            detail = f"stream_id={self.stream_id}, delta={self.delta}"
        else:
            detail = f"settings={self.settings!r}"
        return f"<SpdyFrame {name} flags={self.flags} {detail}>"


cdef class SpdyDecoder(_FrameBuffer):
    """Incremental SPDY/3 frame decoder for one connection direction."""

    def __init__(self, Py_ssize_t max_header_block=1 << 20, Py_ssize_t buffer_size=256 * 1024,
                 *, Py_ssize_t max_data_length=C_MAX_DATA_LENGTH):
        if max_header_block < 16:
            raise ValueError("max_header_block too small")
        if max_data_length < 0 or max_data_length > C_MAX_DATA_LENGTH:
            raise ValueError("max_data_length must be within 0..MAX_DATA_LENGTH")
        self._init_buffer(buffer_size)
        self._inflater = HeaderDecompressor(max_header_block)
        self._max_header_block = max_header_block
        self._max_data_length = max_data_length
        self.error = None
        self._failed = False

    cdef object _fail(self, str message, int status=1):
        if self.error is None:
            self.error = _SpdySessionError(message, status)
        self._failed = True
        return None

    def next_frame(self):
        """The next complete frame, or None (need more bytes, or failed: see `.error`)."""
        cdef object frame = None
        if not self._failed:
            try:
                frame = self._next()
            except _SpdySessionError as exc:
                self.error = exc
                self._failed = True
            except Exception as exc:  # never raise into the caller's protocol callback
                self._fail(f"SPDY decoder failure: {exc!r}", 2)
        if frame is None and self._borrowing:
            try:
                self._end_borrow()
            except Exception as exc:
                self._fail(f"SPDY decoder failure: {exc!r}", 2)
        return frame

    @property
    def pending_data_stream(self):
        """Stream id of a DATA frame whose 8-byte header is in but whose payload is not yet
        (0 when none): the session can refuse a frame for a stream that never existed before
        megabytes of it arrive. Read it after next_frame() returned None."""
        cdef const unsigned char* p
        if self._failed or self._end - self._start < 8:
            return 0
        p = self._ptr + self._start
        if p[0] & 0x80:
            return 0
        return load_be32(p) & C_STREAM_ID_MASK

    def feed_borrowed(self, payload):
        """Like feed(), but decode `payload` where it lies when nothing is buffered (no copy).

        For SPDY tunnelled in WebSocket: `payload` is a message's view into the WsDecoder's
        buffer. DATA payloads are then views into that buffer, so the WsDecoder must not be
        released before they are dropped (release this decoder first, then the WsDecoder).
        Drain next_frame() until None before feeding more: only a partial frame left at the
        end of `payload` is then copied into this decoder's own buffer."""
        cdef Py_buffer pb
        cdef object mv
        if self._failed:
            return
        self._settle()
        if self._end != self._start:
            self.feed(payload)  # a partial frame is waiting: append, in order
            return
        mv = memoryview(payload)
        if mv.ndim != 1 or mv.itemsize != 1 or not mv.c_contiguous:
            self.feed(payload)
            return
        if mv.format != "B":
            mv = mv.cast("B")
        PyObject_GetBuffer(mv, &pb, PyBUF_SIMPLE)
        try:
            if pb.len == 0:
                return
            self._own_mv = self._mv
            self._own_ptr = self._ptr
            self._own_cap = self._cap
            self._own_pos = self._start
            self._own_exported = self._exported
            self._mv = mv
            self._ptr = <unsigned char*>pb.buf
            self._cap = pb.len
            self._start = 0
            self._end = pb.len
            self._need = 0
            self._exported = True  # never "restart at the front" of borrowed bytes
            self._borrowing = True
        finally:
            # `mv` (kept in _mv) holds the export: the pointer stays valid.
            PyBuffer_Release(&pb)

    cdef int _settle(self) except -1:
        if self._borrowing:
            self._end_borrow()
        return 0

    cdef int _end_borrow(self) except -1:
        # Back to the own buffer; a partial frame left in the borrowed bytes is copied there
        # (`borrowed` keeps them alive until the copy is done).
        cdef object borrowed = self._mv
        cdef const unsigned char* src = self._ptr + self._start
        cdef Py_ssize_t rest = self._end - self._start
        cdef Py_ssize_t need = self._need
        self._borrowing = False
        self._mv = self._own_mv
        self._ptr = self._own_ptr
        self._cap = self._own_cap
        self._start = self._own_pos
        self._end = self._own_pos
        self._exported = self._own_exported
        self._own_mv = None
        self._need = 0
        if rest > 0 and not self._failed:
            self._need = need  # the pending frame's size, if its header was complete
            self._reserve(rest)
            memcpy(self._ptr + self._end, src, rest)
            self._end += rest
        borrowed = None
        return 0

    cdef object _next(self):
        cdef Py_ssize_t avail = self._end - self._start
        cdef const unsigned char* p
        cdef const unsigned char* b
        cdef uint32_t w0, w1, length, sid, count, i, sflags_id
        cdef int flags, ctype
        cdef Py_ssize_t at
        cdef SpdyFrame frame
        cdef list settings
        if avail < 8:
            return None
        p = self._ptr + self._start
        w0 = load_be32(p)
        w1 = load_be32(p + 4)
        flags = <int>(w1 >> 24)
        length = w1 & 0xFFFFFF

        if not (w0 & 0x80000000u):
            # DATA: the hot path. The payload is a view into the buffer.
            sid = w0 & C_STREAM_ID_MASK
            if sid == 0:
                return self._fail("SPDY DATA frame with stream id 0")
            if length > <uint32_t>self._max_data_length:
                return self._fail(f"SPDY DATA frame of {length} bytes exceeds the limit")
            if avail < 8 + <Py_ssize_t>length:
                self._need = 8 + <Py_ssize_t>length
                return None
            frame = SpdyFrame.__new__(SpdyFrame)
            frame.type = C_DATA
            frame.flags = flags
            frame.stream_id = sid
            frame.version = 0
            if length:
                at = self._start + 8
                frame.payload = self._mv[at:at + length]
                self._exported = True
            else:
                frame.payload = _EMPTY_VIEW
            self._consumed(8 + <Py_ssize_t>length)
            return frame

        ctype = <int>(w0 & 0xFFFF)
        # Check the fixed layouts from the header alone, before buffering any payload: the
        # peer cannot make us hold megabytes of a frame we will reject anyway.
        if ctype == C_SYN_STREAM:
            if length <= 10 or length - 10 > <uint32_t>self._max_header_block:
                return self._fail(f"SPDY SYN_STREAM with bad length {length}")
        elif ctype == C_SYN_REPLY or ctype == C_HEADERS:
            if length <= 4 or length - 4 > <uint32_t>self._max_header_block:
                return self._fail(f"SPDY {_TYPE_NAMES[ctype]} with bad length {length}")
        elif ctype == C_RST_STREAM:
            if length != 8:
                return self._fail(f"SPDY RST_STREAM with length {length}")
        elif ctype == C_SETTINGS:
            if length < 4 or length > <uint32_t>self._max_header_block or (length - 4) % 8:
                return self._fail(f"SPDY SETTINGS with bad length {length}")
        elif ctype == C_PING:
            if flags != 0:
                return self._fail(f"SPDY PING with flags {flags}")
            if length != 4:
                return self._fail(f"SPDY PING with length {length}")
        elif ctype == C_GOAWAY or ctype == C_WINDOW_UPDATE:
            if flags != 0:
                return self._fail(f"SPDY {_TYPE_NAMES[ctype]} with flags {flags}")
            if length != 8:
                return self._fail(f"SPDY {_TYPE_NAMES[ctype]} with length {length}")
        else:
            # NOOP (5), CREDENTIAL (10) and anything unknown kill the session in spdystream.
            return self._fail(f"SPDY unknown control frame type {ctype}")

        if avail < 8 + <Py_ssize_t>length:
            self._need = 8 + <Py_ssize_t>length
            return None

        b = p + 8
        frame = SpdyFrame.__new__(SpdyFrame)
        frame.type = ctype
        frame.flags = flags
        # The version field is not checked, as in spdystream (kubectl always sends 3).
        frame.version = <int>((w0 >> 16) & 0x7FFF)
        at = self._start + 8
        if ctype == C_SYN_STREAM:
            frame.stream_id = load_be32(b) & C_STREAM_ID_MASK
            frame.assoc_id = load_be32(b + 4) & C_STREAM_ID_MASK
            frame.priority = b[8] >> 5
            frame.slot = b[9]
            # Decompress even for a bad stream id: the stream state is shared and ordered.
            frame.headers = self._inflater._inflate(self._mv[at + 10:at + length])
            if frame.stream_id == 0:
                return self._fail("SPDY SYN_STREAM with stream id 0")
        elif ctype == C_SYN_REPLY or ctype == C_HEADERS:
            frame.stream_id = load_be32(b) & C_STREAM_ID_MASK
            frame.headers = self._inflater._inflate(self._mv[at + 4:at + length])
            if frame.stream_id == 0:
                return self._fail(f"SPDY {_TYPE_NAMES[ctype]} with stream id 0")
        elif ctype == C_RST_STREAM:
            frame.stream_id = load_be32(b) & C_STREAM_ID_MASK
            frame.status = load_be32(b + 4)
            if frame.status == 0:
                return self._fail("SPDY RST_STREAM with status 0")
            if frame.stream_id == 0:
                return self._fail("SPDY RST_STREAM with stream id 0")
        elif ctype == C_SETTINGS:
            count = load_be32(b)
            if <uint64_t>count * 8 + 4 != length:
                return self._fail(f"SPDY SETTINGS count {count} does not match length {length}")
            settings = []
            for i in range(count):
                sflags_id = load_be32(b + 4 + 8 * i)
                settings.append((<int>(sflags_id >> 24), <int>(sflags_id & 0xFFFFFF),
                                 load_be32(b + 8 + 8 * i)))
            frame.settings = settings
        elif ctype == C_PING:
            frame.ping_id = load_be32(b)
            if frame.ping_id == 0:
                return self._fail("SPDY PING with id 0")
        elif ctype == C_GOAWAY:
            frame.last_good_id = load_be32(b) & C_STREAM_ID_MASK
            frame.status = load_be32(b + 4)
        else:  # WINDOW_UPDATE
            frame.stream_id = load_be32(b) & C_STREAM_ID_MASK
            frame.delta = load_be32(b + 4) & C_STREAM_ID_MASK
        self._consumed(8 + <Py_ssize_t>length)
        return frame


cdef inline int _check_stream_id(object stream_id, str what) except -1:
    if not 0 < stream_id <= C_STREAM_ID_MASK:
        raise ValueError(f"{what} {stream_id} out of range 1..2**31-1")
    return 0


cdef inline int _check_u8(object value, str what) except -1:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{what} {value} out of range 0..255")
    return 0


cdef inline int _check_u32(object value, str what) except -1:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{what} {value} out of range 0..2**32-1")
    return 0


cdef bytes _control(int ctype, int flags, Py_ssize_t length):
    # Allocates the whole frame; the caller fills bytes 8..8+length.
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 8 + length)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
    store_be32(p, 0x80030000u | <uint32_t>ctype)
    store_be32(p + 4, (<uint32_t>flags << 24) | <uint32_t>length)
    return out


cdef int _data_fields(object stream_id, object flags, object length,
                      uint32_t* w0, uint32_t* w1) except -1:
    # C conversions first (fast for the usual small ints); anything odd falls to the checks.
    cdef long long sid, fl, ln
    try:
        sid = stream_id
        fl = flags
        ln = length
    except OverflowError:
        raise ValueError(f"DATA header field out of range: {stream_id}, {flags}, {length}") from None
    if not 0 < sid <= C_STREAM_ID_MASK:
        raise ValueError(f"stream id {stream_id} out of range 1..2**31-1")
    if not 0 <= fl <= 0xFF:
        raise ValueError(f"flags {flags} out of range 0..255")
    if not 0 <= ln <= C_MAX_DATA_LENGTH:
        raise ValueError(f"DATA length {length} out of range 0..{C_MAX_DATA_LENGTH}")
    w0[0] = <uint32_t>sid
    w1[0] = (<uint32_t>fl << 24) | <uint32_t>ln
    return 0


def data_header(stream_id, flags, length):
    """The 8-byte DATA frame header, for `transport.writelines([header, payload])`."""
    cdef uint32_t w0, w1
    _data_fields(stream_id, flags, length, &w0, &w1)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 8)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
    store_be32(p, w0)
    store_be32(p + 4, w1)
    return out


def pack_data_header(buf, Py_ssize_t offset, stream_id, flags, length):
    """Write the 8-byte DATA header into writable `buf` at `offset` (gap in front of a payload)."""
    cdef Py_buffer pb
    cdef unsigned char* p
    cdef uint32_t w0, w1
    _data_fields(stream_id, flags, length, &w0, &w1)
    PyObject_GetBuffer(buf, &pb, PyBUF_WRITABLE)
    try:
        if offset < 0 or offset > pb.len - 8:
            raise ValueError(f"offset {offset} leaves no room for an 8-byte header in {pb.len} bytes")
        p = <unsigned char*>pb.buf + offset
        store_be32(p, w0)
        store_be32(p + 4, w1)
    finally:
        PyBuffer_Release(&pb)


cdef class SpdyEncoder:
    """Builds byte-exact SPDY/3 frames; owns the outgoing persistent header zlib stream."""

    def __init__(self, int header_level=9):
        self._deflater = HeaderCompressor(header_level)

    def syn_stream(self, stream_id, headers, flags=0, assoc_id=0, priority=0, slot=0):
        """SYN_STREAM; kubectl's own: flags 0, assoc 0, priority 0, slot 0, length 10 + block."""
        _check_stream_id(stream_id, "stream id")
        _check_u8(flags, "flags")
        if not 0 <= assoc_id <= C_STREAM_ID_MASK:
            raise ValueError(f"assoc id {assoc_id} out of range")
        if not 0 <= priority <= 7:
            raise ValueError(f"priority {priority} out of range 0..7")
        _check_u8(slot, "slot")
        block = self._deflater.compress(headers)
        cdef Py_ssize_t n = 10 + len(block)
        if n > C_MAX_DATA_LENGTH:
            raise ValueError("header block too large for one frame")
        cdef bytes out = _control(C_SYN_STREAM, flags, n)
        cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
        store_be32(p + 8, <uint32_t>stream_id)
        store_be32(p + 12, <uint32_t>assoc_id)
        p[16] = <unsigned char>(priority << 5)
        p[17] = <unsigned char>slot
        memcpy(p + 18, PyBytes_AS_STRING(block), len(block))
        return out

    def syn_reply(self, stream_id, headers=None, flags=0):
        """SYN_REPLY (kubelet: flags 0 and an empty header block)."""
        return self._stream_headers(C_SYN_REPLY, stream_id, headers, flags)

    def headers(self, stream_id, headers, flags=0):
        """HEADERS (port-forward never needs it; here for completeness and tests)."""
        return self._stream_headers(C_HEADERS, stream_id, headers, flags)

    def _stream_headers(self, int ctype, stream_id, headers, flags):
        _check_stream_id(stream_id, "stream id")
        _check_u8(flags, "flags")
        block = self._deflater.compress(headers)
        cdef Py_ssize_t n = 4 + len(block)
        if n > C_MAX_DATA_LENGTH:
            raise ValueError("header block too large for one frame")
        cdef bytes out = _control(ctype, flags, n)
        cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
        store_be32(p + 8, <uint32_t>stream_id)
        memcpy(p + 12, PyBytes_AS_STRING(block), len(block))
        return out

    def rst_stream(self, stream_id, status):
        """RST_STREAM(stream_id, status); status 0 is invalid on the wire."""
        _check_stream_id(stream_id, "stream id")
        _check_u32(status, "RST_STREAM status")
        if status == 0:
            raise ValueError("RST_STREAM status 0 is invalid")
        cdef bytes out = _control(C_RST_STREAM, 0, 8)
        cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
        store_be32(p + 8, <uint32_t>stream_id)
        store_be32(p + 12, <uint32_t>status)
        return out

    def settings(self, entries, flags=0):
        """SETTINGS from (flags, id, value) triples (port-forward never sends it)."""
        _check_u8(flags, "flags")
        cdef list items = list(entries)
        cdef Py_ssize_t n = 4 + 8 * len(items)
        if n > C_MAX_DATA_LENGTH:
            raise ValueError("too many settings")
        cdef bytes out = _control(C_SETTINGS, flags, n)
        cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
        store_be32(p + 8, <uint32_t>len(items))
        cdef Py_ssize_t i = 0
        for sflags, sid, value in items:
            _check_u8(sflags, "setting flags")
            if not 0 <= sid <= 0xFFFFFF:
                raise ValueError(f"setting id {sid} out of range")
            _check_u32(value, "setting value")
            store_be32(p + 12 + 8 * i, (<uint32_t>sflags << 24) | <uint32_t>sid)
            store_be32(p + 16 + 8 * i, <uint32_t>value)
            i += 1
        return out

    def ping(self, ping_id):
        """PING(ping_id); id 0 is invalid on the wire."""
        _check_u32(ping_id, "ping id")
        if ping_id == 0:
            raise ValueError("ping id 0 is invalid")
        cdef bytes out = _control(C_PING, 0, 4)
        store_be32(<unsigned char*>PyBytes_AS_STRING(out) + 8, <uint32_t>ping_id)
        return out

    def goaway(self, last_good_id, status=0):
        """GOAWAY(last_good_id, status); kubectl's exit: last-good 0, status 0."""
        if not 0 <= last_good_id <= C_STREAM_ID_MASK:
            raise ValueError(f"last good id {last_good_id} out of range")
        _check_u32(status, "GOAWAY status")
        cdef bytes out = _control(C_GOAWAY, 0, 8)
        cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
        store_be32(p + 8, <uint32_t>last_good_id)
        store_be32(p + 12, <uint32_t>status)
        return out

    def window_update(self, stream_id, delta):
        """WINDOW_UPDATE (spdystream ignores it; never needed for port-forward)."""
        if not 0 <= stream_id <= C_STREAM_ID_MASK:
            raise ValueError(f"stream id {stream_id} out of range")
        if not 0 <= delta <= C_STREAM_ID_MASK:
            raise ValueError(f"window delta {delta} out of range")
        cdef bytes out = _control(C_WINDOW_UPDATE, 0, 8)
        cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
        store_be32(p + 8, <uint32_t>stream_id)
        store_be32(p + 12, <uint32_t>delta)
        return out

    def data(self, stream_id, payload, flags=0):
        """A whole DATA frame in one bytes (one copy of the payload)."""
        cdef Py_buffer pb
        cdef bytes out
        cdef unsigned char* p
        cdef uint32_t w0, w1
        PyObject_GetBuffer(payload, &pb, PyBUF_SIMPLE)
        try:
            _data_fields(stream_id, flags, pb.len, &w0, &w1)
            out = PyBytes_FromStringAndSize(NULL, 8 + pb.len)
            p = <unsigned char*>PyBytes_AS_STRING(out)
            store_be32(p, w0)
            store_be32(p + 4, w1)
            if pb.len:
                memcpy(p + 8, pb.buf, pb.len)
        finally:
            PyBuffer_Release(&pb)
        return out


# --- WebSocket (RFC 6455) --------------------------------------------------------------------

cdef inline bint _valid_close_code(uint32_t code) noexcept:
    # RFC 6455 7.4: defined codes that may appear on the wire, plus the registered/private
    # ranges. 1004-1006 and 1015 are reserved and must never be sent.
    return (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999)


@cython.freelist(64)
cdef class WsFrame:
    """One decoded WebSocket frame; `payload` is unmasked in place in the receive buffer."""

    def __init__(self, int opcode=C_WS_BINARY, bint fin=True, payload=b"",
                 int message_opcode=-1, bint first=True):
        self.opcode = opcode
        self.fin = fin
        self.payload = memoryview(payload)
        self.message_opcode = opcode if message_opcode < 0 else message_opcode
        self.first = first

    def __repr__(self):
        return (f"<WsFrame opcode={self.opcode} fin={self.fin} first={self.first} "
                f"message_opcode={self.message_opcode} length={len(self.payload)}>")


cdef class WsDecoder(_FrameBuffer):
    """Incremental RFC 6455 frame decoder (frames, not reassembled messages)."""

    def __init__(self, bint expect_masked, Py_ssize_t max_message=64 << 20,
                 Py_ssize_t buffer_size=256 * 1024):
        if max_message < 125:
            raise ValueError("max_message must be at least 125")
        self._init_buffer(buffer_size)
        self._expect_masked = expect_masked
        self._max_message = max_message
        self._msg_opcode = -1
        self._msg_len = 0
        self.error = None
        self._failed = False

    cdef object _fail(self, str message, int code=1002):
        if self.error is None:
            self.error = _WebSocketError(message, code)
        self._failed = True
        return None

    def next_frame(self):
        """The next complete frame, or None (need more bytes, or failed: see `.error`)."""
        if self._failed:
            return None
        try:
            return self._next()
        except Exception as exc:  # never raise into the caller's protocol callback
            self._fail(f"WebSocket decoder failure: {exc!r}", 1011)
        return None

    cdef object _next(self):
        cdef Py_ssize_t avail = self._end - self._start
        cdef const unsigned char* p
        cdef unsigned char b0, b1
        cdef int opcode, len7
        cdef bint fin, masked
        cdef uint64_t length
        cdef Py_ssize_t hlen, total, at, prior
        cdef uint32_t code
        cdef WsFrame frame
        if avail < 2:
            return None
        p = self._ptr + self._start
        b0 = p[0]
        b1 = p[1]
        if b0 & 0x70:
            return self._fail("WebSocket frame with RSV bits set (no extension negotiated)")
        opcode = b0 & 0x0F
        fin = (b0 & 0x80) != 0
        masked = (b1 & 0x80) != 0
        if masked != self._expect_masked:
            return self._fail("WebSocket frame masked" if masked else "WebSocket frame not masked")
        len7 = b1 & 0x7F
        if opcode >= 8:
            if opcode > C_WS_PONG:
                return self._fail(f"WebSocket unknown opcode {opcode}")
            if not fin:
                return self._fail("WebSocket control frame fragmented")
            if len7 > 125:
                return self._fail("WebSocket control frame longer than 125 bytes")
        elif opcode > C_WS_BINARY:
            return self._fail(f"WebSocket unknown opcode {opcode}")
        elif opcode == C_WS_CONT:
            if self._msg_opcode < 0:
                return self._fail("WebSocket continuation frame without a message")
        elif self._msg_opcode >= 0:
            return self._fail("WebSocket new message inside a fragmented message")

        if len7 == 126:
            if avail < 4:
                return None
            length = load_be16(p + 2)
            hlen = 4
        elif len7 == 127:
            if avail < 10:
                return None
            length = load_be64(p + 2)
            if length >> 63:
                return self._fail("WebSocket 64-bit length with the top bit set")
            hlen = 10
        else:
            length = <uint64_t>len7
            hlen = 2
        if masked:
            hlen += 4
        if opcode < 8:
            # Checked before buffering: the limit bounds our memory, not just the message.
            prior = self._msg_len if opcode == C_WS_CONT else 0
            if length > <uint64_t>(self._max_message - prior):
                return self._fail(
                    f"WebSocket message exceeds {self._max_message} bytes", 1009)
        total = hlen + <Py_ssize_t>length
        if avail < total:
            self._need = total
            return None

        at = self._start + hlen
        if masked and length:
            mask_bytes(self._ptr + at, <Py_ssize_t>length, p + hlen - 4, 0)
        if opcode == C_WS_CLOSE and length:
            if length == 1:
                return self._fail("WebSocket close payload of 1 byte")
            code = load_be16(self._ptr + at)
            if not _valid_close_code(code):
                return self._fail(f"WebSocket close code {code} is invalid")
            try:
                PyUnicode_DecodeUTF8(<const char*>(self._ptr + at + 2),
                                     <Py_ssize_t>length - 2, "strict")
            except UnicodeDecodeError:
                return self._fail("WebSocket close reason is not UTF-8", 1007)

        frame = WsFrame.__new__(WsFrame)
        frame.opcode = opcode
        frame.fin = fin
        if length:
            frame.payload = self._mv[at:at + <Py_ssize_t>length]
            self._exported = True
        else:
            frame.payload = _EMPTY_VIEW
        if opcode >= 8:
            frame.message_opcode = opcode
            frame.first = True
        elif opcode == C_WS_CONT:
            frame.message_opcode = self._msg_opcode
            frame.first = False
            self._msg_len += <Py_ssize_t>length
        else:
            frame.message_opcode = opcode
            frame.first = True
            self._msg_opcode = opcode
            self._msg_len = <Py_ssize_t>length
        if fin and opcode < 8:
            self._msg_opcode = -1
            self._msg_len = 0
        self._consumed(total)
        return frame


# Masking keys: a xorshift64* generator seeded from os.urandom, reseeded in fork children.
# RFC 6455 wants unpredictable keys to stop cache-poisoning by scripted clients; port-forward
# clients are not scripts in a browser, so a fast PRNG with an OS seed is plenty.
cdef uint64_t _rng_state = 0


def _reseed():
    global _rng_state
    _rng_state = int.from_bytes(_os.urandom(8), "little") | 1


_reseed()
if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(after_in_child=_reseed)


cdef inline uint32_t _next_key() noexcept:
    global _rng_state
    cdef uint64_t x = _rng_state
    x ^= x >> 12
    x ^= x << 25
    x ^= x >> 27
    _rng_state = x
    return <uint32_t>((x * 0x2545F4914F6CDD1Dull) >> 32)


def alloc_buffer(Py_ssize_t size):
    """A writable bytearray of `size` bytes that is NOT zero-filled (bytearray(size) is).

    Large read buffers then commit memory only as reads write into them, so a thousand mostly
    idle connections do not each pin a full buffer, and no memset is paid per allocation.
    Callers must only ever expose bytes they wrote themselves."""
    if size < 0:
        raise ValueError("size must be >= 0")
    return PyByteArray_FromStringAndSize(NULL, size)


def buffer_exported(bytearray buf):
    """True while a buffer view (memoryview, a transport's pending write) of `buf` is alive.

    Reads the bytearray's export count: O(1), no allocation. A bytearray whose bytes are still
    held elsewhere must not be reused for the next read."""
    return (<PyByteArrayObject*>buf).ob_exports > 0


def new_mask_key():
    """A fresh 4-byte masking key (for ws_frame_header(..., mask_key=...))."""
    cdef uint32_t k = _next_key()
    return PyBytes_FromStringAndSize(<char*>&k, 4)


cdef Py_ssize_t _ws_header_into(unsigned char* p, int opcode, uint64_t length, bint fin,
                                const unsigned char* key) noexcept:
    cdef Py_ssize_t n
    p[0] = <unsigned char>((0x80 if fin else 0) | opcode)
    if length <= 125:
        p[1] = <unsigned char>length
        n = 2
    elif length <= 0xFFFF:
        p[1] = 126
        store_be16(p + 2, <uint16_t>length)
        n = 4
    else:
        p[1] = 127
        store_be64(p + 2, length)
        n = 10
    if key != NULL:
        p[1] |= 0x80
        memcpy(p + n, key, 4)
        n += 4
    return n


cdef int _check_ws(object opcode, object length, bint fin, int* op, uint64_t* ln) except -1:
    cdef long long o, n
    try:
        o = opcode
        n = length
    except OverflowError:
        raise ValueError(f"WebSocket opcode/length out of range: {opcode}, {length}") from None
    if not (0 <= o <= 2 or 8 <= o <= 10):
        raise ValueError(f"WebSocket opcode {opcode} is not defined")
    if n < 0:
        raise ValueError(f"WebSocket length {length} out of range")
    if o >= 8 and (n > 125 or not fin):
        raise ValueError("WebSocket control frames carry <= 125 bytes and are never fragmented")
    op[0] = <int>o
    ln[0] = <uint64_t>n
    return 0


def ws_frame_header(opcode, length, fin=True, mask_key=None):
    """Frame header (2-14 bytes); with `mask_key` the caller masks the payload with that key."""
    cdef unsigned char tmp[14]
    cdef const unsigned char* key = NULL
    cdef Py_buffer kb
    cdef int op
    cdef uint64_t ln
    cdef Py_ssize_t n
    _check_ws(opcode, length, fin, &op, &ln)
    if mask_key is None:
        n = _ws_header_into(tmp, op, ln, fin, NULL)
    else:
        PyObject_GetBuffer(mask_key, &kb, PyBUF_SIMPLE)
        try:
            if kb.len != 4:
                raise ValueError("mask_key must be 4 bytes")
            n = _ws_header_into(tmp, op, ln, fin, <const unsigned char*>kb.buf)
        finally:
            PyBuffer_Release(&kb)
    return PyBytes_FromStringAndSize(<char*>tmp, n)


def ws_encode(opcode, payload, fin=True, mask=False):
    """A whole frame in one bytes (one copy); mask=True (client role) uses a random key."""
    cdef Py_buffer pb
    cdef uint32_t k
    cdef unsigned char tmp[14]
    cdef Py_ssize_t n
    cdef bytes out
    cdef unsigned char* p
    cdef int op
    cdef uint64_t ln
    cdef bint masked = mask
    PyObject_GetBuffer(payload, &pb, PyBUF_SIMPLE)
    try:
        _check_ws(opcode, pb.len, fin, &op, &ln)
        if masked:
            k = _next_key()
            n = _ws_header_into(tmp, op, ln, fin, <unsigned char*>&k)
        else:
            n = _ws_header_into(tmp, op, ln, fin, NULL)
        out = PyBytes_FromStringAndSize(NULL, n + pb.len)
        p = <unsigned char*>PyBytes_AS_STRING(out)
        memcpy(p, tmp, n)
        if pb.len:
            memcpy(p + n, pb.buf, pb.len)
            if masked:
                mask_bytes(p + n, pb.len, <unsigned char*>&k, 0)
    finally:
        PyBuffer_Release(&pb)
    return out


def mask_inplace(buf, key, Py_ssize_t offset=0, Py_ssize_t length=-1):
    """XOR buf[offset:offset+length] with the 4-byte key (key phase 0 at `offset`)."""
    cdef Py_buffer pb
    cdef Py_buffer kb
    PyObject_GetBuffer(key, &kb, PyBUF_SIMPLE)
    try:
        if kb.len != 4:
            raise ValueError("mask key must be 4 bytes")
        PyObject_GetBuffer(buf, &pb, PyBUF_WRITABLE)
        try:
            if offset < 0 or offset > pb.len:
                raise ValueError(f"offset {offset} outside a buffer of {pb.len} bytes")
            if length < 0:
                length = pb.len - offset
            elif length > pb.len - offset:
                raise ValueError(f"offset {offset} + length {length} beyond {pb.len} bytes")
            if length:
                mask_bytes(<unsigned char*>pb.buf + offset, length,
                           <const unsigned char*>kb.buf, 0)
        finally:
            PyBuffer_Release(&pb)
    finally:
        PyBuffer_Release(&kb)


def ws_close_payload(code, reason=""):
    """Close frame payload: u16 code + UTF-8 reason (<= 123 bytes)."""
    if not (0 <= code <= 0xFFFF and _valid_close_code(code)):
        raise ValueError(f"close code {code} may not be sent")
    r = reason.encode("utf-8")
    if len(r) > 123:
        raise ValueError("close reason longer than 123 bytes")
    cdef unsigned char tmp[2]
    store_be16(tmp, <uint16_t>code)
    return PyBytes_FromStringAndSize(<char*>tmp, 2) + r


def parse_close_payload(payload):
    """(code, reason) of a close payload; (None, "") when empty. WebSocketError if malformed."""
    cdef Py_buffer pb
    cdef uint16_t code
    PyObject_GetBuffer(payload, &pb, PyBUF_SIMPLE)
    try:
        if pb.len == 0:
            return None, ""
        if pb.len == 1:
            raise _WebSocketError("WebSocket close payload of 1 byte", 1002)
        code = load_be16(<const unsigned char*>pb.buf)
        if not _valid_close_code(code):
            raise _WebSocketError(f"WebSocket close code {code} is invalid", 1002)
        try:
            reason = PyUnicode_DecodeUTF8(<const char*>pb.buf + 2, pb.len - 2, "strict")
        except UnicodeDecodeError:
            raise _WebSocketError("WebSocket close reason is not UTF-8", 1007) from None
        return code, reason
    finally:
        PyBuffer_Release(&pb)


# --- v4.channel.k8s.io / v4.base64.channel.k8s.io (PROTOCOL.md 6.1) ---------------------------

def channel_encode(int channel, payload, bint base64=False):
    """(opcode, message) for one channel write: binary [channel][payload], or text
    chr('0' + channel) + padded base64(payload) for the base64 variant."""
    cdef Py_buffer pb
    cdef bytes out
    cdef unsigned char* p
    if not 0 <= channel <= 255 - (48 if base64 else 0):
        raise ValueError(f"channel {channel} out of range")
    if base64:
        return C_WS_TEXT, bytes((48 + channel,)) + _binascii.b2a_base64(payload, newline=False)
    PyObject_GetBuffer(payload, &pb, PyBUF_SIMPLE)
    try:
        out = PyBytes_FromStringAndSize(NULL, 1 + pb.len)
        p = <unsigned char*>PyBytes_AS_STRING(out)
        p[0] = <unsigned char>channel
        if pb.len:
            memcpy(p + 1, pb.buf, pb.len)
    finally:
        PyBuffer_Release(&pb)
    return C_WS_BINARY, out


def channel_decode(int opcode, message, bint base64=False):
    """(channel, payload) of one channel message; binary payloads are views (no copy).

    WebSocketError: empty message or bad channel char (1002), wrong message type for the
    variant (1003), invalid base64 (1007). Callers wanting kubelet's leniency skip empty
    messages before calling.
    """
    cdef object mv = memoryview(message)
    cdef Py_ssize_t n = mv.nbytes
    cdef int channel
    if mv.ndim != 1 or mv.itemsize != 1:
        mv = mv.cast("B")
    if n == 0:
        raise _WebSocketError("empty channel message", 1002)
    if base64:
        if opcode != C_WS_TEXT:
            raise _WebSocketError("base64 channel protocol expects text messages", 1003)
        channel = mv[0] - 48
        if channel < 0:
            raise _WebSocketError(f"bad channel character {chr(mv[0])!r}", 1002)
        try:
            data = _base64.b64decode(mv[1:], validate=True)
        except (_binascii.Error, ValueError) as exc:
            raise _WebSocketError(f"invalid base64 on channel {channel}: {exc}", 1007) from None
        return channel, data
    if opcode != C_WS_BINARY:
        raise _WebSocketError("channel protocol expects binary messages", 1003)
    return mv[0], mv[1:]
