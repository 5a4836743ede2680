# Part of fastpf/_frames.pyx (included there; not compiled on its own).
# Incremental SPDY/3 decoder (PROTOCOL.md 4.1, 4.5).

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
