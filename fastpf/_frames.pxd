# cython: language_level=3
# The compiled frame layer's C-level contract: types, field layouts and the inline helpers other
# Cython code may cimport. The Python-level API is documented in docs/ARCHITECTURE.md and typed in
# _frames.pyi; the implementation lives in _frames.pyx.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t


cdef enum:
    # SPDY/3 frame types (PROTOCOL.md 4.1); DATA is "control bit clear".
    C_DATA = 0
    C_SYN_STREAM = 1
    C_SYN_REPLY = 2
    C_RST_STREAM = 3
    C_SETTINGS = 4
    C_PING = 6
    C_GOAWAY = 7
    C_HEADERS = 8
    C_WINDOW_UPDATE = 9
    C_MAX_DATA_LENGTH = 0xFFFFFF
    C_STREAM_ID_MASK = 0x7FFFFFFF
    # RFC 6455 opcodes.
    C_WS_CONT = 0
    C_WS_TEXT = 1
    C_WS_BINARY = 2
    C_WS_CLOSE = 8
    C_WS_PING = 9
    C_WS_PONG = 10


# Big-endian loads/stores on raw bytes: callers have already checked the bounds.
cdef inline uint16_t load_be16(const unsigned char* p) noexcept nogil:
    return <uint16_t>((<uint16_t>p[0] << 8) | p[1])

cdef inline uint32_t load_be32(const unsigned char* p) noexcept nogil:
    return ((<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16)
            | (<uint32_t>p[2] << 8) | <uint32_t>p[3])

cdef inline uint64_t load_be64(const unsigned char* p) noexcept nogil:
    return (<uint64_t>load_be32(p) << 32) | <uint64_t>load_be32(p + 4)

cdef inline void store_be16(unsigned char* p, uint16_t v) noexcept nogil:
    p[0] = <unsigned char>(v >> 8)
    p[1] = <unsigned char>v

cdef inline void store_be32(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = <unsigned char>(v >> 24)
    p[1] = <unsigned char>(v >> 16)
    p[2] = <unsigned char>(v >> 8)
    p[3] = <unsigned char>v

cdef inline void store_be64(unsigned char* p, uint64_t v) noexcept nogil:
    store_be32(p, <uint32_t>(v >> 32))
    store_be32(p + 4, <uint32_t>v)


# XOR `length` bytes at `data` with the 4-byte `key`, key index (i + phase) % 4 for byte i.
cdef void mask_bytes(unsigned char* data, Py_ssize_t length, const unsigned char* key,
                     Py_ssize_t phase) noexcept nogil


cdef class _FrameBuffer:
    # Receive buffer shared by both decoders (see "Buffer contract" in ARCHITECTURE.md).
    cdef object _buf              # bytearray; never resized (it has exports), only replaced
    cdef object _mv               # memoryview(_buf): frames' payload views are slices of it
    cdef unsigned char* _ptr      # start of _buf's storage, valid while _buf is current
    cdef Py_ssize_t _cap          # len(_buf)
    cdef Py_ssize_t _start        # first byte not yet decoded
    cdef Py_ssize_t _end          # end of received bytes
    cdef Py_ssize_t _need         # total size of the frame at _start once its header is known
    cdef Py_ssize_t _default_size
    cdef Py_ssize_t _min_read     # least free space get_buffer() offers (avoids tiny reads)
    cdef Py_ssize_t _last         # size of the last frame decoded
    cdef bint _exported           # a payload view was handed out since the last release()
    cdef bint _failed

    cdef int _init_buffer(self, Py_ssize_t size) except -1
    cdef int _settle(self) except -1
    cdef int _relocate(self, Py_ssize_t size) except -1
    cdef int _reserve(self, Py_ssize_t want) except -1
    cdef void _consumed(self, Py_ssize_t n) noexcept


cdef class SpdyFrame:
    cdef readonly int type
    cdef readonly int flags
    cdef readonly uint32_t stream_id
    cdef readonly object payload
    cdef readonly object headers
    cdef readonly uint32_t assoc_id
    cdef readonly int priority
    cdef readonly int slot
    cdef readonly uint32_t status
    cdef readonly uint32_t ping_id
    cdef readonly uint32_t last_good_id
    cdef readonly uint32_t delta
    cdef readonly object settings
    cdef readonly int version


cdef class HeaderCompressor:
    cdef object _zc


cdef class HeaderDecompressor:
    cdef object _zd
    cdef Py_ssize_t _max_output
    cdef bint _broken
    cdef dict _inflate(self, object block)


cdef class SpdyDecoder(_FrameBuffer):
    cdef HeaderDecompressor _inflater
    cdef Py_ssize_t _max_header_block
    cdef Py_ssize_t _max_data_length
    cdef readonly object error
    # feed_borrowed(): decoding in place from another buffer; the own buffer's state is parked
    cdef object _own_mv
    cdef unsigned char* _own_ptr
    cdef Py_ssize_t _own_cap
    cdef Py_ssize_t _own_pos
    cdef bint _own_exported
    cdef bint _borrowing
    cdef object _fail(self, str message, int status=*)
    cdef object _next(self)
    cdef int _settle(self) except -1
    cdef int _end_borrow(self) except -1


cdef class SpdyEncoder:
    cdef HeaderCompressor _deflater


cdef class WsFrame:
    cdef readonly int opcode
    cdef readonly bint fin
    cdef readonly object payload
    cdef readonly int message_opcode
    cdef readonly bint first


cdef class WsDecoder(_FrameBuffer):
    cdef bint _expect_masked
    cdef Py_ssize_t _max_message
    cdef int _msg_opcode          # opcode of the fragmented message in progress, -1 if none
    cdef Py_ssize_t _msg_len      # payload bytes of that message so far
    cdef readonly object error
    cdef object _fail(self, str message, int code=*)
    cdef object _next(self)
