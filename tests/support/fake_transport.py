"""Doubles for session tests without sockets: `FakeTransport` (records every write and
writelines, so a test sees the write pattern), `HoldingSink` (keeps every DATA view and
reports not drained until told), `decode_frames` (SPDY frames of some bytes), and kubectl's
known-answer SYN_STREAM header blocks (`BLOCK1`, `BLOCK2`, `syn_stream_bytes`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from fastpf import _frames as F

# PROTOCOL.md 4.3: kubectl 1.33's first two header blocks of one connection.
BLOCK1 = bytes.fromhex(
    "78f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45e01c60616061c0c0c0c0590489c64c50f2663400000000ffff"
)
BLOCK2 = bytes.fromhex("c2aa19540e2512d60b000000ffff")


def syn_stream_bytes(stream_id: int, block: bytes) -> bytes:
    """A SYN_STREAM exactly as kubectl puts it on the wire (known-answer vector)."""
    length = 10 + len(block)
    return (
        bytes.fromhex("80030001")
        + bytes([0])
        + length.to_bytes(3, "big")
        + stream_id.to_bytes(4, "big")
        + bytes(4)
        + bytes(2)
        + block
    )


class FakeTransport(asyncio.Transport):
    """Records every write / writelines call as ("write", data) or ("writelines", parts)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Any]] = []
        self.protocol: Any = None
        self.closed = False
        self.buffered = 0

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: Any) -> None:
        self.calls.append(("write", data))

    def writelines(self, parts: Iterable[Any]) -> None:
        self.calls.append(("writelines", list(parts)))

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def wire(self) -> bytes:
        """Everything written so far, including small writes the session coalesces until the
        end of the loop iteration (flushed here, as the iteration's end would)."""
        if self.protocol is not None:
            self.protocol._flush()
        out = b""
        for kind, data in self.calls:
            out += b"".join(bytes(p) for p in data) if kind == "writelines" else bytes(data)
        return out


class HoldingSink:
    """A sink that keeps every DATA view it gets and reports not drained until told: the
    decoder must not overwrite what it holds."""

    def __init__(self, got: list[memoryview]) -> None:
        self.got = got
        self.pending = True

    def data_received(self, view: memoryview) -> None:
        self.got.append(view)

    def eof_received(self) -> None: ...
    def reset_received(self, status: int) -> None: ...
    def connection_lost(self, exc: BaseException | None) -> None: ...

    def drained(self) -> bool:
        return not self.pending


def decode_frames(data: bytes) -> list[Any]:
    dec = F.SpdyDecoder()
    dec.feed(data)
    out = []
    for _ in range(1000):
        f = dec.next_frame()
        if f is None:
            assert dec.error is None
            break
        out.append(f)
    return out
