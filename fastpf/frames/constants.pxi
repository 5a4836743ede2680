# Part of fastpf/_frames.pyx (included there; not compiled on its own).
# Wire constants (PROTOCOL.md 4.1, RFC 6455 5.2), the SPDY header dictionary and the
# module-level objects the other parts share.

DATA = 0
SYN_STREAM = 1
SYN_REPLY = 2
RST_STREAM = 3
SETTINGS = 4
PING = 6
GOAWAY = 7
HEADERS = 8
WINDOW_UPDATE = 9

FLAG_FIN = 1
FLAG_UNIDIRECTIONAL = 2
FLAG_CLEAR_SETTINGS = 1

RST_PROTOCOL_ERROR = 1
RST_INVALID_STREAM = 2
RST_REFUSED_STREAM = 3
RST_UNSUPPORTED_VERSION = 4
RST_CANCEL = 5
RST_INTERNAL_ERROR = 6
RST_FLOW_CONTROL_ERROR = 7
RST_STREAM_IN_USE = 8
RST_STREAM_ALREADY_CLOSED = 9
RST_INVALID_CREDENTIALS = 10
RST_FRAME_TOO_LARGE = 11

GOAWAY_OK = 0
GOAWAY_PROTOCOL_ERROR = 1
GOAWAY_INTERNAL_ERROR = 2

MAX_DATA_LENGTH = 0xFFFFFF

WS_CONT = 0
WS_TEXT = 1
WS_BINARY = 2
WS_CLOSE = 8
WS_PING = 9
WS_PONG = 10

# RFC 6455 7.4.1 close codes the port-forward sessions send or check (1005/1006 never travel).
WS_CLOSE_NORMAL = 1000
WS_CLOSE_GOING_AWAY = 1001
WS_CLOSE_PROTOCOL_ERROR = 1002
WS_CLOSE_UNSUPPORTED_DATA = 1003
WS_CLOSE_INVALID_PAYLOAD = 1007
WS_CLOSE_POLICY_VIOLATION = 1008
WS_CLOSE_MESSAGE_TOO_BIG = 1009
WS_CLOSE_INTERNAL_ERROR = 1011

# Longest frame headers: a WebSocket header with a 64-bit length and a mask key; a SPDY header.
WS_MAX_HEADER_LENGTH = 14
SPDY_HEADER_LENGTH = 8

# SPDY/3 header-compression dictionary: draft 3 section 2.6.10.1, byte-identical to
# moby/spdystream spdy/dictionary.go. 1423 bytes, Adler-32 0xE3C6A7C2 (the zlib DICTID every
# kubectl header block names), SHA-256 51d27341...407f02; tests pin all three.
SPDY_DICTIONARY = (
    b"\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put"
    b"\x00\x00\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eacc"
    b"ept-charset\x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00"
    b"\x00\x0daccept-ranges\x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthori"
    b"zation\x00\x00\x00\x0dcache-control\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent"
    b"-base\x00\x00\x00\x10content-encoding\x00\x00\x00\x10content-language\x00\x00\x00"
    b"\x0econtent-length\x00\x00\x00\x10content-location\x00\x00\x00\x0bcontent-md5\x00"
    b"\x00\x00\x0dcontent-range\x00\x00\x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00"
    b"\x00\x04etag\x00\x00\x00\x06expect\x00\x00\x00\x07expires\x00\x00\x00\x04from\x00"
    b"\x00\x00\x04host\x00\x00\x00\x08if-match\x00\x00\x00\x11if-modified-since\x00\x00"
    b"\x00\x0dif-none-match\x00\x00\x00\x08if-range\x00\x00\x00\x13if-unmodified-since\x00"
    b"\x00\x00\x0dlast-modified\x00\x00\x00\x08location\x00\x00\x00\x0cmax-forwards\x00"
    b"\x00\x00\x06pragma\x00\x00\x00\x12proxy-authenticate\x00\x00\x00\x13proxy-authorizat"
    b"ion\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-after\x00\x00"
    b"\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\x00\x00\x00\x11transfer-enco"
    b"ding\x00\x00\x00\x07upgrade\x00\x00\x00\x0auser-agent\x00\x00\x00\x04vary\x00\x00"
    b"\x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10www-authenticate\x00\x00\x00\x06me"
    b"thod\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\x06200 OK\x00\x00\x00\x07v"
    b"ersion\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\x00"
    b"\x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06origin1001012012022052063003"
    b"02303304305306307402405406407408409410411412413414415416417502504505203 Non-Authorit"
    b"ative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized4"
    b"03 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Una"
    b"vailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu"
    b", Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,"
    b"application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,s"
    b"dchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)

cdef bytes _DICT = SPDY_DICTIONARY
cdef object _EMPTY_VIEW = memoryview(b"")
cdef object _Z_SYNC_FLUSH = _zlib.Z_SYNC_FLUSH
cdef object _ZLIB_ERROR = _zlib.error
cdef object _SpdySessionError = SpdySessionError
cdef object _WebSocketError = WebSocketError

# Never offer less free space than this to a read (BufferedProtocol asks with sizehint -1).
cdef enum:
    _MIN_READ_CAP = 65536
    _MIN_BUFFER = 64
    # A frame with at least this much already received is read exactly up to its end, so the
    # next frame starts a read of its own at the front of the buffer instead of being moved
    # there by compaction (a copy of up to a whole frame per read with 256 KiB frames). Below
    # it, moving the partial frame costs less than the extra read (kubelet's 32 KiB frames).
    _EXACT_MIN = 65536
