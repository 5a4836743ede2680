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

# the write BIO's state: ciphertext waiting for send(2), data[start:end] of cap bytes
cdef struct OutBuf:
    char* data
    size_t start
    size_t end
    size_t cap
    int failed
