# cython: language_level=3, cdivision=True, auto_pickle=False, autotestdict=False
"""The per-byte half of the relay (fastpf.transport.relay), compiled.

`RelayCore` is the base of the relay's protocol class. It owns what runs for every chunk:

* local -> remote: the local socket reads (BufferedProtocol) into a buffer with `room` bytes
  free in front, and the pipe frames it in place (`send_inplace`): one write, no copy. A buffer
  is reused only once nothing exports it any more (the upgraded transport may hold a view
  until sent); a few spares avoid a fresh allocation per read.
* remote -> local: `data_received(view)` (the Python sink path: the view is written as it is and
  the session keeps its buffer until `drained()`), and `deliver(ptr, n)` for a compiled
  dispatcher: the bytes go straight to the socket with send(2) while the transport has nothing
  queued (no Python object, no copy), and only a remainder the kernel did not take is copied
  into the transport's queue, whose high-water mark then pauses the session.

Everything that is not per chunk (EOF, linger, budgets, resets, errors) stays in Python, in the
subclass: it calls back `_local_error(exc)` and `_budget_updated(n)`.
"""

from cpython.bytearray cimport PyByteArray_FromStringAndSize
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.errno cimport EAGAIN, EINTR, errno

import os as _os


include "frames/exports.pxi"  # bytearray_exported(), shared with the codecs

cdef extern from "<sys/types.h>" nogil:
    ctypedef long ssize_t

cdef extern from "<errno.h>" nogil:
    int EWOULDBLOCK

cdef extern from "<sys/socket.h>" nogil:
    ssize_t c_send "send" (int fd, const void* buf, size_t n, int flags)
    int MSG_DONTWAIT
    int MSG_NOSIGNAL


cdef int _SPARES = 3  # per relay: reusable read buffers besides the current one
SPARE_BUFFERS = _SPARES
cdef int _EINTR_RETRIES = 16


cdef inline bint _exported(object buf) except -1:
    return bytearray_exported(<bytearray>buf)


cdef class RelayCore:
    def __cinit__(self):
        self._fd = -1
        self._spares = []
        self.buf = None

    def init_pump(self, pipe, Py_ssize_t read_size):
        """Bind to `pipe` (SpdyStream / PortChannel); reads are at most `read_size` bytes."""
        self.pipe = pipe
        self._send_inplace = pipe.send_inplace
        self.room = pipe.header_room
        self.read_size = max(1024, min(read_size, pipe.max_payload))

    def attach_transport(self, transport):
        """The local socket's transport; its descriptor enables deliver()'s direct send."""
        self.transport = transport
        fd = -1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                fd = sock.fileno()
            except (AttributeError, OSError, ValueError):
                fd = -1
        self._fd = fd

    # -- local -> remote ------------------------------------------------------------------------
    cdef object _take_buffer(self):
        """The current buffer is still exported (or there is none yet): switch to a spare
        nobody holds, else a fresh one. Bounded: local reads pause while the upgraded
        transport is over its high-water mark."""
        cdef list spares = self._spares
        cdef Py_ssize_t i
        old = self.buf
        buf = None
        for i in range(len(spares)):
            if not _exported(spares[i]):
                buf = spares.pop(i)
                break
        if buf is None:
            # Not zero-filled (pages commit as reads fill them); only bytes a read wrote
            # are ever framed.
            buf = PyByteArray_FromStringAndSize(NULL, self.room + self.read_size)
        if old is not None and len(spares) < _SPARES:
            spares.append(old)  # freed by the transport later; then reusable
        self.buf = buf
        return buf

    def get_buffer(self, Py_ssize_t sizehint):
        buf = self.buf
        if self.held and buf is not None:  # gathering a budgeted frame: nobody holds buf
            return memoryview(buf)[self.room + self.held:]
        if buf is None or _exported(buf):
            buf = self._take_buffer()
        # uvloop releases this view before buffer_updated(), so it blocks no reuse.
        return memoryview(buf)[self.room:]

    def buffer_updated(self, Py_ssize_t nbytes):
        if self.local_done or self.buf is None:
            return
        if self.remote_done and self.budgeted:
            self._budget_updated(nbytes)
            return
        self._send(nbytes)

    cdef bint _send(self, Py_ssize_t n) except -1:
        try:
            self._send_inplace(self.buf, self.room, n)
        except Exception as exc:  # the session went away under us
            self._local_error(exc)
            return False
        self.sent += n
        return True

    def send_buffered(self, Py_ssize_t n):
        """buf[room:room+n] as one frame (the subclass's gathered tail); False: session gone."""
        return self._send(n)

    # -- remote -> local ------------------------------------------------------------------------
    def data_received(self, view):
        t = self.transport
        if self.closed or self.remote_done or t.is_closing():
            return  # local side gone: dropped (the stream is being reset)
        self.received += len(view)
        try:
            t.write(view)
        except (OSError, RuntimeError) as exc:  # never into the session's read callback
            self._local_error(exc)

    cdef int deliver(self, const char* data, Py_ssize_t n) except -1:
        cdef Py_ssize_t done = 0
        cdef ssize_t r
        cdef int tries = 0
        if self.closed or self.remote_done or n <= 0:
            return 0
        t = self.transport
        if t is None or t.is_closing():
            return 0
        self.received += n
        if self._fd >= 0 and t.get_write_buffer_size() == 0:
            # Nothing queued: the bytes can go now, in order, straight from the session's
            # buffer (what uvloop itself would try first, minus the Python objects). One try:
            # what the kernel does not take now waits in the transport's queue.
            r = c_send(self._fd, data, <size_t>n, MSG_DONTWAIT | MSG_NOSIGNAL)
            while r < 0 and errno == EINTR and tries < _EINTR_RETRIES:
                tries += 1
                r = c_send(self._fd, data, <size_t>n, MSG_DONTWAIT | MSG_NOSIGNAL)
            if r >= 0:
                done = r
            elif errno != EAGAIN and errno != EWOULDBLOCK:
                code = errno
                self._local_error(OSError(code, _os.strerror(code)))
                return 0
        if done < n:
            try:
                t.write(PyBytes_FromStringAndSize(data + done, n - done))
            except (OSError, RuntimeError) as exc:
                self._local_error(exc)
        return 0

    @property
    def spare_count(self):
        """Read buffers kept for reuse (bounded by SPARE_BUFFERS)."""
        return len(self._spares)

    def drained(self):
        """True when no view passed to data_received is still queued in the transport."""
        t = self.transport
        return t is None or self.closed or t.get_write_buffer_size() == 0

    def deliver_bytes(self, data):
        """deliver() for tests and Python callers: `data` is copied only if the socket is full."""
        cdef const unsigned char[:] view = data
        if view.shape[0]:
            self.deliver(<const char*>&view[0], view.shape[0])


cdef class SinkTable:
    """Stream id -> RelayCore for a compiled DATA dispatcher. The session adds a stream when its
    relay attaches and discards it when the stream may no longer receive (FIN, RST, gone), so a
    frame for a stream not in the table always takes the session's own path."""

    def __cinit__(self):
        self._cores = {}
        self._last_id = 0
        self._last = None

    def add(self, unsigned int stream_id, RelayCore core not None):
        self._cores[stream_id] = core
        self._last_id = 0
        self._last = None

    def discard(self, unsigned int stream_id):
        self._cores.pop(stream_id, None)
        if self._last_id == stream_id:
            self._last_id = 0
            self._last = None

    def clear(self):
        self._cores.clear()
        self._last_id = 0
        self._last = None

    def __len__(self):
        return len(self._cores)

    def __contains__(self, stream_id):
        return stream_id in self._cores

    cdef RelayCore lookup(self, unsigned int stream_id):
        if stream_id == self._last_id and self._last is not None:
            return self._last
        core = self._cores.get(stream_id)
        if core is None:
            return None
        self._last_id = stream_id
        self._last = <RelayCore>core
        return self._last
