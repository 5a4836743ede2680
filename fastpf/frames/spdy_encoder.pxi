# Part of fastpf/_frames.pyx (included there; not compiled on its own).
# SPDY/3 frame builders: DATA headers and the control frames.

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
