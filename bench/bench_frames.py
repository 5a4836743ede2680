"""Micro benchmarks of the frame layer (pytest-benchmark).

    python3 -m pytest bench/bench_frames.py --benchmark-only -q

Not collected by the normal test run (testpaths = tests; the file is not named test_*).
Each benchmark stores derived figures in `extra_info` (per-frame µs, MB/s, GB/s, ops/s), which
bench/run.py copies into its report. Throughput figures use the median round time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fastpf import _frames as F

KIB = 1024
MIB = 1024 * 1024
KUBECTL_HEADERS = {"streamtype": "data", "port": "8080", "requestid": "0"}


def _median(benchmark: Any) -> float:
    return float(benchmark.stats.stats.median)


def _fill(dec: Any, wire: bytes) -> None:
    # As BufferedProtocol delivers it: straight into the decoder's buffer.
    view = memoryview(wire)
    for _ in range(len(wire) + 1):
        if not view:
            return
        buf = dec.get_buffer(-1)
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        dec.buffer_updated(n)
        view = view[n:]


# --- SPDY DATA decode ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [32 * KIB, 256 * KIB, 1 * MIB], ids=["32KiB", "256KiB", "1MiB"])
def test_spdy_data_decode(benchmark: Any, size: int) -> None:
    """next_frame() on DATA frames already in the buffer: cost must not depend on size."""
    count = 16
    wire = F.SpdyEncoder().data(1, b"\x5a" * size) * count
    state: dict[str, Any] = {}

    def setup() -> None:
        dec = F.SpdyDecoder(buffer_size=len(wire) + 64)
        _fill(dec, wire)
        state["dec"] = dec

    def decode() -> int:
        dec = state["dec"]
        n = 0
        for _ in range(count):
            frame = dec.next_frame()
            n += len(frame.payload)
        dec.release()
        return n

    result = benchmark.pedantic(decode, setup=setup, rounds=300, iterations=1, warmup_rounds=5)
    assert result == size * count
    t = _median(benchmark)
    benchmark.extra_info["frames_per_round"] = count
    benchmark.extra_info["us_per_frame"] = round(t / count * 1e6, 3)
    benchmark.extra_info["MB_per_s"] = round(size * count / t / 1e6, 1)


@pytest.mark.parametrize("size", [32 * KIB, 256 * KIB], ids=["32KiB", "256KiB"])
def test_spdy_receive_path(benchmark: Any, size: int) -> None:
    """get_buffer + copy-in (stands in for recv_into) + buffer_updated + next_frame + release."""
    frame_bytes = F.SpdyEncoder().data(1, b"\x5a" * size)
    dec = F.SpdyDecoder()

    def receive() -> int:
        _fill(dec, frame_bytes)
        frame = dec.next_frame()
        assert frame is not None and frame.payload is not None
        n = len(frame.payload)
        del frame
        dec.release()
        return n

    assert benchmark(receive) == size
    t = _median(benchmark)
    benchmark.extra_info["MB_per_s"] = round(size / t / 1e6, 1)


class _NullTransport:
    """Upgraded-connection stand-in: swallows writes, never has a write backlog."""

    def set_protocol(self, protocol: Any) -> None: ...
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None: ...
    def write(self, data: Any) -> None: ...
    def writelines(self, parts: Any) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False


class _CountingSink:
    def __init__(self) -> None:
        self.n = 0

    def data_received(self, view: memoryview) -> None:
        self.n += len(view)

    def eof_received(self) -> None: ...
    def reset_received(self, status: int) -> None: ...
    def connection_lost(self, exc: BaseException | None) -> None: ...

    def drained(self) -> bool:
        return True


@pytest.mark.parametrize("size", [32 * KIB, 256 * KIB], ids=["32KiB", "256KiB"])
@pytest.mark.parametrize("tunnel", [None, "ws-client"], ids=["spdy", "websocket"])
def test_client_download_path(benchmark: Any, tunnel: str | None, size: int) -> None:
    """The client's whole receive path in user space: 4 MiB of serve-like DATA frames (one WS
    message each in the tunnel) delivered as uvloop's SSL transport does (16 KiB records into
    get_buffer(pending + 256) until it is full, 256 KiB socket reads), through SpdyConnection
    to a sink. The record copies stand in for SSL_read; kernel and TLS costs are not here."""
    import asyncio

    from fastpf.transport.spdy import SpdyConnection, SpdyStream

    one = F.data_header(1, 0, size) + bytes(range(256)) * (size // 256)
    if tunnel:
        one = F.ws_frame_header(F.WS_BINARY, len(one)) + one
    wire = memoryview(one * (4 * MIB // size))
    total = len(wire)

    async def make() -> tuple[Any, _CountingSink]:
        conn = SpdyConnection(client=True, tunnel=tunnel, ping_interval=0)
        conn.attach(_NullTransport())  # type: ignore[arg-type]
        stream = SpdyStream(conn, 1, {}, local=True)
        conn.streams[1] = stream
        sink = _CountingSink()
        stream.set_sink(sink)
        return conn, sink

    loop = asyncio.new_event_loop()
    try:
        conn, sink = loop.run_until_complete(make())
    finally:
        loop.close()

    def receive() -> int:
        pos = pending = 0
        for _ in range(total):  # bounded: every pass moves bytes
            if pos == total:
                break
            pending += min(256 * KIB, total - pos - pending)
            for _ in range(total):
                if not pending:
                    break
                buf = conn.get_buffer(pending + 256)
                room, got = len(buf), 0
                while got < room and pending:
                    n = min(16 * KIB, room - got, pending)
                    buf[got : got + n] = wire[pos : pos + n]
                    got += n
                    pos += n
                    pending -= n
                del buf
                conn.buffer_updated(got)
        return pos

    before = sink.n
    result = benchmark.pedantic(receive, rounds=30, iterations=1, warmup_rounds=2)
    assert result == total and sink.n > before
    t = _median(benchmark)
    benchmark.extra_info["us_per_MiB"] = round(t / (total / MIB) * 1e6, 1)
    benchmark.extra_info["MB_per_s"] = round(total / t / 1e6, 1)


# --- SPDY DATA encode ---------------------------------------------------------------------


def test_spdy_data_encode_gather_256k(benchmark: Any) -> None:
    """Header only; the payload travels by reference in a writelines() list (zero copies)."""
    payload = memoryview(bytearray(256 * KIB))

    def encode() -> list[Any]:
        return [F.data_header(1, 0, len(payload)), payload]

    parts = benchmark(encode)
    assert len(parts[0]) == 8
    benchmark.extra_info["MB_per_s"] = round(len(payload) / _median(benchmark) / 1e6, 1)


def test_spdy_data_encode_gap_256k(benchmark: Any) -> None:
    """Header written into a gap reserved in front of the payload (zero copies)."""
    buf = bytearray(8 + 256 * KIB)

    def encode() -> None:
        F.pack_data_header(buf, 0, 1, 0, 256 * KIB)

    benchmark(encode)
    benchmark.extra_info["MB_per_s"] = round(256 * KIB / _median(benchmark) / 1e6, 1)


def test_spdy_data_encode_one_copy_256k(benchmark: Any) -> None:
    """SpdyEncoder.data(): one frame in one bytes (one copy) — the small-payload path."""
    payload = bytes(256 * KIB)
    enc = F.SpdyEncoder()
    out = benchmark(enc.data, 1, payload)
    assert len(out) == 8 + len(payload)
    benchmark.extra_info["MB_per_s"] = round(len(payload) / _median(benchmark) / 1e6, 1)


# --- header blocks --------------------------------------------------------------------------


def test_header_compress(benchmark: Any) -> None:
    comp = F.HeaderCompressor()
    block = benchmark(comp.compress, KUBECTL_HEADERS)
    assert block.endswith(b"\x00\x00\xff\xff")
    benchmark.extra_info["ops_per_s"] = round(1 / _median(benchmark))


def test_header_decompress(benchmark: Any) -> None:
    comp = F.HeaderCompressor()
    blocks = [comp.compress({**KUBECTL_HEADERS, "requestid": str(i)}) for i in range(100)]
    state: dict[str, Any] = {}

    def setup() -> None:
        state["d"] = F.HeaderDecompressor()

    def decompress() -> int:
        d = state["d"]
        for b in blocks:
            d.decompress(b)
        return len(blocks)

    benchmark.pedantic(decompress, setup=setup, rounds=200, iterations=1, warmup_rounds=3)
    benchmark.extra_info["ops_per_s"] = round(len(blocks) / _median(benchmark))


def test_syn_stream_encode(benchmark: Any) -> None:
    enc = F.SpdyEncoder()
    benchmark(enc.syn_stream, 1, KUBECTL_HEADERS)
    benchmark.extra_info["ops_per_s"] = round(1 / _median(benchmark))


# --- WebSocket ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64 * KIB, 1 * MIB, 16 * MIB], ids=["64KiB", "1MiB", "16MiB"])
def test_ws_mask_inplace(benchmark: Any, size: int) -> None:
    buf = bytearray(size)
    key = b"\x37\xfa\x21\x3d"
    benchmark(F.mask_inplace, buf, key)
    benchmark.extra_info["GB_per_s"] = round(size / _median(benchmark) / 1e9, 2)


def test_ws_decode_masked_32k(benchmark: Any) -> None:
    """Client->server frames: decode + unmask in place, per frame."""
    size, count = 32 * KIB, 32
    wire = b"".join(F.ws_encode(F.WS_BINARY, b"\x5a" * size, mask=True) for _ in range(count))
    state: dict[str, Any] = {}

    def setup() -> None:
        # Masked payloads are unmasked in place, so every round needs fresh bytes.
        dec = F.WsDecoder(expect_masked=True, buffer_size=len(wire) + 64)
        _fill(dec, wire)
        state["dec"] = dec

    def decode() -> int:
        dec = state["dec"]
        n = 0
        for _ in range(count):
            frame = dec.next_frame()
            n += len(frame.payload)
        dec.release()
        return n

    assert benchmark.pedantic(decode, setup=setup, rounds=200, iterations=1) == size * count
    t = _median(benchmark)
    benchmark.extra_info["us_per_frame"] = round(t / count * 1e6, 3)
    benchmark.extra_info["MB_per_s"] = round(size * count / t / 1e6, 1)


def test_ws_encode_masked_32k(benchmark: Any) -> None:
    payload = bytes(32 * KIB)
    out = benchmark(F.ws_encode, F.WS_BINARY, payload, True, True)
    assert len(out) == 8 + len(payload)
    benchmark.extra_info["MB_per_s"] = round(len(payload) / _median(benchmark) / 1e6, 1)


@pytest.mark.parametrize(
    "name,call",
    [
        ("channel_encode", lambda: F.channel_encode(0, b"x" * 1024)),
        ("channel_decode", lambda: F.channel_decode(F.WS_BINARY, b"\x00" + b"x" * 1024)),
    ],
)
def test_channel_helpers(benchmark: Any, name: str, call: Callable[[], Any]) -> None:
    benchmark(call)
    benchmark.extra_info["ops_per_s"] = round(1 / _median(benchmark))


_RELAY_BUFFER = F.alloc_buffer(256 * KIB)


@pytest.mark.parametrize(
    "name,probe",
    [("export_count", F.buffer_exported), ("resize_probe", F.buffer_exported_portable)],
)
def test_buffer_exported(benchmark: Any, name: str, probe: Callable[[bytearray], bool]) -> None:
    """The relay asks once per read whether its buffer is still held: CPython's export count
    against the portable resize probe used elsewhere."""
    assert benchmark(probe, _RELAY_BUFFER) is False
    benchmark.extra_info["ops_per_s"] = round(1 / _median(benchmark))
