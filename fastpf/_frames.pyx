# cython: language_level=3, cdivision=True
"""Sans-IO SPDY/3 and RFC 6455 frame codecs (PROTOCOL.md sections 4 and 6).

The only place that knows frame layouts. Decoders take bytes through the BufferedProtocol pair
(`get_buffer`/`buffer_updated`) or `feed()`, decode from a raw pointer with explicit bounds checks,
and hand out DATA / WebSocket payloads as memoryviews into their receive buffer (no copy).
Decoders never raise into the caller's event-loop callback: a fatal peer error is stored in
`.error` and `next_frame()` returns None from then on.

One extension module built from parts, one job each, in fastpf/frames/*.pxi (pgproto's layout):
this file holds the imports and the public names, the parts are `include`d below. The C-level
contract (cdef classes, field layouts, inline helpers) is _frames.pxd; the Python one _frames.pyi.
"""

cimport cython
from cpython.buffer cimport (
    PyBUF_SIMPLE,
    PyBUF_WRITABLE,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove

from fastpf._pump cimport RelayCore, SinkTable

import base64 as _base64
import binascii as _binascii
import os as _os
import zlib as _zlib

from fastpf.errors import SpdySessionError, WebSocketError

__all__ = [
    "DATA", "SYN_STREAM", "SYN_REPLY", "RST_STREAM", "SETTINGS", "PING", "GOAWAY", "HEADERS",
    "WINDOW_UPDATE", "FLAG_FIN", "FLAG_UNIDIRECTIONAL", "FLAG_CLEAR_SETTINGS",
    "RST_PROTOCOL_ERROR", "RST_INVALID_STREAM", "RST_REFUSED_STREAM", "RST_UNSUPPORTED_VERSION",
    "RST_CANCEL", "RST_INTERNAL_ERROR", "RST_FLOW_CONTROL_ERROR", "RST_STREAM_IN_USE",
    "RST_STREAM_ALREADY_CLOSED", "RST_INVALID_CREDENTIALS", "RST_FRAME_TOO_LARGE",
    "GOAWAY_OK", "GOAWAY_PROTOCOL_ERROR", "GOAWAY_INTERNAL_ERROR", "MAX_DATA_LENGTH",
    "SPDY_DICTIONARY", "WS_CONT", "WS_TEXT", "WS_BINARY", "WS_CLOSE", "WS_PING", "WS_PONG",
    "WS_CLOSE_NORMAL", "WS_CLOSE_GOING_AWAY", "WS_CLOSE_PROTOCOL_ERROR",
    "WS_CLOSE_UNSUPPORTED_DATA", "WS_CLOSE_INVALID_PAYLOAD", "WS_CLOSE_POLICY_VIOLATION",
    "WS_CLOSE_MESSAGE_TOO_BIG", "WS_CLOSE_INTERNAL_ERROR", "WS_MAX_HEADER_LENGTH",
    "SPDY_HEADER_LENGTH",
    "SpdyFrame", "SpdyDecoder", "SpdyEncoder", "HeaderCompressor", "HeaderDecompressor",
    "data_header", "pack_data_header", "encode_header_block", "decode_header_block",
    "WsFrame", "WsDecoder", "ws_frame_header", "ws_encode", "mask_inplace", "new_mask_key",
    "alloc_buffer", "buffer_exported", "buffer_exported_portable", "deliver_data",
    "deliver_channel_data",
    "ws_close_payload", "parse_close_payload", "channel_encode", "channel_decode",
]

# --- the parts, in dependency order (a part uses only names from the parts above it) ---------
include "frames/constants.pxi"
include "frames/masking.pxi"
include "frames/buffers.pxi"
include "frames/headers.pxi"
include "frames/spdy_frame.pxi"
include "frames/spdy_decoder.pxi"
include "frames/spdy_encoder.pxi"
include "frames/ws_close.pxi"
include "frames/ws_decoder.pxi"
include "frames/ws_encoder.pxi"
include "frames/channel.pxi"
include "frames/dispatch.pxi"
