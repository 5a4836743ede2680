# Part of fastpf/_frames.pyx (included there; not compiled on its own).
# The decoded WebSocket frame record and the incremental RFC 6455 decoder.

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
