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
  On TLS 1.3 with AES-GCM the first bulk write takes the record layer over: records are then
  sealed here, from the caller's plaintext straight into the ciphertext buffer (see the
  "own record sealing" section below for what makes that safe).
* Once a TLS 1.3 AES-GCM connection has read a bulk of data, its reads are taken over too:
  records are received into our own buffer and opened straight into the session's buffer,
  without OpenSSL's copy out of its record buffer (see "own record opening").

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
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memmove, strlen, strncmp

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
    ssize_t recv(int fd, void* buf, size_t n, int flags)
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
    "BIO_method_type",
)
# the functions own record sealing needs (all or none: without them OpenSSL seals every record)
SEAL_FUNCTIONS = (
    "SSL_CTX_set_keylog_callback", "SSL_CTX_get_keylog_callback", "CRYPTO_get_ex_new_index",
    "SSL_set_ex_data", "SSL_get_ex_data", "SSL_version", "SSL_get_key_update_type",
    "SSL_get_current_cipher", "SSL_CIPHER_get_id", "EVP_CIPHER_CTX_new", "EVP_CIPHER_CTX_free",
    "EVP_aes_128_gcm", "EVP_aes_256_gcm", "EVP_sha256", "EVP_sha384", "EVP_EncryptInit_ex",
    "EVP_EncryptUpdate", "EVP_EncryptFinal_ex", "EVP_CIPHER_CTX_ctrl", "HMAC", "OPENSSL_cleanse",
    "SSL_key_update", "SSL_do_handshake",
)
# what own record opening needs besides SEAL_FUNCTIONS (all or none: else OpenSSL reads)
OPEN_FUNCTIONS = (
    "SSL_set_msg_callback", "SSL_has_pending", "SSL_in_init", "SSL_get_shutdown", "SSL_rstate_string",
    "EVP_DecryptInit_ex", "EVP_DecryptUpdate", "EVP_DecryptFinal_ex",
)
# read_into's own statuses after the read takeover (SSL_get_error's codes are not negative)
PEER_CLOSED = -1  # close_notify, or the peer's FIN: nothing more comes
RECORD_ERROR = -2  # the records cannot go on: read_error() says why
cdef int _WANT_READ = 2
cdef int _PEER_CLOSED = -1
cdef int _RECORD_ERROR = -2

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
ctypedef int (*bio_method_type_fn)(const void* bio) noexcept nogil
cdef bio_method_type_fn _bio_method_type = NULL
cdef int _bio_type = -1  # our BIO method's type
# own record sealing (bound by load() when every SEAL_FUNCTIONS symbol is there)
cdef ctx_set_keylog_fn _set_keylog = NULL
cdef ctx_get_keylog_fn _get_keylog = NULL
cdef ssl_set_ex_data_fn _set_ex = NULL
cdef ssl_get_ex_data_fn _get_ex = NULL
cdef ssl_int_fn _version = NULL
cdef ssl_int_fn _key_update_type = NULL
cdef ssl_key_update_fn _key_update_call = NULL
cdef ssl_shutdown_fn _do_handshake = NULL  # same C type: int (SSL*)
cdef ssl_get_cipher_fn _current_cipher = NULL
cdef cipher_get_id_fn _cipher_id = NULL
cdef evp_ctx_new_fn _evp_new = NULL
cdef evp_ctx_free_fn _evp_free = NULL
cdef evp_get_fn _aes128gcm = NULL
cdef evp_get_fn _aes256gcm = NULL
cdef evp_get_fn _sha256 = NULL
cdef evp_get_fn _sha384 = NULL
cdef evp_init_fn _evp_init = NULL
cdef evp_update_fn _evp_update = NULL
cdef evp_final_fn _evp_final = NULL
cdef evp_ctrl_fn _evp_ctrl = NULL
cdef hmac_fn _hmac = NULL
cdef cleanse_fn _cleanse = NULL
cdef ssl_set_msg_cb_fn _set_msg_cb = NULL
cdef ssl_int_fn _has_pending = NULL
cdef ssl_int_fn _in_init = NULL
cdef ssl_int_fn _get_shutdown = NULL
cdef ssl_str_fn _rstate = NULL
cdef evp_init_fn _dec_init = NULL
cdef evp_update_fn _dec_update = NULL
cdef evp_final_fn _dec_final = NULL
cdef bint _open_bound = False
cdef bint _open_enabled = True
cdef int _ex_index = -1  # our SSL ex_data slot for the caught Secret
cdef keylog_cb _prev_keylog = NULL  # a key-log callback we replaced (CPython's), still called
cdef bint _seal_enabled = True
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
cdef int _TLS1_3_VERSION = 0x0304
cdef unsigned int _TLS_AES_128_GCM_SHA256 = 0x03001301
cdef unsigned int _TLS_AES_256_GCM_SHA384 = 0x03001302
cdef int _SSL_KEY_UPDATE_NONE = -1
cdef int _SSL_KEY_UPDATE_NOT_REQUESTED = 0
cdef int _SSL_KEY_UPDATE_REQUESTED = 1
cdef int _EVP_CTRL_AEAD_GET_TAG = 0x10
cdef int _EVP_CTRL_AEAD_SET_TAG = 0x11
cdef int _SSL3_RT_HANDSHAKE = 22
cdef int _SSL3_RT_INNER_CONTENT_TYPE = 257
cdef int _SSL_RECEIVED_SHUTDOWN = 2
cdef int _CRYPTO_EX_INDEX_SSL = 0
cdef size_t _RECORD = 16384  # TLS 1.3 plaintext per record at most (RFC 8446 5.1)
cdef size_t _TAG = 16
cdef size_t _OVERHEAD = 5 + 1 + 16  # header, inner content type, tag
# A write of at least this much takes the record layer over: connections that only ever send
# small messages keep OpenSSL's (no cipher context of our own per connection).
cdef size_t _SEAL_FROM = 16384
# RFC 8446 5.5: at most 2^24.5 AES-GCM records per key; we update the key after 2^24.
cdef unsigned long long _records_per_key = 1ULL << 24
# What OpenSSL may still write after the takeover (only while reading), by record body size:
# TLS 1.3 records are not padded unless asked for, which nobody here does.
cdef size_t _KEY_UPDATE_BODY = 4 + 1 + 1 + 16  # KeyUpdate message, content type, tag
cdef size_t _ALERT_BODY = 2 + 1 + 16
# reading: OpenSSL reads the first bytes (the handshake's tail, small messages); a connection
# that has read this much plaintext is a bulk one, worth our own buffer
cdef unsigned long long _OPEN_FROM = 256 * 1024
cdef size_t _IN_CAP = 256 * 1024  # our ciphertext buffer: one recv(2) brings ~15 records
cdef size_t _MAX_BODY = 16384 + 256  # a TLS 1.3 record's body at most (RFC 8446 5.2)
cdef size_t _HS_MAX = 64 * 1024  # a post-handshake message split across records, at most
cdef int _IDLE_RECORDS = 64  # records in a row without data (empty, tickets, ...) at most
# why own record opening stopped (read_error)
cdef int _OPEN_BAD_MAC = 1
cdef int _OPEN_DECODE = 2
cdef int _OPEN_UNEXPECTED = 3
cdef int _OPEN_ALERT = 4
cdef int _OPEN_OS = 5
cdef int _OPEN_MEMORY = 6
cdef int _OPEN_OVERFLOW = 7
cdef int _OPEN_ANSWER = 8


# -- the write BIO (called by OpenSSL, without the GIL held or needed) -------------------------
cdef int _reserve(OutBuf* ob, size_t n) noexcept nogil:
    """Room for n more bytes at ob.end (the unsent tail moved to the front first if that is
    enough). 0, or -1 if out of memory (ob.failed is set)."""
    cdef size_t need, cap
    cdef char* grown
    if ob.cap - ob.end >= n:
        return 0
    if ob.start:
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
            return -1
        ob.data = grown
        ob.cap = cap
    return 0


cdef void _walk_records(OutBuf* ob, const unsigned char* data, size_t n) noexcept nogil:
    """Follow the record headers in what OpenSSL writes (whole records, maybe split across
    calls). Before the takeover every record counts towards the sequence number we start at;
    after it, OpenSSL's records are dropped and must be a KeyUpdate answer or an alert."""
    cdef size_t i = 0
    cdef size_t take, body
    while i < n:
        if ob.rec_left:
            take = ob.rec_left if ob.rec_left < n - i else n - i
            ob.rec_left -= take
            i += take
            continue
        ob.hdr[ob.hdr_got] = data[i]
        ob.hdr_got += 1
        i += 1
        if ob.hdr_got < 5:
            continue
        ob.hdr_got = 0
        body = (<size_t>ob.hdr[3] << 8) | ob.hdr[4]
        ob.rec_left = body
        if ob.sealer != NULL:
            if ob.hdr[0] == 23 and body == _KEY_UPDATE_BODY:
                ob.sealer.owed += 1  # OpenSSL answered the peer's KeyUpdate: we answer instead
            elif not (ob.hdr[0] == 23 and body == _ALERT_BODY):
                ob.rogue = 1
        else:
            ob.records += 1
            if ob.hdr[0] != 23 or not ob.app_write:
                ob.barred = 1  # not our application data (an alert, a KeyUpdate): keys unknown


cdef int _out_write(void* bio, const char* data, size_t n, size_t* written) noexcept nogil:
    cdef OutBuf* ob = <OutBuf*>_bio_get_data(bio)
    written[0] = 0
    if ob == NULL or ob.failed:
        return 0
    _walk_records(ob, <const unsigned char*>data, n)
    if ob.sealer != NULL:
        written[0] = n  # dropped: its nonce may be one we used (see _walk_records)
        return 1
    if _reserve(ob, n) < 0:
        return 0
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
        _free_key(ob.sealer)
        _free_inbound(ob.inbound)
        free(ob.data)
        free(ob)
        _bio_set_data(bio, NULL)
    return 1


# -- own record sealing (TLS 1.3, AES-GCM) ------------------------------------------------------
# OpenSSL seals each record in its own buffer (a copy of the plaintext in) and hands it to the
# write BIO (a copy out). After the takeover, records are sealed straight from the caller's
# plaintext into the ciphertext buffer with the client application traffic key, which the
# key-log callback gives us, and the sequence number OpenSSL's records reached (counted by
# _walk_records). From then on OpenSSL writes nothing that reaches the wire: a record it makes
# while reading would reuse a nonce, so it is dropped, and a KeyUpdate answer among them is
# made again by us (RFC 8446 4.6.3).

cdef void _free_secret(void* parent, void* ptr, void* ad, int idx, long argl,
                       void* argp) noexcept nogil:
    if ptr != NULL:
        _cleanse(ptr, sizeof(Secret))
        free(ptr)


cdef int _hex(char c) noexcept nogil:
    if c >= 48 and c <= 57:
        return c - 48
    if c >= 97 and c <= 102:
        return c - 87
    if c >= 65 and c <= 70:
        return c - 55
    return -1


cdef Secret* _secret_of(const void* ssl) noexcept nogil:
    """The connection's Secret, made on first use (NULL if out of memory)."""
    cdef Secret* sec = <Secret*>_get_ex(ssl, _ex_index)
    if sec == NULL:
        sec = <Secret*>calloc(1, sizeof(Secret))
        if sec == NULL or _set_ex(<void*>ssl, _ex_index, sec) != 1:
            free(sec)
            return NULL
    return sec


cdef void _keep_secret(const void* ssl, const char* text, bint server) noexcept nogil:
    """`text`: "<64 hex client random> <hex secret>" of a {CLIENT,SERVER}_TRAFFIC_SECRET_0
    line."""
    cdef size_t size = strlen(text)
    cdef size_t i
    cdef int hi, lo
    cdef Secret* sec
    cdef unsigned char* out
    cdef size_t* out_size
    if size < 65 or text[64] != 32:
        return
    text += 65
    size -= 65
    if size % 2 or size // 2 > 48 or size == 0:
        return
    sec = _secret_of(ssl)
    if sec == NULL:
        return
    if server:
        out = &sec.server[0]
        out_size = &sec.server_size
    else:
        out = &sec.client[0]
        out_size = &sec.client_size
    out_size[0] = 0
    for i in range(size // 2):
        hi = _hex(text[2 * i])
        lo = _hex(text[2 * i + 1])
        if hi < 0 or lo < 0:
            return
        out[i] = <unsigned char>(hi * 16 + lo)
    out_size[0] = size // 2


cdef void _keylog(const void* ssl, const char* line) noexcept nogil:
    if strncmp(line, b"CLIENT_TRAFFIC_SECRET_0 ", 24) == 0:
        _keep_secret(ssl, line + 24, False)
    elif strncmp(line, b"SERVER_TRAFFIC_SECRET_0 ", 24) == 0:
        _keep_secret(ssl, line + 24, True)


cdef void _keylog_chained(const void* ssl, const char* line) noexcept nogil:
    """For a context that had a callback (CPython's SSLKEYLOGFILE writer): it still gets every
    line. Only such contexts: CPython's callback returns with the GIL held (a deadlock) when
    its context has no key-log file."""
    _keylog(ssl, line)
    if _prev_keylog != NULL:
        _prev_keylog(ssl, line)


cdef int _expand_label(const void* md, const unsigned char* secret, size_t secret_size,
                       const char* label, unsigned char* out, size_t size) noexcept nogil:
    """HKDF-Expand-Label(secret, label, "", size) of RFC 8446 7.1, for size <= the hash's
    length (one HMAC block). 0, or -1."""
    cdef unsigned char info[64]
    cdef unsigned char block[64]
    cdef unsigned int got = 0
    cdef size_t label_size = strlen(label)
    cdef size_t n = 0
    if label_size > 32 or size > 48:
        return -1
    info[0] = <unsigned char>(size >> 8)
    info[1] = <unsigned char>(size & 0xFF)
    info[2] = <unsigned char>(6 + label_size)
    memcpy(info + 3, b"tls13 ", 6)
    memcpy(info + 9, label, label_size)
    n = 9 + label_size
    info[n] = 0  # empty context
    info[n + 1] = 1  # T(1)
    if _hmac(md, secret, <int>secret_size, info, n + 2, block, &got) == NULL or got < size:
        return -1
    memcpy(out, block, size)
    _cleanse(block, sizeof(block))
    return 0


cdef int _key_from_secret(TrafficKey* sl) noexcept nogil:
    """Key and IV of the current secret into the cipher; the sequence starts again at 0."""
    cdef unsigned char key[32]
    cdef int ok
    if (_expand_label(sl.md, sl.secret, sl.secret_size, b"key", key, sl.key_size) < 0
            or _expand_label(sl.md, sl.secret, sl.secret_size, b"iv", sl.iv, 12) < 0):
        return -1
    if sl.decrypt:
        ok = _dec_init(sl.cipher, NULL, NULL, key, NULL)
    else:
        ok = _evp_init(sl.cipher, NULL, NULL, key, NULL)
    _cleanse(key, sizeof(key))
    sl.seq = 0
    return 0 if ok == 1 else -1


cdef void _free_key(TrafficKey* sl) noexcept nogil:
    if sl == NULL:
        return
    if sl.cipher != NULL:
        _evp_free(sl.cipher)
    _cleanse(sl, sizeof(TrafficKey))
    free(sl)


cdef inline void _nonce(TrafficKey* k, unsigned char* nonce) noexcept nogil:
    """The per-record nonce: the IV XOR the 64-bit sequence number (RFC 8446 5.3)."""
    cdef int i
    memcpy(nonce, k.iv, 12)
    for i in range(8):
        nonce[4 + i] ^= <unsigned char>((k.seq >> (56 - 8 * i)) & 0xFF)


cdef int _seal_one(OutBuf* ob, unsigned char kind, const unsigned char* data,
                   size_t n) noexcept nogil:
    """One record of n <= 16384 plaintext bytes of content type `kind` into the buffer.
    0, -1 out of memory, -2 the cipher failed."""
    cdef TrafficKey* sl = ob.sealer
    cdef size_t total = n + _OVERHEAD
    cdef size_t body = n + 1 + _TAG
    cdef unsigned char nonce[12]
    cdef unsigned char* out
    cdef int outl = 0
    if _reserve(ob, total) < 0:
        return -1
    out = <unsigned char*>ob.data + ob.end
    out[0] = 23  # application_data, TLS 1.2 on the wire (RFC 8446 5.2)
    out[1] = 3
    out[2] = 3
    out[3] = <unsigned char>(body >> 8)
    out[4] = <unsigned char>(body & 0xFF)
    _nonce(sl, nonce)
    if _evp_init(sl.cipher, NULL, NULL, NULL, nonce) != 1:
        return -2
    if _evp_update(sl.cipher, NULL, &outl, out, 5) != 1:  # the header is the AAD
        return -2
    if n and (_evp_update(sl.cipher, out + 5, &outl, data, <int>n) != 1 or outl != <int>n):
        return -2
    if _evp_update(sl.cipher, out + 5 + n, &outl, &kind, 1) != 1 or outl != 1:
        return -2
    if _evp_final(sl.cipher, out + 6 + n, &outl) != 1:
        return -2
    if _evp_ctrl(sl.cipher, _EVP_CTRL_AEAD_GET_TAG, <int>_TAG, out + 6 + n) != 1:
        return -2
    ob.end += total
    sl.seq += 1
    return 0


cdef int _next_key(TrafficKey* sl) noexcept nogil:
    """application_traffic_secret_N+1 (RFC 8446 7.2) and its key. 0, or -2."""
    cdef unsigned char secret[48]
    if _expand_label(sl.md, sl.secret, sl.secret_size, b"traffic upd", secret,
                     sl.secret_size) < 0:
        return -2
    memcpy(sl.secret, secret, sl.secret_size)
    _cleanse(secret, sizeof(secret))
    if _key_from_secret(sl) < 0:
        return -2
    sl.updates += 1
    return 0


cdef int _send_key_update(OutBuf* ob) noexcept nogil:
    """KeyUpdate(update_not_requested) under the current key, then the next key."""
    cdef unsigned char msg[5]
    cdef int r
    msg[0] = 24
    msg[1] = 0
    msg[2] = 0
    msg[3] = 1
    msg[4] = 0
    r = _seal_one(ob, 22, msg, 5)
    if r:
        return r
    return _next_key(ob.sealer)


cdef int _seal(OutBuf* ob, unsigned char kind, const unsigned char* data,
               size_t size) noexcept nogil:
    """`size` bytes as records of `kind`, a KeyUpdate first wherever the key is used up."""
    cdef size_t done = 0
    cdef size_t n
    cdef int r
    while True:
        if ob.sealer.seq >= _records_per_key:
            r = _send_key_update(ob)
            if r:
                return r
        n = size - done if size - done < _RECORD else _RECORD
        r = _seal_one(ob, kind, data + done, n)
        if r:
            return r
        done += n
        if done >= size:
            return 0


cdef int _answer_key_updates(void* s, OutBuf* ob) noexcept nogil:
    """The KeyUpdate answers the peer asked for, under our key. OpenSSL keeps a requested
    answer for its next write (OpenSSL 3.0) or makes it at once (dropped by _out_write, counted
    in `owed`); a kept one is made now, into the void, which also clears OpenSSL's flag so
    that the next request is seen. 0, or -1/-2 as _seal_one, -3 if OpenSSL keeps owing one."""
    cdef int r
    if ob.sealed_close:
        return 0  # nothing is sealed after our close_notify
    if _key_update_type(s) != _SSL_KEY_UPDATE_NONE:
        _clear_error()
        if _key_update_call(s, _SSL_KEY_UPDATE_NOT_REQUESTED) == 1:
            _do_handshake(s)
        _clear_error()
        if _key_update_type(s) != _SSL_KEY_UPDATE_NONE or not ob.sealer.owed or ob.rogue:
            return -3
    while ob.sealer.owed:
        ob.sealer.owed -= 1
        r = _send_key_update(ob)
        if r:
            return r
    return 0


cdef void _drop_secret(void* s, bint server) noexcept nogil:
    """One direction's caught secret is not needed (any more): wiped now; the Secret is freed
    once neither direction needs it (not at SSL_free)."""
    cdef Secret* sec = <Secret*>_get_ex(s, _ex_index)
    if sec == NULL:
        return
    if server:
        _cleanse(sec.server, sizeof(sec.server))
        sec.server_size = 0
        sec.server_done = 1
    else:
        _cleanse(sec.client, sizeof(sec.client))
        sec.client_size = 0
        sec.client_done = 1
    if sec.client_done and (sec.server_done or not _open_bound):
        _set_ex(s, _ex_index, NULL)
        _free_secret(NULL, sec, NULL, 0, 0, NULL)


cdef void _take_over(void* s, OutBuf* ob) noexcept nogil:
    """Seal from now on if this connection allows it, else bar it for good."""
    _try_take_over(s, ob)
    _drop_secret(s, False)  # taken over (the sealer has its copy) or barred: not needed


cdef TrafficKey* _new_key(void* s, const unsigned char* secret, size_t secret_size,
                         bint decrypt) noexcept nogil:
    """A keyed TrafficKey for this connection's suite (TLS 1.3 AES-GCM, else NULL) from a
    caught traffic secret (of the suite's hash size, else NULL: the key log was not ours)."""
    cdef const void* cipher
    cdef const void* md
    cdef size_t key_size
    cdef TrafficKey* sl
    cdef unsigned int suite = _cipher_id(_current_cipher(s))
    cdef int ok
    if suite == _TLS_AES_128_GCM_SHA256:
        cipher = _aes128gcm()
        md = _sha256()
        key_size = 16
    elif suite == _TLS_AES_256_GCM_SHA384:
        cipher = _aes256gcm()
        md = _sha384()
        key_size = 32
    else:
        return NULL  # ChaCha20-Poly1305 (no AES instructions): OpenSSL keeps the records
    if secret_size != (32 if key_size == 16 else 48):
        return NULL
    sl = <TrafficKey*>calloc(1, sizeof(TrafficKey))
    if sl == NULL:
        return NULL
    sl.cipher = _evp_new()
    sl.md = md
    sl.key_size = key_size
    sl.decrypt = decrypt
    sl.secret_size = secret_size
    memcpy(sl.secret, secret, secret_size)
    if sl.cipher == NULL:
        _free_key(sl)
        return NULL
    if decrypt:
        ok = _dec_init(sl.cipher, cipher, NULL, NULL, NULL)
    else:
        ok = _evp_init(sl.cipher, cipher, NULL, NULL, NULL)
    if ok != 1 or _key_from_secret(sl) < 0:
        _free_key(sl)
        return NULL
    return sl


cdef void _try_take_over(void* s, OutBuf* ob) noexcept nogil:
    cdef Secret* sec
    cdef TrafficKey* sl
    ob.barred = 1  # unless everything below holds
    if not _seal_enabled or _version(s) != _TLS1_3_VERSION or ob.hdr_got or ob.rec_left:
        return
    if _key_update_type(s) != _SSL_KEY_UPDATE_NONE:
        return  # OpenSSL owes a KeyUpdate and would send it with the next write
    sec = <Secret*>_get_ex(s, _ex_index)
    if sec == NULL:
        return  # the key log was not ours (another callback replaced it)
    sl = _new_key(s, sec.client, sec.client_size, False)
    if sl == NULL:
        return
    sl.seq = ob.records  # OpenSSL sealed records 0 .. records-1 with this key
    ob.sealer = sl
    ob.barred = 0


# -- own record opening (TLS 1.3, AES-GCM) ------------------------------------------------------
# OpenSSL reads records into its record buffer, decrypts them there and copies the plaintext
# out to the caller. After the read takeover, records are received into our own buffer and
# opened straight into the caller's buffer with the server application traffic key (from the
# key log) at the sequence number OpenSSL's reading reached. That count comes from OpenSSL
# itself: its message callback reports each record it opens and each handshake message it
# reads, so it counts from the server's Finished, and a KeyUpdate it read bars the takeover.
# The takeover waits for a moment when OpenSSL holds no byte it has not processed (no partial
# record, no partial handshake message); from then on OpenSSL reads nothing. Post-handshake
# messages are ours too: a KeyUpdate moves our key on (and is answered if asked for), a
# NewSessionTicket is dropped (the session stays resumable with the tickets read before).

cdef void _watch(int write_p, int version, int content_type, const void* buf, size_t n,
                 void* ssl, void* arg) noexcept nogil:
    """OpenSSL's message callback: count the records it opens under the server's key."""
    cdef Secret* sec
    cdef const unsigned char* p = <const unsigned char*>buf
    if write_p:
        return
    if content_type == _SSL3_RT_HANDSHAKE and n >= 1 and p[0] == 20:
        sec = _secret_of(ssl)  # the server's Finished (read before its key is logged)
        if sec != NULL and not sec.counting:  # the server's traffic key is next
            sec.counting = 1
            sec.server_records = 0
        return
    sec = <Secret*>_get_ex(ssl, _ex_index)
    if sec == NULL or sec.server_done:
        return
    if content_type == _SSL3_RT_INNER_CONTENT_TYPE:
        if sec.counting:
            sec.server_records += 1
            sec.last_inner = p[0] if n >= 1 else 0
    elif content_type == _SSL3_RT_HANDSHAKE and n >= 1 and p[0] == 24:
        sec.server_moved = 1  # a KeyUpdate: the server's key moved on without us


cdef void _free_inbound(Inbound* ib) noexcept nogil:
    if ib == NULL:
        return
    _free_key(ib.key)
    free(ib.data)
    if ib.plain != NULL:
        _cleanse(ib.plain, _MAX_BODY)
        free(ib.plain)
    if ib.hs != NULL:
        _cleanse(ib.hs, _HS_MAX)
        free(ib.hs)
    free(ib)


cdef bint _between_records(void* s) noexcept nogil:
    """OpenSSL's record layer waits for a record's header ("RH"), not for the body of one
    whose header it has taken ("RB") or in between ("RD")."""
    cdef const char* state = _rstate(s)
    return state != NULL and state[0] == 82 and state[1] == 72 and state[2] == 0  # "RH"


cdef void _try_open(void* s, OutBuf* ob) noexcept nogil:
    """Open the server's records from now on if OpenSSL holds nothing unprocessed; bar it for
    good where this connection cannot allow it; else try again after a later read."""
    cdef Secret* sec = <Secret*>_get_ex(s, _ex_index)
    cdef TrafficKey* key
    cdef Inbound* ib
    if (not _open_enabled or _version(s) != _TLS1_3_VERSION or sec == NULL
            or sec.server_done or sec.server_moved or not sec.counting):
        ob.read_barred = 1
    elif (_has_pending(s) or not _between_records(s) or _in_init(s) or sec.last_inner != 23
            or _get_shutdown(s) & _SSL_RECEIVED_SHUTDOWN):
        # A partial record or message in OpenSSL's buffers, or the end: not now. A header
        # OpenSSL has read whole waits for its body outside the buffer SSL_has_pending looks
        # at; after a handshake record OpenSSL may keep a message's first bytes (fewer than
        # its 4-byte header) where neither probe sees them: only a data record proves there
        # are none.
        return
    else:
        key = _new_key(s, sec.server, sec.server_size, True)
        ib = <Inbound*>calloc(1, sizeof(Inbound)) if key != NULL else NULL
        if ib == NULL:
            _free_key(key)
            ob.read_barred = 1
        else:
            key.seq = sec.server_records  # OpenSSL opened records 0 .. server_records-1
            ib.key = key
            ob.inbound = ib
    if sec != NULL and sec.watching:  # OpenSSL reads no more records, or we stop counting
        _set_msg_cb(s, NULL)  # (only ours: a context's own callback stays)
        sec.watching = 0
    _drop_secret(s, True)


cdef int _open_one(TrafficKey* k, const unsigned char* rec, size_t body,
                   unsigned char* out) noexcept nogil:
    """Decrypt the record at `rec` (header and `body` bytes) into out[0:body - 16] and check
    its tag. 0, or -1 (bad_record_mac: out holds nothing to use)."""
    cdef unsigned char nonce[12]
    cdef int outl = 0
    cdef int n = <int>(body - _TAG)
    _nonce(k, nonce)
    if _dec_init(k.cipher, NULL, NULL, NULL, nonce) != 1:
        return -1
    if _dec_update(k.cipher, NULL, &outl, rec, 5) != 1:  # the header is the AAD
        return -1
    if _dec_update(k.cipher, out, &outl, rec + 5, n) != 1 or outl != n:
        return -1
    if _evp_ctrl(k.cipher, _EVP_CTRL_AEAD_SET_TAG, <int>_TAG, <void*>(rec + 5 + n)) != 1:
        return -1
    if _dec_final(k.cipher, out + n, &outl) != 1:
        return -1
    k.seq += 1
    return 0


cdef int _key_update_received(void* s, OutBuf* ob, Inbound* ib, int requested) noexcept nogil:
    """The server's next key for the records after this one; our answer if it asked for one
    (sealed by us before our next record, or written by OpenSSL now). 0, or an _OPEN_* code."""
    if _next_key(ib.key) < 0:
        return _OPEN_ANSWER
    if requested:
        if ob.sealer != NULL:
            ob.sealer.owed += 1  # read_into seals it before anything else of ours
        else:  # OpenSSL writes it now (our caller flushes), not with its next data: until
            # then it would refuse to write close_notify (SSL_shutdown while in init)
            _clear_error()
            if (_key_update_call(s, _SSL_KEY_UPDATE_NOT_REQUESTED) != 1
                    or _do_handshake(s) != 1):
                _clear_error()
                return _OPEN_ANSWER
            _clear_error()
            _drop_secret(s, False)  # that record bars our sealing (_walk_records)
    return 0


cdef int _handshake_bytes(void* s, OutBuf* ob, Inbound* ib, const unsigned char* p,
                          size_t n, bint record_ends) noexcept nogil:
    """Post-handshake messages (RFC 8446 4.6), which may span records. 0, or an _OPEN_* code."""
    cdef const unsigned char* m
    cdef size_t left, size
    cdef unsigned char* grown
    if ib.hs_len:  # the start of a message came in an earlier record
        if ib.hs_len + n > _HS_MAX:
            return _OPEN_OVERFLOW
        memcpy(ib.hs + ib.hs_len, p, n)
        ib.hs_len += n
        m = ib.hs
        left = ib.hs_len
    else:
        m = p
        left = n
    while left >= 4:
        size = (<size_t>m[1] << 16) | (<size_t>m[2] << 8) | m[3]
        if size > _HS_MAX - 4:
            return _OPEN_OVERFLOW
        if left < 4 + size:
            break
        if m[0] == 24:  # KeyUpdate: its record must end with it (RFC 8446 5.1)
            if size != 1 or m[4] > 1 or left != 5 or not record_ends:
                return _OPEN_UNEXPECTED
            ib.hs_len = 0
            return _key_update_received(s, ob, ib, m[4])
        if m[0] != 4:  # not a NewSessionTicket: nothing else may come now
            return _OPEN_UNEXPECTED
        m += 4 + size
        left -= 4 + size
    if left:  # an incomplete message: kept for the next record
        if ib.hs == NULL:
            grown = <unsigned char*>malloc(_HS_MAX)
            if grown == NULL:
                return _OPEN_MEMORY
            ib.hs = grown
        memmove(ib.hs, m, left)
    ib.hs_len = left
    return 0


cdef int _next_record(void* s, OutBuf* ob, Inbound* ib, unsigned char* buf, size_t room,
                      size_t* delivered) noexcept nogil:
    """Open the first whole record in ib.data: its application data into buf (if `room`
    holds the record, else into ib.plain), counted in `delivered`. 1: one was opened,
    0: no whole record is there, -1: ib.error is set."""
    cdef unsigned char* rec = ib.data + ib.start
    cdef size_t avail = ib.end - ib.start
    cdef size_t body, n, k
    cdef unsigned char* out
    cdef unsigned char kind
    cdef int r
    if avail < 5:
        return 0
    body = (<size_t>rec[3] << 8) | rec[4]
    if rec[0] != 23 or rec[1] != 3 or body < _TAG + 1 or body > _MAX_BODY:
        ib.error = _OPEN_DECODE  # TLS 1.3 sends every record as application_data
        return -1
    if avail < 5 + body:
        return 0
    n = body - _TAG
    if room >= n:
        out = buf
    else:
        if ib.plain == NULL:
            ib.plain = <unsigned char*>malloc(_MAX_BODY)
            if ib.plain == NULL:
                ib.error = _OPEN_MEMORY
                return -1
        out = ib.plain
    if _open_one(ib.key, rec, body, out) < 0:
        ib.error = _OPEN_BAD_MAC
        return -1
    ib.start += 5 + body
    ib.records += 1
    k = n  # the content type is the last byte that is not zero padding (RFC 8446 5.4)
    while k and out[k - 1] == 0:
        k -= 1
    if k == 0:
        ib.error = _OPEN_UNEXPECTED
        return -1
    kind = out[k - 1]
    k -= 1
    if k > _RECORD:
        ib.error = _OPEN_OVERFLOW
        return -1
    if ib.hs_len and kind != 22:  # nothing between a handshake message's parts (RFC 8446 5.1)
        ib.error = _OPEN_UNEXPECTED
        return -1
    if kind == 23 and k:
        ib.idle_records = 0
        if out == buf:
            delivered[0] += k
        else:
            ib.pstart = 0
            ib.pend = k
        return 1
    ib.idle_records += 1
    if ib.idle_records > _IDLE_RECORDS:  # one call must not spin on records without data
        ib.error = _OPEN_UNEXPECTED
        return -1
    if kind == 23:
        r = 0  # an empty record
    elif kind == 22:
        r = _handshake_bytes(s, ob, ib, out, k, True) if k else _OPEN_UNEXPECTED
    elif kind == 21:
        if k != 2:
            r = _OPEN_DECODE
        elif out[1] == 0:  # close_notify
            ib.closed = 1
            r = 0
        elif out[1] == 90:  # user_canceled: OpenSSL ignores it in TLS 1.3 too
            r = 0
        else:
            ib.alert = out[1]
            r = _OPEN_ALERT
    else:
        r = _OPEN_UNEXPECTED
    if r:
        ib.error = r
        return -1
    return 1


cdef int _open_into(void* s, OutBuf* ob, unsigned char* buf, size_t size,
                    size_t* got) noexcept nogil:
    """read_into after the takeover: records opened into buf until it is full or the socket
    has nothing more. Returns read_into's status."""
    cdef Inbound* ib = ob.inbound
    cdef int fd = _get_fd(s)
    cdef size_t take
    cdef ssize_t r
    cdef int tries = 0
    cdef int code
    cdef unsigned char* grown
    while True:
        if ib.pend > ib.pstart:  # a record's plaintext that did not fit last time
            take = ib.pend - ib.pstart
            if take > size - got[0]:
                take = size - got[0]
            memcpy(buf + got[0], ib.plain + ib.pstart, take)
            ib.pstart += take
            got[0] += take
        if got[0] == size:
            return 0  # full; more may be waiting
        if ib.error:
            return _RECORD_ERROR
        if ib.closed:
            return _PEER_CLOSED
        code = _next_record(s, ob, ib, buf + got[0], size - got[0], got)
        if code:
            continue  # opened one (or failed: reported above, after what it delivered)
        if ib.eof:
            return _PEER_CLOSED  # FIN, without close_notify (as Go may close)
        if ib.data == NULL:
            ib.data = <unsigned char*>malloc(_IN_CAP)
            if ib.data == NULL:
                ib.error = _OPEN_MEMORY
                continue
            ib.cap = _IN_CAP
        if ib.cap - ib.end < 5 + _MAX_BODY and ib.start:  # room for a whole record
            memmove(ib.data, ib.data + ib.start, ib.end - ib.start)
            ib.end -= ib.start
            ib.start = 0
        r = recv(fd, ib.data + ib.end, ib.cap - ib.end, MSG_DONTWAIT)
        if r > 0:
            ib.end += <size_t>r
        elif r == 0:
            ib.eof = 1
        else:
            code = errno
            if code == EINTR and tries < _EINTR_RETRIES:
                tries += 1
            elif code == EAGAIN or code == EWOULDBLOCK:
                if ib.start == ib.end:  # an idle connection keeps no buffer
                    free(ib.data)
                    ib.data = NULL
                    ib.start = ib.end = ib.cap = 0
                return _WANT_READ
            else:
                ib.sys_errno = code
                ib.error = _OPEN_OS


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
    global _SSLSocketType, _SSLContextType, _bio_method_type, _bio_type
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
        _bio_method_type = <bio_method_type_fn>_symbol(lib, "BIO_method_type")
        _bind_sealing(lib)
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
    _bio_type = index | _BIO_TYPE_SOURCE_SINK
    _method = method


cdef void _bind_sealing(void* lib):
    """Bind SEAL_FUNCTIONS if every one is there, and take an SSL ex_data slot for secrets;
    else leave sealing off (sealing_bound() is False)."""
    global _set_keylog, _get_keylog, _set_ex, _get_ex, _version, _key_update_type
    global _key_update_call, _current_cipher, _cipher_id, _evp_new, _evp_free, _aes128gcm
    global _aes256gcm, _sha256, _sha384, _evp_init, _evp_update, _evp_final, _evp_ctrl, _hmac
    global _cleanse, _ex_index, _do_handshake
    cdef get_ex_new_index_fn new_index
    for name in SEAL_FUNCTIONS:
        if dlsym(lib, name.encode("ascii")) == NULL:
            return
    _set_keylog = <ctx_set_keylog_fn>dlsym(lib, b"SSL_CTX_set_keylog_callback")
    _get_keylog = <ctx_get_keylog_fn>dlsym(lib, b"SSL_CTX_get_keylog_callback")
    _set_ex = <ssl_set_ex_data_fn>dlsym(lib, b"SSL_set_ex_data")
    _get_ex = <ssl_get_ex_data_fn>dlsym(lib, b"SSL_get_ex_data")
    _version = <ssl_int_fn>dlsym(lib, b"SSL_version")
    _key_update_type = <ssl_int_fn>dlsym(lib, b"SSL_get_key_update_type")
    _key_update_call = <ssl_key_update_fn>dlsym(lib, b"SSL_key_update")
    _do_handshake = <ssl_shutdown_fn>dlsym(lib, b"SSL_do_handshake")
    _current_cipher = <ssl_get_cipher_fn>dlsym(lib, b"SSL_get_current_cipher")
    _cipher_id = <cipher_get_id_fn>dlsym(lib, b"SSL_CIPHER_get_id")
    _evp_new = <evp_ctx_new_fn>dlsym(lib, b"EVP_CIPHER_CTX_new")
    _evp_free = <evp_ctx_free_fn>dlsym(lib, b"EVP_CIPHER_CTX_free")
    _aes128gcm = <evp_get_fn>dlsym(lib, b"EVP_aes_128_gcm")
    _aes256gcm = <evp_get_fn>dlsym(lib, b"EVP_aes_256_gcm")
    _sha256 = <evp_get_fn>dlsym(lib, b"EVP_sha256")
    _sha384 = <evp_get_fn>dlsym(lib, b"EVP_sha384")
    _evp_init = <evp_init_fn>dlsym(lib, b"EVP_EncryptInit_ex")
    _evp_update = <evp_update_fn>dlsym(lib, b"EVP_EncryptUpdate")
    _evp_final = <evp_final_fn>dlsym(lib, b"EVP_EncryptFinal_ex")
    _evp_ctrl = <evp_ctrl_fn>dlsym(lib, b"EVP_CIPHER_CTX_ctrl")
    _hmac = <hmac_fn>dlsym(lib, b"HMAC")
    _cleanse = <cleanse_fn>dlsym(lib, b"OPENSSL_cleanse")
    new_index = <get_ex_new_index_fn>dlsym(lib, b"CRYPTO_get_ex_new_index")
    _ex_index = new_index(_CRYPTO_EX_INDEX_SSL, 0, NULL, NULL, NULL, _free_secret)
    _bind_opening(lib)


cdef void _bind_opening(void* lib):
    """Bind OPEN_FUNCTIONS if every one is there (after the sealing ones); else OpenSSL keeps
    reading every record (opening_bound() is False)."""
    global _set_msg_cb, _has_pending, _in_init, _get_shutdown, _dec_init, _dec_update
    global _dec_final, _open_bound, _rstate
    if _ex_index < 0:
        return
    for name in OPEN_FUNCTIONS:
        if dlsym(lib, name.encode("ascii")) == NULL:
            return
    _set_msg_cb = <ssl_set_msg_cb_fn>dlsym(lib, b"SSL_set_msg_callback")
    _has_pending = <ssl_int_fn>dlsym(lib, b"SSL_has_pending")
    _in_init = <ssl_int_fn>dlsym(lib, b"SSL_in_init")
    _get_shutdown = <ssl_int_fn>dlsym(lib, b"SSL_get_shutdown")
    _rstate = <ssl_str_fn>dlsym(lib, b"SSL_rstate_string")
    _dec_init = <evp_init_fn>dlsym(lib, b"EVP_DecryptInit_ex")
    _dec_update = <evp_update_fn>dlsym(lib, b"EVP_DecryptUpdate")
    _dec_final = <evp_final_fn>dlsym(lib, b"EVP_DecryptFinal_ex")
    _open_bound = True


def sealing_bound():
    """True when own record sealing can run here (load() bound every SEAL_FUNCTIONS symbol)."""
    return _ex_index >= 0


def set_sealing(bint enabled):
    """Let (or stop) connections taking the record layer over from now on; returns the old
    setting. Off: OpenSSL seals every record (FASTPF_OPENSSL_RECORDS=1, for comparison)."""
    global _seal_enabled
    old = _seal_enabled
    _seal_enabled = enabled
    return old


def opening_bound():
    """True when own record opening can run here (every OPEN_FUNCTIONS symbol is bound)."""
    return _open_bound


def set_opening(bint enabled):
    """Let (or stop) connections taking their reads over from now on; returns the old
    setting. Off: OpenSSL opens every record (FASTPF_OPENSSL_RECORDS=1, for comparison)."""
    global _open_enabled
    old = _open_enabled
    _open_enabled = enabled
    return old


def watch_reads(uintptr_t ssl):
    """Before the handshake: count the records OpenSSL opens under the server's application
    key (its message callback), so that reads can be taken over later. False where this
    cannot be done here (the connection's records stay with OpenSSL)."""
    cdef void* s = _checked(ssl)
    if not _open_bound:
        return False
    cdef Secret* sec = _secret_of(s)
    if sec == NULL:
        return False
    sec.watching = 1
    _set_msg_cb(s, _watch)
    return True


def set_open_from(unsigned long long n):
    """Plaintext read through OpenSSL before a connection may take its reads over (default
    256 KiB); returns the old value. Tests lower it to choose the takeover's moment."""
    global _OPEN_FROM
    old = _OPEN_FROM
    _OPEN_FROM = n
    return old


def set_records_per_key(unsigned long long n):
    """Records sealed under one key before our KeyUpdate (default 2^24); returns the old
    value. Tests lower it to watch key updates happen."""
    global _records_per_key
    if n < 1:
        raise ValueError("at least one record per key")
    old = _records_per_key
    _records_per_key = n
    return old


def capture_secrets(object context):
    """Have `context`'s connections hand their client application traffic secret to us (the
    key-log callback; one set before, CPython's SSLKEYLOGFILE writer, is still called). False
    where this cannot be done: those connections leave every record to OpenSSL."""
    global _prev_keylog
    cdef uintptr_t ctx = ctx_of(context)
    if ctx == 0 or _ex_index < 0:
        return False
    cdef keylog_cb current = _get_keylog(<void*>ctx)
    if current == _keylog or current == _keylog_chained:
        return True
    if current == NULL:
        _set_keylog(<void*>ctx, _keylog)
        return True
    if _prev_keylog != NULL and _prev_keylog != current:
        return False  # one callback to chain to, not two
    _prev_keylog = current
    _set_keylog(<void*>ctx, _keylog_chained)
    return True


def expand_label(bytes secret not None, bytes label not None, size_t size):
    """HKDF-Expand-Label(secret, label, "", size) (RFC 8446 7.1) with SHA-256 for a 32-byte
    secret, SHA-384 for a 48-byte one: the derivation the sealing uses, for test vectors."""
    if _ex_index < 0:
        raise RuntimeError("own record sealing is not bound (load)")
    cdef const void* md
    if len(secret) == 32:
        md = _sha256()
    elif len(secret) == 48:
        md = _sha384()
    else:
        raise ValueError("a 32- or 48-byte secret")
    if size > <size_t>len(secret) or len(label) > 32:
        raise ValueError("one HMAC block, a label of at most 32 bytes")
    cdef unsigned char out[48]
    if _expand_label(md, secret, len(secret), label, out, size) < 0:
        raise RuntimeError("HMAC failed")
    return out[:size]


def request_key_update(uintptr_t ssl, bint peer_too=True):
    """SSL_key_update(ssl, ...): the next record OpenSSL writes on `ssl` is a KeyUpdate,
    asking the peer to update too unless `peer_too` is False (tests play such a peer)."""
    cdef void* s = _checked(ssl)
    cdef int kind = _SSL_KEY_UPDATE_REQUESTED if peer_too else _SSL_KEY_UPDATE_NOT_REQUESTED
    if _key_update_call == NULL or _key_update_call(s, kind) != 1:
        raise RuntimeError("SSL_key_update failed")


def sealing(uintptr_t ssl):
    """(taken over, records sealed under the current key, KeyUpdates we sent)."""
    cdef OutBuf* ob = _out(_checked(ssl))
    if ob.sealer == NULL:
        return False, 0, 0
    return True, ob.sealer.seq, ob.sealer.updates


def opening(uintptr_t ssl):
    """(taken over, records we opened, the server's KeyUpdates we followed)."""
    cdef OutBuf* ob = _out(_checked(ssl))
    if ob.inbound == NULL:
        return False, 0, 0
    return True, ob.inbound.records, ob.inbound.key.updates


_OPEN_ERRORS = {
    _OPEN_BAD_MAC: "a TLS record from the server failed authentication (bad_record_mac)",
    _OPEN_DECODE: "a malformed TLS record from the server",
    _OPEN_UNEXPECTED: "an unexpected TLS message from the server",
    _OPEN_MEMORY: "out of memory for TLS records",
    _OPEN_OVERFLOW: "an oversized TLS record or message from the server",
    _OPEN_ANSWER: "cannot follow or answer the server's TLS KeyUpdate",
}


def read_error(uintptr_t ssl):
    """Why read_into returned RECORD_ERROR, as the exception to raise (None if it did not)."""
    cdef OutBuf* ob = _out(_checked(ssl))
    cdef Inbound* ib = ob.inbound
    if ib == NULL or not ib.error:
        return None
    if ib.error == _OPEN_OS:
        return OSError(ib.sys_errno, _os.strerror(ib.sys_errno))
    if ib.error == _OPEN_ALERT:
        return ConnectionError(f"the server ended TLS with alert {ib.alert}")
    return ConnectionError(_OPEN_ERRORS.get(ib.error, "TLS record error"))


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


cdef OutBuf* _out_of(void* s) noexcept nogil:
    """The write BIO's state if it is ours (attach_writer), else NULL."""
    cdef void* bio = _get_wbio(s)
    if bio == NULL or _bio_method_type(bio) != _bio_type:
        return NULL
    return <OutBuf*>_bio_get_data(bio)


cdef OutBuf* _out(void* s) except NULL:
    cdef OutBuf* ob = _out_of(s)
    if ob == NULL:
        raise ValueError("the SSL object has no fastpf write BIO (attach_writer)")
    return ob


cdef int _raise_seal_failure(int code) except -1:
    if code == -1:
        raise MemoryError("TLS output buffer")
    if code == -3:
        raise RuntimeError("TLS: cannot answer the peer's KeyUpdate")
    raise RuntimeError("TLS record sealing failed")


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
    never waits for, or reads, the peer's (after the takeover: our own sealed alert). Returns
    SSL_shutdown's result (errors cleared), 1 for our alert."""
    cdef void* s = _checked(ssl)
    cdef OutBuf* ob = _out_of(s)
    cdef unsigned char alert[2]
    cdef int r
    if ob != NULL and ob.sealer != NULL:
        if not ob.sealed_close:
            alert[0] = 1  # warning
            alert[1] = 0  # close_notify
            r = _seal(ob, 21, alert, 2)
            if r:
                _raise_seal_failure(r)
            ob.sealed_close = 1
        return 1
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
    """Decrypt into `buf` until it is full or the socket has nothing more. Returns (bytes
    read, status): status 0 when `buf` is full (more may be waiting), SSL_ERROR_WANT_READ when
    the socket has nothing more now; else, while OpenSSL reads, the SSL_get_error code of the
    call that stopped the loop, and after the read takeover PEER_CLOSED or RECORD_ERROR
    (read_error), once the bytes before are delivered."""
    cdef void* s = _checked(ssl)
    cdef size_t size = <size_t>buf.shape[0]
    cdef size_t got = 0
    cdef size_t n = 0
    cdef int ret
    cdef int status = 0
    if size == 0:
        return 0, 0
    cdef unsigned char* p = &buf[0]
    cdef OutBuf* ob = _out_of(s)
    if ob != NULL and ob.inbound != NULL:
        with nogil:
            status = _open_into(s, ob, p, size, &got)
    else:
        _clear_error()
        while got < size:
            n = 0
            ret = _read_ex(s, p + got, size - got, &n)
            if ret != 1:
                status = _get_error(s, ret)
                break
            got += n
        if ob != NULL and not ob.read_barred and _open_bound:
            ob.plain_read += got
            if status == _WANT_READ and ob.plain_read >= _OPEN_FROM:
                _try_open(s, ob)
    cdef int r
    if ob != NULL and ob.sealer != NULL:
        if ob.rogue:
            raise RuntimeError("OpenSSL wrote a record after the record layer was taken over")
        r = _answer_key_updates(s, ob)  # before any record of ours that follows (RFC 8446 4.6.3)
        if r:
            _raise_seal_failure(r)
    return got, status


def encrypt(uintptr_t ssl, const unsigned char[::1] data not None):
    """Encrypt all of `data` into the write BIO (flush() sends it). Returns 0, or the
    SSL_get_error code of a failure (the caller ends the connection). The first write of 16 KiB
    or more on a TLS 1.3 AES-GCM connection takes the record layer over (see _take_over)."""
    cdef void* s = _checked(ssl)
    cdef size_t size = <size_t>data.shape[0]
    cdef size_t done = 0
    cdef size_t n = 0
    cdef int ret, r
    if size == 0:
        return 0
    cdef OutBuf* ob = _out(s)
    cdef const unsigned char* p = &data[0]
    if ob.sealer == NULL and not ob.barred and size >= _SEAL_FROM and _ex_index >= 0:
        _take_over(s, ob)
    if ob.sealer != NULL:
        if ob.rogue or ob.sealed_close:
            raise RuntimeError("TLS write after the end of the record stream")
        with nogil:
            r = _answer_key_updates(s, ob)
            if not r:
                r = _seal(ob, 23, p, size)
        if r:
            _raise_seal_failure(r)
        return 0
    if _ex_index >= 0 and not ob.barred and _key_update_type(s) != _SSL_KEY_UPDATE_NONE:
        ob.barred = 1  # this write sends OpenSSL's KeyUpdate: the key we know is gone
        _drop_secret(s, False)
    _clear_error()
    ob.app_write = 1
    while done < size:
        n = 0
        ret = _write_ex(s, p + done, size - done, &n)
        if ret != 1:
            ob.app_write = 0
            if ob.failed:
                raise MemoryError("TLS output buffer")
            return _get_error(s, ret)
        done += n
    ob.app_write = 0
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
