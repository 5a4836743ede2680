# Part of fastpf/_frames.pyx (included there; not compiled on its own).
# SPDY/3 name/value header blocks and the per-direction zlib streams (PROTOCOL.md 4.2).

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
