# Part of fastpf/_frames.pyx (included there; not compiled on its own).
# The receive buffer both decoders share (BufferedProtocol entry points, view safety),
# plus the bytearray helpers of the relay.

include "exports.pxi"  # bytearray_exported(): shared with fastpf/_pump.pyx


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

    On CPython it reads the bytearray's export count: O(1), no allocation. Elsewhere it is
    buffer_exported_portable(). A bytearray whose bytes are still held elsewhere must not be
    reused for the next read."""
    return bytearray_exported(buf)


def buffer_exported_portable(bytearray buf):
    """buffer_exported() without CPython's private export count: whether `buf` refuses a resize.

    A bytearray with live exports cannot change size (BufferError), so this removes the last
    byte and puts it back (appends and removes one when empty). Contents and length are
    unchanged afterwards; on CPython neither step reallocates, so it stays O(1)."""
    return bytearray_refuses_resize(buf)
