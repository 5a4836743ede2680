# Part of fastpf/_frames.pyx (included there; not compiled on its own).
# RFC 6455 frame headers and whole frames.

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
