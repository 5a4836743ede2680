# Part of fastpf/_frames.pyx (included there; not compiled on its own).
# v4.channel.k8s.io / v4.base64.channel.k8s.io messages (PROTOCOL.md 6.1).

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
