"""Micro benchmark of the DATA path, Python dispatch against the compiled one (pytest-benchmark).

    python3 -m pytest bench/bench_dispatch.py --benchmark-only -q

Both decode the same SPDY DATA frames (kubelet's 32 KiB, and 1 KiB) from a decoder's buffer
and send each payload to a real socket (a socketpair drained by a thread), so the kernel's
share is the same: what differs is the per-frame cost above it. "python" is what the session
did per frame before (next_frame(), a SpdyFrame and a memoryview, the sink's data_received,
the transport's write); "compiled" is F.deliver_data into a RelayCore. extra_info carries
the µs per frame.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any

import pytest

from fastpf import _frames as F
from fastpf._pump import RelayCore, SinkTable

FRAMES = 2048


class _SocketTransport:
    """The transport calls RelayCore makes, over a real non-blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.write = sock.send  # a C method: the Python path pays nothing extra here

    def get_extra_info(self, name: str) -> Any:
        return self.sock if name == "socket" else None

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


class _Core(RelayCore):
    def _local_error(self, exc: BaseException) -> None:
        raise exc


_DRAIN = """
import os, sys
fd = int(sys.argv[1]); buf = bytearray(1 << 20)
while os.readv(fd, [buf]):
    pass
"""


@pytest.fixture
def wire_pair() -> Any:
    """A socket whose peer is drained by another process (no GIL shared with the sender)."""
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    drain = subprocess.Popen([sys.executable, "-c", _DRAIN, str(b.fileno())], pass_fds=[b.fileno()])
    b.close()
    yield a
    a.close()
    try:
        drain.wait(10)
    finally:
        if drain.poll() is None:
            drain.kill()
            drain.wait()


@pytest.mark.parametrize("size", [32 << 10, 1 << 10])
@pytest.mark.parametrize("path", ["python", "compiled"])
def test_dispatch(benchmark: Any, wire_pair: socket.socket, size: int, path: str) -> None:
    wire = (F.data_header(1, 0, size) + bytes(size)) * FRAMES
    core = _Core()
    core.attach_transport(_SocketTransport(wire_pair))  # type: ignore[arg-type]
    sinks = SinkTable()
    sinks.add(1, core)
    sink = core.data_received

    def python_path() -> None:
        dec = F.SpdyDecoder(buffer_size=len(wire) + 64)
        dec.feed(wire)
        for _ in range(FRAMES + 1):
            frame = dec.next_frame()
            if frame is None:
                break
            if frame.type == F.DATA and frame.payload is not None:
                sink(frame.payload)

    def compiled_path() -> None:
        dec = F.SpdyDecoder(buffer_size=len(wire) + 64)
        dec.feed(wire)
        F.deliver_data(dec, sinks)

    benchmark.pedantic(
        python_path if path == "python" else compiled_path, rounds=15, warmup_rounds=2
    )
    median = float(benchmark.stats.stats.median)
    benchmark.extra_info["us_per_frame"] = median / FRAMES * 1e6
    assert core.received == 17 * FRAMES * size
