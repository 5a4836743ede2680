# Part of fastpf/_frames.pyx (included there; not compiled on its own).
# WebSocket close payloads (RFC 6455 5.5.1, 7.4).

cdef inline bint _valid_close_code(uint32_t code) noexcept:
    # RFC 6455 7.4: defined codes that may appear on the wire, plus the registered/private
    # ranges. 1004-1006 and 1015 are reserved and must never be sent.
    return (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999)


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
