"""A fault-injecting TCP proxy for tests (loopback only, own event loop thread), after asyncpg's
adversity proxy: chunks are delayed and split at random points, connections are cut (RST both
ways) with probability cut_prob after every random stretch of cut_bytes server bytes, and bytes can be injected into the server -> client
stream right after an HTTP head (e.g. hostile frames after a 101). Everything is bounded:
delays, split counts, the number of cuts, the bytes kept for inspection.

    proxy = FaultProxy(("127.0.0.1", server_port), seed=1, delay_max=0.002, split_max=4,
                       cut_prob=0.3, cut_bytes=(64 << 10, 4 << 20), max_cuts=20)
    proxy.port  # listen here instead of the server
    proxy.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

KEEP_AFTER_INJECT = 64 << 10  # client -> server bytes kept after an injection (for checks)
_LINGER_ZERO = struct.pack("ii", 1, 0)


@dataclass
class ProxyStats:
    connections: int = 0
    cuts: int = 0
    injected: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    # per injected connection: what the client sent after the injection (bounded)
    after_inject: list[bytearray] = field(default_factory=list)


@dataclass
class _Conn:
    """What both directions of one proxied connection share."""

    cut_at: int | None  # server -> client byte count of the next cut chance (None: no cuts)
    down: int = 0  # server -> client bytes so far
    kept: bytearray | None = None  # client -> server bytes after an injection (bounded)


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    writer.transport.abort()


class FaultProxy:
    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        seed: int = 0,
        delay_max: float = 0.0,
        split_max: int = 1,
        cut_prob: float = 0.0,
        cut_bytes: tuple[int, int] = (1 << 16, 1 << 22),
        max_cuts: int = 0,
        inject: Callable[[int], bytes | None] | None = None,
    ) -> None:
        """inject(n): bytes to put right after the n-th 101 head seen (None: pass it through)."""
        self.upstream = upstream
        self.rng = random.Random(seed)
        self.delay_max = delay_max
        self.split_max = max(1, split_max)
        self.cut_prob = cut_prob
        self.cut_bytes = cut_bytes
        self.max_cuts = max_cuts
        self.inject = inject
        self.enabled = True  # False: pass bytes through untouched (no delays/cuts/injection)
        self.stats = ProxyStats()
        self.port = 0
        self._live: dict[int, tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = {}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._server.close()
        for pair in list(self._live.values()):
            for w in pair:
                w.transport.abort()
        self._loop.run_until_complete(asyncio.sleep(0.05))
        self._loop.close()

    def cut_all(self) -> int:
        """Cut every live connection now (RST both ways); returns how many."""
        fut = asyncio.run_coroutine_threadsafe(self._cut_all(), self._loop)
        return fut.result(10)

    async def _cut_all(self) -> int:
        live = list(self._live.values())
        for pair in live:
            for w in pair:
                _reset(w)
        return len(live)

    def cut_one(self) -> bool:
        """Cut the oldest live connection (RST both ways)."""
        fut = asyncio.run_coroutine_threadsafe(self._cut_one(), self._loop)
        return fut.result(10)

    async def _cut_one(self) -> bool:
        for pair in self._live.values():
            self.stats.cuts += 1
            for w in pair:
                _reset(w)
            return True
        return False

    def close(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        index = self.stats.connections
        self.stats.connections += 1
        try:
            sreader, swriter = await asyncio.open_connection(*self.upstream)
        except OSError:
            _reset(cwriter)
            return
        self._live[index] = (cwriter, swriter)
        faulty = self.enabled
        # Every cut_bytes-ish stretch of server -> client bytes, the connection is cut with
        # probability cut_prob (so long-lived connections keep getting chances).
        cut_at = self.rng.randint(*self.cut_bytes) if faulty and self.cut_prob > 0 else None
        state = _Conn(cut_at)
        inject = self.inject if faulty else None
        try:
            await asyncio.gather(
                self._pump(sreader, cwriter, swriter, state, "down", inject, faulty),
                self._pump(creader, swriter, cwriter, state, "up", None, faulty),
            )
        finally:
            self._live.pop(index, None)
            for w in (cwriter, swriter):
                w.transport.abort()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        other: asyncio.StreamWriter,
        state: _Conn,
        direction: str,
        inject: Callable[[int], bytes | None] | None,
        faulty: bool,
    ) -> None:
        head = bytearray() if inject is not None else None
        try:
            for _ in range(1 << 30):  # ends at EOF, error or cut
                data = await reader.read(1 << 16)
                if not data:
                    with contextlib.suppress(OSError, RuntimeError):
                        if writer.can_write_eof():
                            writer.write_eof()
                    return
                if direction == "up":
                    self.stats.bytes_up += len(data)
                    kept = state.kept
                    if kept is not None and len(kept) < KEEP_AFTER_INJECT:
                        kept += data[: KEEP_AFTER_INJECT - len(kept)]
                else:
                    self.stats.bytes_down += len(data)
                if head is not None:
                    # Hold the server's bytes until its HTTP head is complete, then inject.
                    head += data
                    end = head.find(b"\r\n\r\n")
                    if end < 0 and len(head) < 65536:
                        continue
                    data, head = bytes(head), None
                    extra = (
                        inject(self.stats.injected)
                        if end >= 0 and inject is not None and data.startswith(b"HTTP/1.1 101")
                        else None
                    )
                    if extra is not None:
                        self.stats.injected += 1
                        kept_buf = bytearray()
                        self.stats.after_inject.append(kept_buf)
                        state.kept = kept_buf
                        data = data[: end + 4] + extra  # the server's own frames are dropped
                cut_at = state.cut_at
                if direction == "down" and cut_at is not None:
                    down = state.down + len(data)
                    state.down = down
                    if down >= cut_at:
                        if self.stats.cuts < self.max_cuts and self.rng.random() < self.cut_prob:
                            self.stats.cuts += 1
                            _reset(writer)
                            _reset(other)
                            return
                        state.cut_at = down + self.rng.randint(*self.cut_bytes)
                await self._write(writer, data, faulty)
        except (OSError, RuntimeError, asyncio.IncompleteReadError):
            _reset(other)

    async def _write(self, writer: asyncio.StreamWriter, data: bytes, faulty: bool) -> None:
        if not faulty or (self.delay_max <= 0 and self.split_max <= 1):
            writer.write(data)
            await writer.drain()
            return
        parts = self.rng.randint(1, self.split_max)
        cuts = sorted(self.rng.randint(0, len(data)) for _ in range(parts - 1))
        pos = 0
        for end in [*cuts, len(data)]:
            if end > pos:
                if self.delay_max > 0:
                    await asyncio.sleep(self.rng.uniform(0, self.delay_max))
                writer.write(data[pos:end])
                await writer.drain()
                pos = end
