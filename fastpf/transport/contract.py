"""The contracts between the sessions and what rides on them (the relay, kubelet, the client).

A *pipe* is one byte stream inside an upgraded session: a SPDY stream or a WebSocket port
channel. The relay pumps a local socket through a pipe and is the pipe's *sink*: the session
hands it what arrives. The pipe's `session` is the asyncio adapter of its upgraded connection
(input/output pause bookkeeping for backpressure).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

Buffer = bytes | bytearray | memoryview


@runtime_checkable
class Sink(Protocol):
    """Where a pipe's received data goes. `data_received` gets a view into the session's
    receive buffer (no copy): it stays valid until `drained()` is True (no view still
    referenced, e.g. the sink's transport wrote everything)."""

    def data_received(self, view: memoryview) -> None: ...
    def eof_received(self) -> None: ...
    def reset_received(self, status: int) -> None: ...
    def connection_lost(self, exc: BaseException | None) -> None: ...
    def drained(self) -> bool: ...


class OutputListener(Protocol):
    """Told when the upgraded connection's output passes its high/low-water marks."""

    def pause_output(self) -> None: ...
    def resume_output(self) -> None: ...


class SessionControl(Protocol):
    """What a pipe's user may ask of the upgraded connection carrying it."""

    @property
    def output_paused(self) -> bool: ...
    def pause_input(self, key: object) -> None: ...
    def resume_input(self, key: object) -> None: ...
    def add_output_listener(self, listener: OutputListener) -> None: ...
    def remove_output_listener(self, listener: OutputListener) -> None: ...
    def output_drained(self) -> bool: ...


class Pipe(Protocol):
    """A SPDY stream or a port channel, as the relay drives it."""

    @property
    def session(self) -> SessionControl: ...
    @property
    def header_room(self) -> int:
        """Bytes to keep free in front of a payload given to send_inplace()."""
        ...

    @property
    def max_payload(self) -> int:
        """Largest payload per send_inplace()."""
        ...

    @property
    def local_closed(self) -> bool: ...
    @property
    def remote_closed(self) -> bool: ...
    def send_inplace(self, buf: bytearray, start: int, n: int) -> None:
        """Frame buf[start:start+n], packing the header(s) into the gap in front: one write."""
        ...

    def write(self, data: Buffer) -> None: ...
    def write_eof(self) -> None: ...
    def reset(self, status: int = ...) -> None: ...
    def set_sink(self, sink: Sink | None) -> None: ...


__all__ = ["Buffer", "OutputListener", "Pipe", "SessionControl", "Sink"]
