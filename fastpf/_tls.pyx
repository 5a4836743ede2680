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

No OpenSSL header or library is needed to build this: `load` binds the functions at run time
from the libssl that the already loaded `_ssl` module is linked to (dlopen of that module
with RTLD_NOLOAD, then dlsym), so they are exactly the functions that own the SSL objects.
`ssl_of` / `ctx_of` read the SSL* / SSL_CTX* out of CPython's `_ssl` objects, checking their
type and size first; the caller proves the result with SSL_get_fd / SSL_get_SSL_CTX.
Every SSL call clears the thread's error queue first, as SSL_get_error requires; errors other
than "would block" are not interpreted here: the caller asks Python's ssl module to raise them.
"""

from cpython.object cimport PyObject, PyTypeObject
from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport uintptr_t
from libc.stdlib cimport calloc, free, realloc
from libc.string cimport memcpy, memmove

import os as _os

cdef extern from "<dlfcn.h>" nogil:
    void* dlopen(const char* path, int flags)
    void* dlsym(void* handle, const char* name)
    int dlclose(void* handle)
    char* dlerror()
    int RTLD_NOW
    int RTLD_NOLOAD

cdef extern from "Python.h":
    PyTypeObject* Py_TYPE(object o)

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

# the functions load() binds, by their OpenSSL names (all required)
FUNCTIONS = (
    "SSL_read_ex", "SSL_write_ex", "SSL_get_error", "ERR_clear_error", "SSL_get_wbio",
    "SSL_set0_wbio", "BIO_get_new_index", "BIO_meth_new", "BIO_meth_set_write_ex",
    "BIO_meth_set_ctrl", "BIO_meth_set_create", "BIO_meth_set_destroy", "BIO_new",
    "BIO_set_data", "BIO_get_data", "BIO_set_init", "SSL_get_fd", "SSL_get_SSL_CTX",
    "SSL_ctrl", "SSL_set_default_read_buffer_len", "SSL_set_options", "SSL_shutdown",
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
cdef ssl_get_fd_fn _get_fd = NULL
cdef ssl_get_ctx_fn _get_ctx = NULL
cdef ssl_ctrl_fn _ctrl = NULL
cdef ssl_set_read_len_fn _set_read_len = NULL
cdef ssl_set_options_fn _set_options = NULL
cdef ssl_shutdown_fn _shutdown = NULL
cdef ctx_set_suites_fn _set_suites = NULL  # optional (OpenSSL 1.1.1+; absent in LibreSSL)
cdef void* _method = NULL  # our BIO_METHOD, made once
# the `_ssl` types whose objects ssl_of / ctx_of read (set by load)
cdef object _SSLSocketType = None
cdef object _SSLContextType = None

cdef int _BIO_TYPE_SOURCE_SINK = 0x0400
cdef int _BIO_CTRL_PENDING = 10
cdef int _BIO_CTRL_FLUSH = 11
cdef int _BIO_CTRL_WPENDING = 13
cdef size_t _KEEP = 1 << 20  # an emptied buffer larger than this is given back
# First size: a connection that only ever writes small messages (a ws-channel client holds one
# TLS connection per local connection) keeps one page, not 64 KiB of heap per connection.
cdef size_t _FIRST = 4 * 1024
cdef int _EINTR_RETRIES = 16
cdef int _SSL_CTRL_SET_READ_AHEAD = 41
cdef unsigned long long _SSL_OP_NO_RENEGOTIATION = 0x40000000


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
            cap = ob.cap * 2 if ob.cap else _FIRST
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


cdef void* _symbol(void* lib, str name) except NULL:
    cdef bytes cname = name.encode("ascii")
    cdef void* f = dlsym(lib, cname)
    if f == NULL:
        raise OSError(f"OpenSSL function {name} not found")
    return f


def load(str path=None):
    """Bind the OpenSSL functions (FUNCTIONS) from the shared object at `path`, which must be
    loaded already (default: Python's `_ssl` extension; its libssl is searched too), and make
    the write BIO's method. Raises OSError if that object or a function is missing, or if this
    is not CPython (whose `_ssl` object layout ssl_of / ctx_of read). Idempotent."""
    global _read_ex, _write_ex, _get_error, _clear_error, _get_wbio, _set0_wbio
    global _bio_new, _bio_set_data, _bio_get_data, _bio_set_init, _method
    global _get_fd, _get_ctx, _ctrl, _set_read_len, _set_options, _set_suites, _shutdown
    global _SSLSocketType, _SSLContextType
    import _ssl
    import sys

    if sys.implementation.name != "cpython":
        raise OSError("the _ssl object layout is CPython's")
    if path is None:
        path = getattr(_ssl, "__file__", None)
        if path is None:
            raise OSError("_ssl is built into this interpreter")
    cdef bio_get_new_index_fn new_index
    cdef bio_meth_new_fn meth_new
    cdef bio_meth_set_write_ex_fn set_write
    cdef bio_meth_set_ctrl_fn set_ctrl
    cdef bio_meth_set_life_fn set_create, set_destroy
    cdef bytes cpath = _os.fsencode(path)
    cdef void* lib = dlopen(cpath, RTLD_NOW | RTLD_NOLOAD)
    if lib == NULL:
        raise OSError(f"{path} is not a loaded shared object")
    try:
        for name in FUNCTIONS:
            _symbol(lib, name)  # all or nothing: nothing is bound unless every one is there
        if _method != NULL:
            return  # loaded before: the method stays (OpenSSL keeps pointers to it)
        _read_ex = <ssl_read_ex_fn>_symbol(lib, "SSL_read_ex")
        _write_ex = <ssl_write_ex_fn>_symbol(lib, "SSL_write_ex")
        _get_error = <ssl_get_error_fn>_symbol(lib, "SSL_get_error")
        _clear_error = <err_clear_error_fn>_symbol(lib, "ERR_clear_error")
        _get_wbio = <ssl_get_wbio_fn>_symbol(lib, "SSL_get_wbio")
        _set0_wbio = <ssl_set0_wbio_fn>_symbol(lib, "SSL_set0_wbio")
        _bio_new = <bio_new_fn>_symbol(lib, "BIO_new")
        _bio_set_data = <bio_set_data_fn>_symbol(lib, "BIO_set_data")
        _bio_get_data = <bio_get_data_fn>_symbol(lib, "BIO_get_data")
        _bio_set_init = <bio_set_init_fn>_symbol(lib, "BIO_set_init")
        _get_fd = <ssl_get_fd_fn>_symbol(lib, "SSL_get_fd")
        _get_ctx = <ssl_get_ctx_fn>_symbol(lib, "SSL_get_SSL_CTX")
        _ctrl = <ssl_ctrl_fn>_symbol(lib, "SSL_ctrl")
        _set_read_len = <ssl_set_read_len_fn>_symbol(lib, "SSL_set_default_read_buffer_len")
        _set_options = <ssl_set_options_fn>_symbol(lib, "SSL_set_options")
        _shutdown = <ssl_shutdown_fn>_symbol(lib, "SSL_shutdown")
        _set_suites = <ctx_set_suites_fn>dlsym(lib, b"SSL_CTX_set_ciphersuites")
        new_index = <bio_get_new_index_fn>_symbol(lib, "BIO_get_new_index")
        meth_new = <bio_meth_new_fn>_symbol(lib, "BIO_meth_new")
        set_write = <bio_meth_set_write_ex_fn>_symbol(lib, "BIO_meth_set_write_ex")
        set_ctrl = <bio_meth_set_ctrl_fn>_symbol(lib, "BIO_meth_set_ctrl")
        set_create = <bio_meth_set_life_fn>_symbol(lib, "BIO_meth_set_create")
        set_destroy = <bio_meth_set_life_fn>_symbol(lib, "BIO_meth_set_destroy")
    finally:
        dlclose(lib)  # drops only our reference: `_ssl` keeps the object loaded
    cdef int index = new_index()
    if index < 0:
        raise OSError("no BIO type index left")
    cdef void* method = meth_new(index | _BIO_TYPE_SOURCE_SINK, b"fastpf ciphertext")
    if method == NULL:
        raise OSError("BIO_meth_new failed")
    if not (set_write(method, _out_write) and set_ctrl(method, _out_ctrl)
            and set_create(method, _out_create) and set_destroy(method, _out_destroy)):
        raise OSError("BIO_meth_set_* failed")
    _SSLSocketType = _ssl._SSLSocket
    _SSLContextType = _ssl._SSLContext
    _method = method


def bound():
    """True once load() succeeded."""
    return _method != NULL


cdef void* _field(object obj, Py_ssize_t offset):
    """The pointer stored `offset` bytes into `obj` (inside its fixed-size part, else NULL)."""
    cdef PyTypeObject* tp = Py_TYPE(obj)
    if offset + <Py_ssize_t>sizeof(void*) > tp.tp_basicsize:
        return NULL
    return (<void**>((<char*><PyObject*>obj) + offset))[0]


def ctx_of(object context):
    """The SSL_CTX* of an ssl.SSLContext: CPython's _ssl._SSLContext keeps it first after its
    header. 0 if `context` is not one (or load() has not run)."""
    if _SSLContextType is None or not isinstance(context, _SSLContextType):
        return 0
    return <uintptr_t>_field(context, sizeof(PyObject))


def ssl_of(object sslobj, int fd, object context):
    """The SSL* of an `_ssl._SSLSocket` (ssl.SSLSocket._sslobj), kept after its header and the
    reference to its socket; 0 unless OpenSSL agrees that this SSL object uses descriptor `fd`
    and the SSL_CTX of `context`."""
    if _method == NULL or type(sslobj) is not _SSLSocketType:
        return 0
    # The field after the SSL* is the context object itself: checked before OpenSSL is handed
    # a pointer from this layout (a reordered struct fails here instead of crashing there).
    if _field(sslobj, sizeof(PyObject) + 2 * sizeof(void*)) != <void*>context:
        return 0
    cdef void* s = _field(sslobj, sizeof(PyObject) + sizeof(void*))
    if s == NULL or _get_fd(s) != fd:
        return 0
    cdef uintptr_t ctx = ctx_of(context)
    if ctx == 0 or <uintptr_t>_get_ctx(s) != ctx:
        return 0
    return <uintptr_t>s


def set_tls13_suites(object context, bytes suites not None):
    """SSL_CTX_set_ciphersuites on `context`; False where it cannot be done here."""
    cdef uintptr_t ctx = ctx_of(context)
    if ctx == 0 or _set_suites == NULL:
        return False
    return _set_suites(<void*>ctx, suites) == 1


cdef inline void* _checked(uintptr_t ssl) except NULL:
    if _method == NULL:
        raise RuntimeError("fastpf._tls is not bound to OpenSSL (load)")
    if ssl == 0:
        raise ValueError("no SSL object (the connection is closed)")
    return <void*>ssl


cdef OutBuf* _out(void* s) except NULL:
    cdef void* bio = _get_wbio(s)
    cdef OutBuf* ob = <OutBuf*>_bio_get_data(bio) if bio != NULL else NULL
    if ob == NULL:
        raise ValueError("the SSL object has no fastpf write BIO (attach_writer)")
    return ob


def prepare(uintptr_t ssl, size_t read_buffer):
    """Before the handshake: read-ahead on, with a record buffer of `read_buffer` bytes (one
    recv(2) brings several records)."""
    cdef void* s = _checked(ssl)
    _ctrl(s, _SSL_CTRL_SET_READ_AHEAD, 1, NULL)
    _set_read_len(s, read_buffer)


def refuse_renegotiation(uintptr_t ssl):
    """After the handshake: a TLS 1.2 server's HelloRequest gets a refusal, so a write never
    has to wait for a read."""
    _set_options(_checked(ssl), _SSL_OP_NO_RENEGOTIATION)


def close_notify(uintptr_t ssl):
    """Put our close_notify into the write BIO (flush() sends it). One SSL_shutdown call: it
    never waits for, or reads, the peer's. Returns SSL_shutdown's result (errors cleared)."""
    cdef void* s = _checked(ssl)
    _clear_error()
    cdef int ret = _shutdown(s)
    _clear_error()
    return ret


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


def capacity(uintptr_t ssl):
    """Bytes the ciphertext buffer has allocated (0 once given back)."""
    return _out(_checked(ssl)).cap


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
