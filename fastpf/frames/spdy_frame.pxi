# Part of fastpf/_frames.pyx (included there; not compiled on its own).
# The decoded SPDY frame record.

_TYPE_NAMES = {0: "DATA", 1: "SYN_STREAM", 2: "SYN_REPLY", 3: "RST_STREAM", 4: "SETTINGS",
               6: "PING", 7: "GOAWAY", 8: "HEADERS", 9: "WINDOW_UPDATE"}


@cython.freelist(64)
cdef class SpdyFrame:
    """One decoded SPDY frame (read-only). Fields not used by its type are 0 / None."""

    def __init__(self, int type=0, int flags=0, uint32_t stream_id=0, payload=None,
                 headers=None, uint32_t assoc_id=0, int priority=0, int slot=0,
                 uint32_t status=0, uint32_t ping_id=0, uint32_t last_good_id=0,
                 uint32_t delta=0, settings=None, int version=3):
        self.type = type
        self.flags = flags
        self.stream_id = stream_id
        self.payload = payload
        self.headers = headers
        self.assoc_id = assoc_id
        self.priority = priority
        self.slot = slot
        self.status = status
        self.ping_id = ping_id
        self.last_good_id = last_good_id
        self.delta = delta
        self.settings = settings
        self.version = version

    def __repr__(self):
        name = _TYPE_NAMES.get(self.type, str(self.type))
        if self.type == C_DATA:
            n = len(self.payload) if self.payload is not None else 0
            detail = f"stream_id={self.stream_id}, length={n}"
        elif self.type in (C_SYN_STREAM, C_SYN_REPLY, C_HEADERS):
            detail = f"stream_id={self.stream_id}, headers={self.headers!r}"
        elif self.type == C_RST_STREAM:
            detail = f"stream_id={self.stream_id}, status={self.status}"
        elif self.type == C_PING:
            detail = f"ping_id={self.ping_id}"
        elif self.type == C_GOAWAY:
            detail = f"last_good_id={self.last_good_id}, status={self.status}"
        elif self.type == C_WINDOW_UPDATE:
            detail = f"stream_id={self.stream_id}, delta={self.delta}"
        else:
            detail = f"settings={self.settings!r}"
        return f"<SpdyFrame {name} flags={self.flags} {detail}>"
