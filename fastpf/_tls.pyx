# cython: language_level=3, auto_pickle=False, autotestdict=False
"""TLS records in and out in C loops, on the libssl that Python's own ssl module loaded.

fastpf.transport.tls runs a client connection over an ssl.SSLSocket instead of the event loop's
memory-BIO TLS. These are its per-byte parts:

* `read_into`: OpenSSL reads the socket itself (socket BIO, read-ahead on: one recv(2) brings
  several records) and decrypts record after record straight into the session's receive
  buffer, until it is full or the socket has nothing more. One call per buffer.
* `attach_writer` gives the SSL object our write BIO: records go into one growing ciphertext
  buffer (no zero-fill, unlike OpenSSL's memory BIO), and `flush` sends it with as few
  send(2) calls as the kernel allows. `encrypt` writes a whole buffer of plaintext, record
  by record, in one call. A send per record would cost the kernel twice as much per byte.

No OpenSSL header or library is needed to build this: the functions are bound at run time
(`bind`) from addresses that fastpf.transport.tls looks up in the loaded `_ssl` module, so they
are exactly the functions that own the SSL objects. Every SSL call clears the thread's error
queue first, as SSL_get_error requires; errors other than "would block" are not interpreted
here: the caller asks Python's ssl module to raise them.
"""

from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport uintptr_t
from libc.stdlib cimport calloc, free, realloc
from libc.string cimport memcpy, memmove

import os as _os

cdef extern from "<sys/types.h>" nogil:
    ctypedef long ssize_t

cdef extern from "<errno.h>" nogil:
    int EWOULDBLOCK

cdef extern from "<sys/socket.h>" nogil:
    ssize_t c_send "send" (int fd, const void* buf, size_t n, int flags)
    int MSG_DONTWAIT
    int MSG_NOSIGNAL

# The SSL_get_error codes the caller acts on (OpenSSL's values, stable since 0.9); any other
# code goes to Python's ssl module to be raised.
SSL_ERROR_NONE = 0
SSL_ERROR_WANT_READ = 2

# the functions bind() needs, by their OpenSSL names
FUNCTIONS = (
    "SSL_read_ex", "SSL_write_ex", "SSL_get_error", "ERR_clear_error", "SSL_get_wbio",
    "SSL_set0_wbio", "BIO_get_new_index", "BIO_meth_new", "BIO_meth_set_write_ex",
    "BIO_meth_set_ctrl", "BIO_meth_set_create", "BIO_meth_set_destroy", "BIO_new",
    "BIO_set_data", "BIO_get_data", "BIO_set_init",
)

cdef ssl_read_ex_fn _read_ex = NULL
cdef ssl_write_ex_fn _write_ex = NULL
cdef ssl_get_error_fn _get_error = NULL
cdef err_clear_error_fn _clear_error = NULL
cdef ssl_get_wbio_fn _get_wbio = NULL
cdef ssl_set0_wbio_fn _set0_wbio = NULL
cdef bio_new_fn _bio_new = NULL
cdef bio_set_data_fn _bio_set_data = NULL
cdef bio_get_data_fn _bio_get_data = NULL
cdef bio_set_init_fn _bio_set_init = NULL
cdef void* _method = NULL  # our BIO_METHOD, made once

cdef int _BIO_TYPE_SOURCE_SINK = 0x0400
cdef int _BIO_CTRL_PENDING = 10
cdef int _BIO_CTRL_FLUSH = 11
cdef int _BIO_CTRL_WPENDING = 13
cdef size_t _KEEP = 1 << 20  # an emptied buffer larger than this is given back
cdef int _EINTR_RETRIES = 16


# -- the write BIO (called by OpenSSL, without the GIL held or needed) -------------------------
cdef int _out_write(void* bio, const char* data, size_t n, size_t* written) noexcept nogil:
    cdef OutBuf* ob = <OutBuf*>_bio_get_data(bio)
    cdef size_t need, cap
    cdef char* grown
    written[0] = 0
    if ob == NULL or ob.failed:
        return 0
    if ob.cap - ob.end < n:
        if ob.start:  # move the unsent tail to the front first
            memmove(ob.data, ob.data + ob.start, ob.end - ob.start)
            ob.end -= ob.start
            ob.start = 0
        need = ob.end + n
        if need > ob.cap:
            cap = ob.cap * 2 if ob.cap else 64 * 1024
            while cap < need:
                cap *= 2
            grown = <char*>realloc(ob.data, cap)
            if grown == NULL:
                ob.failed = 1
                return 0
            ob.data = grown
            ob.cap = cap
    memcpy(ob.data + ob.end, data, n)
    ob.end += n
    written[0] = n
    return 1


cdef long _out_ctrl(void* bio, int cmd, long num, void* ptr) noexcept nogil:
    cdef OutBuf* ob = <OutBuf*>_bio_get_data(bio)
    if cmd == _BIO_CTRL_FLUSH:
        return 1  # the caller flushes (flush()) once the SSL call returns
    if cmd == _BIO_CTRL_WPENDING or cmd == _BIO_CTRL_PENDING:
        return <long>(ob.end - ob.start) if ob != NULL else 0
    return 0


cdef int _out_create(void* bio) noexcept nogil:
    cdef OutBuf* ob = <OutBuf*>calloc(1, sizeof(OutBuf))
    if ob == NULL:
        return 0
    _bio_set_data(bio, ob)
    _bio_set_init(bio, 1)
    return 1


cdef int _out_destroy(void* bio) noexcept nogil:
    cdef OutBuf* ob = <OutBuf*>_bio_get_data(bio)
    if ob != NULL:
        free(ob.data)
        free(ob)
        _bio_set_data(bio, NULL)
    return 1


def bind(dict addresses not None):
    """Bind the OpenSSL functions named in FUNCTIONS, given by address, and make the write
    BIO's method. Raises ValueError if one is missing."""
    global _read_ex, _write_ex, _get_error, _clear_error, _get_wbio, _set0_wbio
    global _bio_new, _bio_set_data, _bio_get_data, _bio_set_init, _method
    cdef uintptr_t a
    for name in FUNCTIONS:
        a = addresses.get(name, 0)
        if a == 0:
            raise ValueError(f"OpenSSL function {name} not found")
    if _method != NULL:
        return  # bound before: the method stays (OpenSSL keeps pointers to it)
    _read_ex = <ssl_read_ex_fn><void*><uintptr_t>addresses["SSL_read_ex"]
    _write_ex = <ssl_write_ex_fn><void*><uintptr_t>addresses["SSL_write_ex"]
    _get_error = <ssl_get_error_fn><void*><uintptr_t>addresses["SSL_get_error"]
    _clear_error = <err_clear_error_fn><void*><uintptr_t>addresses["ERR_clear_error"]
    _get_wbio = <ssl_get_wbio_fn><void*><uintptr_t>addresses["SSL_get_wbio"]
    _set0_wbio = <ssl_set0_wbio_fn><void*><uintptr_t>addresses["SSL_set0_wbio"]
    _bio_new = <bio_new_fn><void*><uintptr_t>addresses["BIO_new"]
    _bio_set_data = <bio_set_data_fn><void*><uintptr_t>addresses["BIO_set_data"]
    _bio_get_data = <bio_get_data_fn><void*><uintptr_t>addresses["BIO_get_data"]
    _bio_set_init = <bio_set_init_fn><void*><uintptr_t>addresses["BIO_set_init"]
    cdef bio_get_new_index_fn new_index = <bio_get_new_index_fn><void*><uintptr_t>addresses["BIO_get_new_index"]
    cdef bio_meth_new_fn meth_new = <bio_meth_new_fn><void*><uintptr_t>addresses["BIO_meth_new"]
    cdef bio_meth_set_write_ex_fn set_write = <bio_meth_set_write_ex_fn><void*><uintptr_t>addresses["BIO_meth_set_write_ex"]
    cdef bio_meth_set_ctrl_fn set_ctrl = <bio_meth_set_ctrl_fn><void*><uintptr_t>addresses["BIO_meth_set_ctrl"]
    cdef bio_meth_set_life_fn set_create = <bio_meth_set_life_fn><void*><uintptr_t>addresses["BIO_meth_set_create"]
    cdef bio_meth_set_life_fn set_destroy = <bio_meth_set_life_fn><void*><uintptr_t>addresses["BIO_meth_set_destroy"]
    cdef int index = new_index()
    if index < 0:
        raise ValueError("no BIO type index left")
    cdef void* method = meth_new(index | _BIO_TYPE_SOURCE_SINK, b"fastpf ciphertext")
    if method == NULL:
        raise ValueError("BIO_meth_new failed")
    if not (set_write(method, _out_write) and set_ctrl(method, _out_ctrl)
            and set_create(method, _out_create) and set_destroy(method, _out_destroy)):
        raise ValueError("BIO_meth_set_* failed")
    _method = method


def bound():
    """True once bind() succeeded."""
    return _method != NULL


cdef inline void* _checked(uintptr_t ssl) except NULL:
    if _method == NULL:
        raise RuntimeError("fastpf._tls is not bound to OpenSSL")
    if ssl == 0:
        raise ValueError("no SSL object (the connection is closed)")
    return <void*>ssl


cdef OutBuf* _out(void* s) except NULL:
    cdef void* bio = _get_wbio(s)
    cdef OutBuf* ob = <OutBuf*>_bio_get_data(bio) if bio != NULL else NULL
    if ob == NULL:
        raise ValueError("the SSL object has no fastpf write BIO (attach_writer)")
    return ob


def attach_writer(uintptr_t ssl):
    """Give the SSL object our write BIO (after the handshake, which used the socket's)."""
    cdef void* s = _checked(ssl)
    cdef void* bio = _bio_new(_method)
    if bio == NULL or _bio_get_data(bio) == NULL:
        raise MemoryError("BIO_new failed")
    _set0_wbio(s, bio)  # the SSL object owns it now (and frees the socket BIO's second ref)


def read_into(uintptr_t ssl, unsigned char[::1] buf not None):
    """Decrypt into `buf` until it is full or SSL_read_ex fails. Returns (bytes read, status):
    status 0 when `buf` is full (more may be waiting), else the SSL_get_error code of the call
    that stopped the loop (SSL_ERROR_WANT_READ: the socket has nothing more now)."""
    cdef void* s = _checked(ssl)
    cdef size_t size = <size_t>buf.shape[0]
    cdef size_t got = 0
    cdef size_t n = 0
    cdef int ret
    cdef int status = 0
    if size == 0:
        return 0, 0
    cdef unsigned char* p = &buf[0]
    _clear_error()
    while got < size:
        n = 0
        ret = _read_ex(s, p + got, size - got, &n)
        if ret != 1:
            status = _get_error(s, ret)
            break
        got += n
    return got, status


def encrypt(uintptr_t ssl, const unsigned char[::1] data not None):
    """Encrypt all of `data` into the write BIO (flush() sends it). Returns 0, or the
    SSL_get_error code of a failure (the caller ends the connection)."""
    cdef void* s = _checked(ssl)
    cdef size_t size = <size_t>data.shape[0]
    cdef size_t done = 0
    cdef size_t n = 0
    cdef int ret
    if size == 0:
        return 0
    cdef OutBuf* ob = _out(s)
    cdef const unsigned char* p = &data[0]
    _clear_error()
    while done < size:
        n = 0
        ret = _write_ex(s, p + done, size - done, &n)
        if ret != 1:
            if ob.failed:
                raise MemoryError("TLS output buffer")
            return _get_error(s, ret)
        done += n
    return 0


def pending(uintptr_t ssl):
    """Ciphertext bytes waiting to be sent."""
    cdef OutBuf* ob = _out(_checked(ssl))
    return ob.end - ob.start


def flush(uintptr_t ssl, int fd):
    """send(2) waiting ciphertext to `fd` until none is left or the socket is full. Returns
    the bytes still waiting; raises OSError for a socket error."""
    cdef OutBuf* ob = _out(_checked(ssl))
    cdef ssize_t r
    cdef int tries = 0
    cdef int code
    while ob.end > ob.start:
        r = c_send(fd, ob.data + ob.start, ob.end - ob.start, MSG_DONTWAIT | MSG_NOSIGNAL)
        if r < 0:
            code = errno
            if code == EINTR and tries < _EINTR_RETRIES:
                tries += 1
                continue
            if code == EAGAIN or code == EWOULDBLOCK:
                break
            raise OSError(code, _os.strerror(code))
        ob.start += <size_t>r
    if ob.start == ob.end:
        ob.start = ob.end = 0
        if ob.cap > _KEEP:  # an idle connection keeps no large buffer
            free(ob.data)
            ob.data = NULL
            ob.cap = 0
    return ob.end - ob.start
