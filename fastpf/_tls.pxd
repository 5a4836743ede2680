# cython: language_level=3
# The compiled TLS record loops' C-level contract (fastpf/_tls.pyx). OpenSSL is reached through
# function pointers bound at run time (no header or library at build time); these are their
# C types. The Python API (fastpf/_tls.pyi) is what fastpf.transport.tls uses.

ctypedef int (*ssl_read_ex_fn)(void* ssl, void* buf, size_t num, size_t* readbytes) noexcept nogil
ctypedef int (*ssl_write_ex_fn)(void* ssl, const void* buf, size_t num, size_t* written) noexcept nogil
ctypedef int (*ssl_get_error_fn)(const void* ssl, int ret) noexcept nogil
ctypedef void (*err_clear_error_fn)() noexcept nogil
ctypedef void* (*ssl_get_wbio_fn)(const void* ssl) noexcept nogil
ctypedef void (*ssl_set0_wbio_fn)(void* ssl, void* bio) noexcept nogil
ctypedef int (*bio_get_new_index_fn)() noexcept nogil
ctypedef void* (*bio_meth_new_fn)(int type, const char* name) noexcept nogil
ctypedef int (*bio_write_ex_cb)(void* bio, const char* data, size_t n, size_t* written) noexcept nogil
ctypedef long (*bio_ctrl_cb)(void* bio, int cmd, long num, void* ptr) noexcept nogil
ctypedef int (*bio_life_cb)(void* bio) noexcept nogil
ctypedef int (*bio_meth_set_write_ex_fn)(void* meth, bio_write_ex_cb cb) noexcept nogil
ctypedef int (*bio_meth_set_ctrl_fn)(void* meth, bio_ctrl_cb cb) noexcept nogil
ctypedef int (*bio_meth_set_life_fn)(void* meth, bio_life_cb cb) noexcept nogil
ctypedef void* (*bio_new_fn)(const void* meth) noexcept nogil
ctypedef void (*bio_set_data_fn)(void* bio, void* data) noexcept nogil
ctypedef void* (*bio_get_data_fn)(void* bio) noexcept nogil
ctypedef void (*bio_set_init_fn)(void* bio, int init) noexcept nogil
ctypedef int (*ssl_get_fd_fn)(const void* ssl) noexcept nogil
ctypedef void* (*ssl_get_ctx_fn)(const void* ssl) noexcept nogil
ctypedef long (*ssl_ctrl_fn)(void* ssl, int cmd, long larg, void* parg) noexcept nogil
ctypedef void (*ssl_set_read_len_fn)(void* ssl, size_t len) noexcept nogil
ctypedef unsigned long long (*ssl_set_options_fn)(void* ssl, unsigned long long op) noexcept nogil
ctypedef int (*ssl_shutdown_fn)(void* ssl) noexcept nogil
ctypedef int (*ctx_set_suites_fn)(void* ctx, const char* suites) noexcept nogil
# own record sealing (TLS 1.3 AES-GCM): secrets from the key log, cipher and HMAC from libcrypto
ctypedef void (*keylog_cb)(const void* ssl, const char* line) noexcept nogil
ctypedef void (*ctx_set_keylog_fn)(void* ctx, keylog_cb cb) noexcept nogil
ctypedef keylog_cb (*ctx_get_keylog_fn)(const void* ctx) noexcept nogil
ctypedef void (*ex_free_cb)(void* parent, void* ptr, void* ad, int idx, long argl,
                            void* argp) noexcept nogil
ctypedef int (*get_ex_new_index_fn)(int class_index, long argl, void* argp, void* new_func,
                                    void* dup_func, ex_free_cb free_func) noexcept nogil
ctypedef int (*ssl_set_ex_data_fn)(void* ssl, int idx, void* data) noexcept nogil
ctypedef void* (*ssl_get_ex_data_fn)(const void* ssl, int idx) noexcept nogil
ctypedef int (*ssl_int_fn)(const void* ssl) noexcept nogil
ctypedef int (*ssl_key_update_fn)(void* ssl, int updatetype) noexcept nogil
ctypedef const void* (*ssl_get_cipher_fn)(const void* ssl) noexcept nogil
ctypedef unsigned int (*cipher_get_id_fn)(const void* cipher) noexcept nogil
ctypedef void* (*evp_ctx_new_fn)() noexcept nogil
ctypedef void (*evp_ctx_free_fn)(void* ctx) noexcept nogil
ctypedef const void* (*evp_get_fn)() noexcept nogil
ctypedef int (*evp_init_fn)(void* ctx, const void* cipher, void* engine, const unsigned char* key,
                            const unsigned char* iv) noexcept nogil
ctypedef int (*evp_update_fn)(void* ctx, unsigned char* out, int* outl, const unsigned char* inp,
                              int inl) noexcept nogil
ctypedef int (*evp_final_fn)(void* ctx, unsigned char* out, int* outl) noexcept nogil
ctypedef int (*evp_ctrl_fn)(void* ctx, int type, int arg, void* ptr) noexcept nogil
ctypedef unsigned char* (*hmac_fn)(const void* md, const void* key, int key_len,
                                   const unsigned char* data, size_t n, unsigned char* out,
                                   unsigned int* out_len) noexcept nogil
ctypedef void (*cleanse_fn)(void* p, size_t n) noexcept nogil

# own record opening (TLS 1.3 AES-GCM reads): OpenSSL's record count, its decrypt functions
ctypedef void (*msg_cb)(int write_p, int version, int content_type, const void* buf, size_t n,
                        void* ssl, void* arg) noexcept nogil
ctypedef void (*ssl_set_msg_cb_fn)(void* ssl, msg_cb cb) noexcept nogil
ctypedef const char* (*ssl_str_fn)(const void* ssl) noexcept nogil

# the application traffic secrets the key-log callback caught, and the records OpenSSL opened
# under the server's (SSL ex_data until both directions have used or refused them)
cdef struct Secret:
    unsigned char client[48]
    size_t client_size
    unsigned char server[48]
    size_t server_size
    unsigned long long server_records  # records OpenSSL read since the server's Finished
    int counting  # the server's Finished was read: server_records counts
    int server_moved  # OpenSSL read a KeyUpdate: the server key we know is gone
    int client_done  # the write side took its secret or refused it (wiped)
    int server_done  # the read side took its secret or refused it (wiped)
    int watching  # our message callback is on the connection (watch_reads)
    int last_inner  # the content type of the last record OpenSSL opened

# one direction's AES-GCM record key after a takeover: ours (sealing) or the server's (opening)
cdef struct TrafficKey:
    void* cipher  # EVP_CIPHER_CTX*, keyed
    const void* md  # the suite's hash (HKDF for KeyUpdate)
    size_t key_size
    unsigned char secret[48]  # the current traffic secret (hash-sized)
    size_t secret_size
    unsigned char iv[12]
    unsigned long long seq  # records sealed or opened with the current key
    unsigned long long updates  # KeyUpdates sent (sealing) or received (opening)
    int owed  # KeyUpdate answers we owe the peer (sealing side)
    int decrypt  # this key opens records

# own record opening after the read takeover: ciphertext received, plaintext that did not fit
# the caller's buffer, and a handshake message split across records
cdef struct Inbound:
    TrafficKey* key
    unsigned char* data  # ciphertext, data[start:end] of cap bytes
    size_t start
    size_t end
    size_t cap
    unsigned char* plain  # one record's plaintext, plain[pstart:pend]
    size_t pstart
    size_t pend
    unsigned char* hs  # the start of a handshake message, hs_len bytes
    size_t hs_len
    unsigned long long records  # records opened (probe)
    int eof  # the peer's FIN: no more ciphertext
    int closed  # the peer's close_notify: nothing after it counts
    int error  # an _OPEN_* failure, reported once the data before it is delivered
    int alert  # the peer's alert description (error == _OPEN_ALERT)
    int sys_errno  # recv's errno (error == _OPEN_OS)
    int idle_records  # records in a row that brought no data (bounded: _IDLE_RECORDS)

# the write BIO's state: ciphertext waiting for send(2), data[start:end] of cap bytes
cdef struct OutBuf:
    char* data
    size_t start
    size_t end
    size_t cap
    int failed
    # the records OpenSSL wrote through this BIO since the handshake (see _count_records)
    unsigned long long records
    size_t rec_left  # body bytes of the current record still to come
    unsigned char hdr[5]
    int hdr_got
    int app_write  # inside encrypt()'s SSL_write: the records are application data
    int barred  # a record we cannot account for went through: never take over
    int rogue  # after the takeover OpenSSL wrote a record that is no KeyUpdate or alert
    int sealed_close  # our close_notify is sealed: nothing more is
    TrafficKey* sealer  # not NULL: records are ours; OpenSSL's are dropped (see _out_write)
    # reading: the plaintext OpenSSL delivered, and our own opening once it is taken over
    unsigned long long plain_read
    int read_barred  # the server's records stay with OpenSSL for good
    Inbound* inbound  # not NULL: OpenSSL reads nothing more (see read_into)
