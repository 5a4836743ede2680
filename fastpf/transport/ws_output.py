"""Sans-IO WebSocket message writing (RFC 6455) for the sessions: masked as client, plain as
server. Bytes go to the owner's `emit` / `emit_parts`; nothing here knows a loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastpf import _frames as F
from fastpf.transport.contract import Buffer

WS_HEADER_ROOM = F.WS_MAX_HEADER_LENGTH  # 2 + 8 (64-bit length) + 4 (mask key)

Emit = Callable[[Buffer], None]
EmitParts = Callable[[list[Any], int], None]


class WsOutput:
    """Frames payloads as WebSocket messages. `mask`: client role (RFC 6455: clients mask,
    servers must not). `close_sent` is set once a close frame went out."""

    __slots__ = ("mask", "emit", "emit_parts", "close_sent", "peer_close_code")

    def __init__(self, mask: bool, emit: Emit, emit_parts: EmitParts) -> None:
        self.mask = mask
        self.emit = emit
        self.emit_parts = emit_parts
        self.close_sent = False
        self.peer_close_code: int | None = None  # the peer's close frame's code, once it came

    def message(self, opcode: int, payload: Buffer) -> None:
        """One unfragmented message (client: one copy, masked; server: gather write)."""
        if self.mask:
            self.emit(F.ws_encode(opcode, payload, True, True))
        else:
            self.emit_parts([F.ws_frame_header(opcode, len(payload)), payload], len(payload) + 10)

    def binary_parts(self, parts: list[Any], total: int) -> None:
        """One binary message whose payload is the concatenation of `parts` (server: gather
        write, no copy; client: one copy into a buffer that is masked in place)."""
        if not self.mask:
            self.emit_parts([F.ws_frame_header(F.WS_BINARY, total), *parts], total + 10)
            return
        key = F.new_mask_key()
        buf = F.alloc_buffer(total)  # every byte is overwritten below
        pos = 0
        for part in parts:
            n = len(part)
            buf[pos : pos + n] = part
            pos += n
        F.mask_inplace(buf, key, 0, total)
        self.emit_parts([F.ws_frame_header(F.WS_BINARY, total, True, key), buf], total + 14)

    def binary_inplace(self, buf: bytearray, start: int, end: int) -> None:
        """buf[start:end] as one binary message; the header goes into the gap in front of
        `start` (at least WS_HEADER_ROOM bytes): one write, no copy."""
        length = end - start
        if self.mask:
            key = F.new_mask_key()
            header = F.ws_frame_header(F.WS_BINARY, length, True, key)
            F.mask_inplace(buf, key, start, length)
        else:
            header = F.ws_frame_header(F.WS_BINARY, length)
        hs = start - len(header)
        buf[hs:start] = header
        self.emit(memoryview(buf)[hs:end])

    def close(self, code: int, reason: str = "") -> None:
        """Send a close frame once."""
        if self.close_sent:
            return
        self.close_sent = True
        self.message(F.WS_CLOSE, F.ws_close_payload(code, reason))

    def answer_control(self, opcode: int, payload: memoryview, on_pong: Callable[[], None]) -> bool:
        """A control frame received (RFC 6455 5.5), the same in every session: a ping gets its
        pong (not after our close), a pong goes to `on_pong`, a close is echoed. True when the
        peer closed: the session then ends with close_outcome(self.peer_close_code)."""
        if opcode == F.WS_PING:
            if not self.close_sent:
                self.message(F.WS_PONG, bytes(payload))
        elif opcode == F.WS_PONG:
            on_pong()
        elif opcode == F.WS_CLOSE:
            code, _reason = F.parse_close_payload(payload)
            self.peer_close_code = code
            self.close(code if code is not None else 1000)
            return True
        return False


def close_outcome(code: int | None) -> BaseException | None:
    """How a session ends after the peer's close frame: None (clean) for 1000/1001/no code."""
    if code in (None, 1000, 1001):
        return None
    return ConnectionResetError(f"websocket closed ({code})")


__all__ = ["WS_HEADER_ROOM", "WsOutput", "close_outcome"]
