# cython: language_level=3
# The compiled relay pump's C-level contract: the per-byte half of fastpf.transport.relay.
# A compiled dispatcher (the SPDY / channel DATA path) may cimport RelayCore and hand it payload
# bytes with deliver() without creating a Python object per frame.

cdef class RelayCore:
    # the pipe (SpdyStream / PortChannel) and its bound send_inplace, cached
    cdef public object pipe
    cdef object _send_inplace
    # the local socket's transport and its descriptor (-1: none, or not a socket)
    cdef public object transport
    cdef int _fd
    # local -> remote read buffers: the current one (None until the first read) and spares
    cdef public object buf
    cdef list _spares
    cdef public Py_ssize_t room
    cdef public Py_ssize_t read_size
    cdef public Py_ssize_t held
    # byte counters, both directions
    cdef public long long sent
    cdef public long long received
    # direction state (see relay.py)
    cdef public bint local_done
    cdef public bint remote_done
    cdef public bint closed
    cdef public bint budgeted

    cdef object _take_buffer(self)
    cdef bint _send(self, Py_ssize_t n) except -1
    # Payload bytes for the local socket. Returns 0, or -1 with a Python exception set only for
    # a bug (socket errors end the relay through its error path, never raise into the caller).
    cdef int deliver(self, const char* data, Py_ssize_t n) except -1


cdef class SinkTable:
    # stream id -> RelayCore for the streams whose DATA a compiled dispatcher may deliver (the
    # session keeps it: a stream is in it only while it may still receive)
    cdef dict _cores
    cdef unsigned int _last_id    # one-entry cache: a run of frames of one stream costs no
    cdef RelayCore _last          # lookup and no Python int
    cdef RelayCore lookup(self, unsigned int stream_id)
