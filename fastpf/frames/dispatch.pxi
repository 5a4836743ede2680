# Part of fastpf/_frames.pyx (included there; not compiled on its own).
# The compiled DATA dispatch: a run of SPDY DATA frames goes from the receive buffer straight to
# the relays' pumps (fastpf/_pump.pyx), with no frame object, no view and no Python int per frame.

def deliver_data(SpdyDecoder dec not None, SinkTable sinks not None):
    """Deliver the DATA frames at the front of `dec`'s buffer that are complete, non-empty,
    without flags, and for a stream in `sinks`, each straight to its RelayCore. Stops at the
    first frame that is anything else (a control frame, a FIN, an empty or partial frame, a
    stream not in the table, an oversized frame), leaving it for next_frame(), which applies the
    session's rules to it. Returns the payload bytes delivered.

    The pump either sends the bytes at once or copies what the socket did not take, so no view
    of the buffer survives the call: delivered frames never hold the buffer (release())."""
    cdef Py_ssize_t total = 0
    cdef Py_ssize_t avail, size
    cdef const unsigned char* p
    cdef uint32_t w0, w1, length, sid
    cdef RelayCore core
    if dec._failed or not len(sinks):
        return 0
    while True:  # bounded: every pass consumes a frame of the bytes received, or stops
        avail = dec._end - dec._start
        if avail < 8:
            break
        p = dec._ptr + dec._start
        w0 = load_be32(p)
        if w0 & 0x80000000u:
            break  # a control frame
        w1 = load_be32(p + 4)
        if w1 >> 24:
            break  # FIN (or a flag nobody defined): the session's stream table decides
        length = w1 & 0xFFFFFF
        if length == 0 or length > <uint32_t>dec._max_data_length:
            break
        size = 8 + <Py_ssize_t>length
        if avail < size:
            break
        sid = w0 & C_STREAM_ID_MASK
        core = sinks.lookup(sid)
        if core is None:
            break
        # Consumed first: the bytes stay where they are until the next read into the buffer,
        # which cannot happen during deliver().
        dec._consumed(size)
        core.deliver(<const char*>(p + 8), <Py_ssize_t>length)
        total += length
    return total


def deliver_channel_data(WsDecoder dec not None, SinkTable sinks not None):
    """The same for the v4 channel protocol: whole binary WebSocket messages (one frame, FIN
    set, not inside a fragmented message) whose channel byte names a channel in `sinks` (keyed
    by channel number) go, minus that byte, straight to its RelayCore, unmasked in place when
    masked. Anything else (control frames, fragments, text, an unknown channel, a message with
    no data byte, an oversized or partial frame) is left for next_frame(), which checks it.
    Returns the payload bytes delivered."""
    cdef Py_ssize_t total = 0
    cdef Py_ssize_t avail, hlen, size
    cdef const unsigned char* p
    cdef unsigned char b1
    cdef uint64_t length
    cdef unsigned int channel
    cdef RelayCore core
    if dec._failed or dec._msg_opcode >= 0 or not len(sinks):
        return 0
    while True:  # bounded: every pass consumes a frame of the bytes received, or stops
        avail = dec._end - dec._start
        if avail < 2:
            break
        p = dec._ptr + dec._start
        if p[0] != 0x82:  # FIN + BINARY, no RSV bits: a whole binary message
            break
        b1 = p[1]
        if ((b1 & 0x80) != 0) != dec._expect_masked:
            break  # next_frame() reports it
        length = b1 & 0x7F
        hlen = 2
        if length == 126:
            if avail < 4:
                break
            length = load_be16(p + 2)
            hlen = 4
        elif length == 127:
            if avail < 10:
                break
            length = load_be64(p + 2)
            if length >> 63:
                break
            hlen = 10
        if dec._expect_masked:
            hlen += 4
        if length < 2 or length > <uint64_t>dec._max_message:
            break
        size = hlen + <Py_ssize_t>length
        if avail < size:
            break
        channel = p[hlen]
        if dec._expect_masked:
            channel ^= p[hlen - 4]  # the first key byte: nothing is unmasked before we commit
        core = sinks.lookup(channel)
        if core is None:
            break
        if dec._expect_masked:
            mask_bytes(dec._ptr + dec._start + hlen, <Py_ssize_t>length, p + hlen - 4, 0)
        dec._consumed(size)
        core.deliver(<const char*>(p + hlen + 1), <Py_ssize_t>length - 1)
        total += <Py_ssize_t>length - 1
    return total
