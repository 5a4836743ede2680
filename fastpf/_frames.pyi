"""Type stub for the compiled frame layer (fastpf/_frames.pyx); see docs/ARCHITECTURE.md."""

from collections.abc import Iterable, Mapping
from typing import Final, TypeAlias

from typing_extensions import Buffer, disjoint_base

from fastpf._pump import SinkTable
from fastpf.errors import SpdySessionError, WebSocketError

__all__ = [
    "DATA",
    "SYN_STREAM",
    "SYN_REPLY",
    "RST_STREAM",
    "SETTINGS",
    "PING",
    "GOAWAY",
    "HEADERS",
    "WINDOW_UPDATE",
    "FLAG_FIN",
    "FLAG_UNIDIRECTIONAL",
    "FLAG_CLEAR_SETTINGS",
    "RST_PROTOCOL_ERROR",
    "RST_INVALID_STREAM",
    "RST_REFUSED_STREAM",
    "RST_UNSUPPORTED_VERSION",
    "RST_CANCEL",
    "RST_INTERNAL_ERROR",
    "RST_FLOW_CONTROL_ERROR",
    "RST_STREAM_IN_USE",
    "RST_STREAM_ALREADY_CLOSED",
    "RST_INVALID_CREDENTIALS",
    "RST_FRAME_TOO_LARGE",
    "GOAWAY_OK",
    "GOAWAY_PROTOCOL_ERROR",
    "GOAWAY_INTERNAL_ERROR",
    "MAX_DATA_LENGTH",
    "SPDY_DICTIONARY",
    "WS_CONT",
    "WS_TEXT",
    "WS_BINARY",
    "WS_CLOSE",
    "WS_PING",
    "WS_PONG",
    "WS_CLOSE_NORMAL",
    "WS_CLOSE_GOING_AWAY",
    "WS_CLOSE_PROTOCOL_ERROR",
    "WS_CLOSE_UNSUPPORTED_DATA",
    "WS_CLOSE_INVALID_PAYLOAD",
    "WS_CLOSE_POLICY_VIOLATION",
    "WS_CLOSE_MESSAGE_TOO_BIG",
    "WS_CLOSE_INTERNAL_ERROR",
    "WS_MAX_HEADER_LENGTH",
    "SPDY_HEADER_LENGTH",
    "SpdyFrame",
    "SpdyDecoder",
    "SpdyEncoder",
    "HeaderCompressor",
    "HeaderDecompressor",
    "data_header",
    "pack_data_header",
    "encode_header_block",
    "decode_header_block",
    "WsFrame",
    "WsDecoder",
    "ws_frame_header",
    "ws_encode",
    "mask_inplace",
    "new_mask_key",
    "alloc_buffer",
    "buffer_exported",
    "buffer_exported_portable",
    "ws_close_payload",
    "parse_close_payload",
    "channel_encode",
    "channel_decode",
    "deliver_data",
    "deliver_channel_data",
]

DATA: Final = 0
SYN_STREAM: Final = 1
SYN_REPLY: Final = 2
RST_STREAM: Final = 3
SETTINGS: Final = 4
PING: Final = 6
GOAWAY: Final = 7
HEADERS: Final = 8
WINDOW_UPDATE: Final = 9

FLAG_FIN: Final = 1
FLAG_UNIDIRECTIONAL: Final = 2
FLAG_CLEAR_SETTINGS: Final = 1

RST_PROTOCOL_ERROR: Final = 1
RST_INVALID_STREAM: Final = 2
RST_REFUSED_STREAM: Final = 3
RST_UNSUPPORTED_VERSION: Final = 4
RST_CANCEL: Final = 5
RST_INTERNAL_ERROR: Final = 6
RST_FLOW_CONTROL_ERROR: Final = 7
RST_STREAM_IN_USE: Final = 8
RST_STREAM_ALREADY_CLOSED: Final = 9
RST_INVALID_CREDENTIALS: Final = 10
RST_FRAME_TOO_LARGE: Final = 11

GOAWAY_OK: Final = 0
GOAWAY_PROTOCOL_ERROR: Final = 1
GOAWAY_INTERNAL_ERROR: Final = 2

MAX_DATA_LENGTH: Final = 0xFFFFFF
SPDY_DICTIONARY: Final[bytes]

WS_CONT: Final = 0
WS_TEXT: Final = 1
WS_BINARY: Final = 2
WS_CLOSE: Final = 8
WS_PING: Final = 9
WS_PONG: Final = 10

WS_CLOSE_NORMAL: Final = 1000
WS_CLOSE_GOING_AWAY: Final = 1001
WS_CLOSE_PROTOCOL_ERROR: Final = 1002
WS_CLOSE_UNSUPPORTED_DATA: Final = 1003
WS_CLOSE_INVALID_PAYLOAD: Final = 1007
WS_CLOSE_POLICY_VIOLATION: Final = 1008
WS_CLOSE_MESSAGE_TOO_BIG: Final = 1009
WS_CLOSE_INTERNAL_ERROR: Final = 1011

WS_MAX_HEADER_LENGTH: Final = 14
SPDY_HEADER_LENGTH: Final = 8

_HeaderValue: TypeAlias = str | bytes | int | list[str] | tuple[str, ...]
_HeadersIn: TypeAlias = Mapping[str, _HeaderValue] | Iterable[tuple[str, _HeaderValue]] | None

@disjoint_base
class _FrameBuffer:
    def get_buffer(self, sizehint: int = -1) -> memoryview: ...
    def buffer_updated(self, nbytes: int) -> None: ...
    def feed(self, data: Buffer) -> None: ...
    def release(self) -> None: ...
    @property
    def buffered(self) -> int: ...

@disjoint_base
class SpdyFrame:
    @property
    def type(self) -> int: ...
    @property
    def flags(self) -> int: ...
    @property
    def stream_id(self) -> int: ...
    @property
    def payload(self) -> memoryview | None: ...
    @property
    def headers(self) -> dict[str, str] | None: ...
    @property
    def assoc_id(self) -> int: ...
    @property
    def priority(self) -> int: ...
    @property
    def slot(self) -> int: ...
    @property
    def status(self) -> int: ...
    @property
    def ping_id(self) -> int: ...
    @property
    def last_good_id(self) -> int: ...
    @property
    def delta(self) -> int: ...
    @property
    def settings(self) -> list[tuple[int, int, int]] | None: ...
    @property
    def version(self) -> int: ...
    def __init__(
        self,
        type: int = 0,
        flags: int = 0,
        stream_id: int = 0,
        payload: memoryview | None = None,
        headers: dict[str, str] | None = None,
        assoc_id: int = 0,
        priority: int = 0,
        slot: int = 0,
        status: int = 0,
        ping_id: int = 0,
        last_good_id: int = 0,
        delta: int = 0,
        settings: list[tuple[int, int, int]] | None = None,
        version: int = 3,
    ) -> None: ...

@disjoint_base
class SpdyDecoder(_FrameBuffer):
    @property
    def error(self) -> SpdySessionError | None: ...
    def __init__(
        self,
        max_header_block: int = 1 << 20,
        buffer_size: int = 256 * 1024,
        *,
        max_data_length: int = 0xFFFFFF,
    ) -> None: ...
    def next_frame(self) -> SpdyFrame | None: ...
    @property
    def pending_data_stream(self) -> int: ...
    def feed_borrowed(self, payload: Buffer) -> None: ...

@disjoint_base
class SpdyEncoder:
    def __init__(self, header_level: int = 9) -> None: ...
    def syn_stream(
        self,
        stream_id: int,
        headers: _HeadersIn,
        flags: int = 0,
        assoc_id: int = 0,
        priority: int = 0,
        slot: int = 0,
    ) -> bytes: ...
    def syn_reply(self, stream_id: int, headers: _HeadersIn = None, flags: int = 0) -> bytes: ...
    def headers(self, stream_id: int, headers: _HeadersIn, flags: int = 0) -> bytes: ...
    def rst_stream(self, stream_id: int, status: int) -> bytes: ...
    def settings(self, entries: Iterable[tuple[int, int, int]], flags: int = 0) -> bytes: ...
    def ping(self, ping_id: int) -> bytes: ...
    def goaway(self, last_good_id: int, status: int = 0) -> bytes: ...
    def window_update(self, stream_id: int, delta: int) -> bytes: ...
    def data(self, stream_id: int, payload: Buffer, flags: int = 0) -> bytes: ...

def data_header(stream_id: int, flags: int, length: int) -> bytes: ...
def pack_data_header(buf: Buffer, offset: int, stream_id: int, flags: int, length: int) -> None: ...
def encode_header_block(headers: _HeadersIn) -> bytes: ...
def decode_header_block(block: Buffer) -> dict[str, str]: ...

@disjoint_base
class HeaderCompressor:
    def __init__(self, level: int = 9) -> None: ...
    def compress(self, headers: _HeadersIn) -> bytes: ...

@disjoint_base
class HeaderDecompressor:
    def __init__(self, max_output: int = 1 << 20) -> None: ...
    def decompress(self, block: Buffer) -> dict[str, str]: ...

@disjoint_base
class WsFrame:
    @property
    def opcode(self) -> int: ...
    @property
    def fin(self) -> bool: ...
    @property
    def payload(self) -> memoryview: ...
    @property
    def message_opcode(self) -> int: ...
    @property
    def first(self) -> bool: ...
    def __init__(
        self,
        opcode: int = 2,
        fin: bool = True,
        payload: Buffer = b"",
        message_opcode: int = -1,
        first: bool = True,
    ) -> None: ...

@disjoint_base
class WsDecoder(_FrameBuffer):
    @property
    def error(self) -> WebSocketError | None: ...
    def __init__(
        self, expect_masked: bool, max_message: int = 64 << 20, buffer_size: int = 256 * 1024
    ) -> None: ...
    def next_frame(self) -> WsFrame | None: ...

def ws_frame_header(
    opcode: int, length: int, fin: bool = True, mask_key: bytes | None = None
) -> bytes: ...
def ws_encode(opcode: int, payload: Buffer, fin: bool = True, mask: bool = False) -> bytes: ...
def mask_inplace(buf: Buffer, key: Buffer, offset: int = 0, length: int = -1) -> None: ...
def new_mask_key() -> bytes: ...
def alloc_buffer(size: int) -> bytearray: ...
def buffer_exported(buf: bytearray) -> bool: ...
def buffer_exported_portable(buf: bytearray) -> bool: ...
def ws_close_payload(code: int, reason: str = "") -> bytes: ...
def parse_close_payload(payload: Buffer) -> tuple[int | None, str]: ...
def channel_encode(channel: int, payload: Buffer, base64: bool = False) -> tuple[int, bytes]: ...
def channel_decode(
    opcode: int, message: Buffer, base64: bool = False
) -> tuple[int, memoryview | bytes]: ...
def deliver_data(dec: SpdyDecoder, sinks: SinkTable) -> int: ...
def deliver_channel_data(dec: WsDecoder, sinks: SinkTable) -> int: ...
