"""Exceptions fastpf raises on purpose; the protocol ones carry the wire code to answer with.

A peer's violation (`ProtocolError` and subclasses) is a different class from local misuse
(plain `ValueError`/`TypeError` from the codecs, as h11 separates Remote/LocalProtocolError).
Every exception's `str()` is one readable line, so the CLI can print it without a traceback.

Constructors take the message first and the wire code(s) as keywords with the usual default,
e.g. `SpdySessionError("ping id 0", goaway_status=1)` or `WebSocketError("bad opcode 3")`.
"""

from __future__ import annotations

__all__ = [
    "FastpfError",
    "HandshakeError",
    "ProtocolError",
    "SpdySessionError",
    "SpdyStreamError",
    "WebSocketError",
]

# Wire codes repeated here (not imported from the compiled module) so this file imports without
# a build and has no import cycle with fastpf._frames.
_GOAWAY_PROTOCOL_ERROR = 1
_RST_PROTOCOL_ERROR = 1
_WS_PROTOCOL_ERROR = 1002


class FastpfError(Exception):
    """Base class of every exception fastpf raises on purpose."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message or type(self).__name__


class ProtocolError(FastpfError):
    """The peer broke the protocol (framing, compression, state machine)."""


class SpdySessionError(ProtocolError):
    """A connection-level SPDY error: answer with GOAWAY(goaway_status) and close."""

    def __init__(self, message: str = "", goaway_status: int = _GOAWAY_PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.goaway_status = goaway_status

    def __reduce__(self) -> tuple[type[SpdySessionError], tuple[str, int]]:
        # Keep the wire code across pickling (multiprocessing, pytest-xdist).
        return (type(self), (self.message, self.goaway_status))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, goaway_status={self.goaway_status})"


class SpdyStreamError(ProtocolError):
    """A stream-level SPDY error: answer with RST_STREAM(stream_id, rst_status)."""

    def __init__(
        self, message: str = "", stream_id: int = 0, rst_status: int = _RST_PROTOCOL_ERROR
    ) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.rst_status = rst_status

    def __reduce__(self) -> tuple[type[SpdyStreamError], tuple[str, int, int]]:
        return (type(self), (self.message, self.stream_id, self.rst_status))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, stream_id={self.stream_id}, "
            f"rst_status={self.rst_status})"
        )


class WebSocketError(ProtocolError):
    """A WebSocket protocol error: answer with a close frame carrying close_code."""

    def __init__(self, message: str = "", close_code: int = _WS_PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.close_code = close_code

    def __reduce__(self) -> tuple[type[WebSocketError], tuple[str, int]]:
        return (type(self), (self.message, self.close_code))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, close_code={self.close_code})"


class HandshakeError(FastpfError):
    """The upgrade was refused or its 101 answer was unacceptable.

    `status` is the HTTP status the server answered (None when there was no usable response).
    """

    def __init__(self, message: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self) -> tuple[type[HandshakeError], tuple[str, int | None]]:
        return (type(self), (self.message, self.status))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status})"
