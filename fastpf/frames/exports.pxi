# Part of fastpf/_frames.pyx and fastpf/_pump.pyx (included by both; not compiled on its own).
# Whether a bytearray is still exported (a view of it alive), so a read buffer is never reused
# under a view a transport still holds.

cdef extern from *:
    """
    /* CPython counts a bytearray's live buffer exports in ob_exports (why a bytearray with live
       views cannot be resized). The field is private: read it only on CPython's full API;
       elsewhere buffer_exported() falls back to a resize probe. */
    #if CYTHON_COMPILING_IN_CPYTHON && !defined(Py_LIMITED_API)
    #define FASTPF_HAVE_OB_EXPORTS 1
    #define fastpf_bytearray_exports(o) (((PyByteArrayObject *)(o))->ob_exports)
    #else
    #define FASTPF_HAVE_OB_EXPORTS 0
    #define fastpf_bytearray_exports(o) ((Py_ssize_t)-1)
    #endif
    """
    const bint FASTPF_HAVE_OB_EXPORTS
    Py_ssize_t fastpf_bytearray_exports(object buf)


cdef bint bytearray_refuses_resize(bytearray buf) except -1:
    # Portable: a bytearray with live exports cannot change size (BufferError).
    cdef Py_ssize_t n = len(buf)
    cdef int last
    if n:
        last = buf[n - 1]
        try:
            del buf[n - 1]
        except BufferError:
            return True
        buf.append(last)
    else:
        try:
            buf.append(0)
        except BufferError:
            return True
        del buf[0]
    return False


cdef inline bint bytearray_exported(bytearray buf) except -1:
    if FASTPF_HAVE_OB_EXPORTS:
        return fastpf_bytearray_exports(buf) > 0
    return bytearray_refuses_resize(buf)
