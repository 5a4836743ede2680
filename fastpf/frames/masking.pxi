# Part of fastpf/_frames.pyx (included there; not compiled on its own).
# RFC 6455 masking: the XOR kernel, the masking-key generator and mask_inplace().

cdef void mask_bytes(unsigned char* data, Py_ssize_t length, const unsigned char* key,
                     Py_ssize_t phase) noexcept nogil:
    # 8 bytes per step with a uint64 XOR; memcpy keeps unaligned access legal and compiles
    # to plain loads/stores. Four independent words per iteration let -O2 keep the pipeline
    # busy (and let the vectoriser pair them) without depending on alignment.
    cdef unsigned char kb[8]
    cdef uint64_t k64, w0, w1, w2, w3
    cdef Py_ssize_t i = 0
    cdef int j
    for j in range(8):
        kb[j] = key[(j + phase) & 3]
    memcpy(&k64, kb, 8)
    while i + 32 <= length:
        memcpy(&w0, data + i, 8)
        memcpy(&w1, data + i + 8, 8)
        memcpy(&w2, data + i + 16, 8)
        memcpy(&w3, data + i + 24, 8)
        w0 ^= k64
        w1 ^= k64
        w2 ^= k64
        w3 ^= k64
        memcpy(data + i, &w0, 8)
        memcpy(data + i + 8, &w1, 8)
        memcpy(data + i + 16, &w2, 8)
        memcpy(data + i + 24, &w3, 8)
        i += 32
    while i + 8 <= length:
        memcpy(&w0, data + i, 8)
        w0 ^= k64
        memcpy(data + i, &w0, 8)
        i += 8
    while i < length:
        # kb repeats the key with period 4, so index by i & 7 keeps the phase.
        data[i] ^= kb[i & 7]
        i += 1


# Masking keys: a xorshift64* generator seeded from os.urandom, reseeded in fork children.
# RFC 6455 wants unpredictable keys to stop cache-poisoning by scripted clients; port-forward
# clients are not scripts in a browser, so a fast PRNG with an OS seed is plenty.
cdef uint64_t _rng_state = 0


def _reseed():
    global _rng_state
    _rng_state = int.from_bytes(_os.urandom(8), "little") | 1


_reseed()
if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(after_in_child=_reseed)


cdef inline uint32_t _next_key() noexcept:
    global _rng_state
    cdef uint64_t x = _rng_state
    x ^= x >> 12
    x ^= x << 25
    x ^= x >> 27
    _rng_state = x
    return <uint32_t>((x * 0x2545F4914F6CDD1Dull) >> 32)


def new_mask_key():
    """A fresh 4-byte masking key (for ws_frame_header(..., mask_key=...))."""
    cdef uint32_t k = _next_key()
    return PyBytes_FromStringAndSize(<char*>&k, 4)


def mask_inplace(buf, key, Py_ssize_t offset=0, Py_ssize_t length=-1):
    """XOR buf[offset:offset+length] with the 4-byte key (key phase 0 at `offset`)."""
    cdef Py_buffer pb
    cdef Py_buffer kb
    PyObject_GetBuffer(key, &kb, PyBUF_SIMPLE)
    try:
        if kb.len != 4:
            raise ValueError("mask key must be 4 bytes")
        PyObject_GetBuffer(buf, &pb, PyBUF_WRITABLE)
        try:
            if offset < 0 or offset > pb.len:
                raise ValueError(f"offset {offset} outside a buffer of {pb.len} bytes")
            if length < 0:
                length = pb.len - offset
            elif length > pb.len - offset:
                raise ValueError(f"offset {offset} + length {length} beyond {pb.len} bytes")
            if length:
                mask_bytes(<unsigned char*>pb.buf + offset, length,
                           <const unsigned char*>kb.buf, 0)
        finally:
            PyBuffer_Release(&pb)
    finally:
        PyBuffer_Release(&kb)
