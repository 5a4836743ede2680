"""Load generators and the benchmark target, both on uvloop, no dependency on fastpf.

Wire protocol between a load generator and the target (``target``). The first byte picks the
operation; nothing ever relies on a half-close being passed through, because kubelet/containerd
style forwarders do not propagate EOF (PROTOCOL.md 10), and the target only closes after the
client did, so no forwarder ever sees a reset (kubectl ends its whole session on one):

``U`` upload    client sends records, target verifies, answers ``K`` + u64 total + u8 ok
``D`` download  target sends records until the client sends any byte, then the end record
``E`` echo      target echoes everything until EOF (ping-pong, 1,000 held connections)
``Q`` + u32 n   target answers the first n pattern bytes (connection churn)
``N`` + u64 n   target sends pattern bytes 0..n-1 (no records), then closes: the pod's close.
                The client reads to EOF (``download_eof``), the pattern users produce (curl, a
                browser, pg_dump): request, then only reads, and EOF is the end of the reply.

Records: ``u32 length`` + payload, repeated; ``u32 0`` + ``u64 total payload bytes`` ends the
stream. Payload byte i of a stream is ``PATTERN[i % PERIOD]``: a random block whose period
(1 MiB + 7) does not divide any buffer or frame size, so a lost, duplicated or reordered chunk
shows up as a mismatch. The check is ``bytes.startswith(view, offset)``: a memcmp, no copy,
so verifying costs far less than the transfer itself (sha256 would eat a core at 1.5 GB/s).

The ``N`` operation is the one exception to "the target closes only after the client": there
the close is the point. It is a FIN, never a reset (the client sent only the 9-byte request,
which the target has read, so no unread data is left behind).

Processes: ``target`` serves; ``worker`` reads JSON commands on stdin (bulk, eof, churn, pingpong,
hold, release, quit) and prints one JSON result line per command, so the harness keeps one
warm load-generator process and the target in another: the two loopback cores are used by
the load generator, the target and (in forwarded rows) the forwarder and ``fastpf serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import socket
import struct
import sys
import time
from typing import Any

PERIOD = (1 << 20) + 7
# Deterministic so separate processes agree without exchanging it.
_BLOCK = random.Random(20261126).randbytes(PERIOD)
PATTERN = _BLOCK + _BLOCK  # any slice of up to PERIOD bytes at any phase is contiguous
PATTERN_VIEW = memoryview(PATTERN)
RECORD = 1 << 20  # payload bytes per record on the wire
BUFFER = 256 * 1024  # receive buffer size (BufferedProtocol)
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
EOF_BUFFER = 1 << 20  # download_eof's receive buffer (recv_into)
_END = struct.Struct(">IQ")  # u32 0 + u64 total
_REPLY = struct.Struct(">cQB")  # b"K", total, ok


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(coro: Any) -> Any:
    loop = new_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def pattern_ok(view: memoryview | bytes, offset: int) -> bool:
    """True when `view` equals the pattern stream starting at stream offset `offset`."""
    n = len(view)
    pos = 0
    while pos < n:  # bounded: each step consumes up to PERIOD bytes
        step = min(n - pos, PERIOD)
        if not PATTERN.startswith(view[pos : pos + step], (offset + pos) % PERIOD):
            return False
        pos += step
    return True


def first_mismatch(view: memoryview | bytes, offset: int) -> int:
    """Index of the first byte of `view` that differs from the pattern stream at `offset`, or -1
    (only called once a check failed, to name the byte in the error)."""
    for i in range(0, len(view), 4096):  # bounded by len(view)
        block = view[i : i + 4096]
        if not pattern_ok(block, offset + i):
            for j in range(len(block)):
                if block[j] != PATTERN[(offset + i + j) % PERIOD]:
                    return i + j
    return -1


class RecordReader:
    """Incremental parser + verifier of a record stream (either direction)."""

    __slots__ = ("offset", "remaining", "head", "need", "done", "corrupt", "claimed", "extra")

    def __init__(self) -> None:
        self.offset = 0  # payload bytes seen (and checked)
        self.remaining = 0  # payload bytes left in the current record
        self.head = bytearray()  # partial record header (they may straddle reads)
        self.need = 4  # header bytes wanted: 4 (length) or 8 (total after the end mark)
        self.done = False
        self.corrupt = False
        self.claimed = -1  # total the sender announced
        self.extra = 0  # bytes after the end record: a protocol error

    @property
    def ok(self) -> bool:
        return self.done and not self.corrupt and self.claimed == self.offset and not self.extra

    def feed(self, data: memoryview | bytes) -> None:
        i, n = 0, len(data)
        while i < n:  # bounded: every branch consumes at least one byte
            if self.done:
                self.extra += n - i
                return
            if self.remaining:
                take = min(self.remaining, n - i)
                if not self.corrupt and not pattern_ok(data[i : i + take], self.offset):
                    self.corrupt = True
                self.offset += take
                self.remaining -= take
                i += take
                continue
            take = min(self.need - len(self.head), n - i)
            self.head += data[i : i + take]
            i += take
            if len(self.head) < self.need:
                continue
            value = int.from_bytes(self.head, "big")
            self.head.clear()
            if self.need == 8:
                self.claimed = value
                self.done = True
            elif value == 0:
                self.need = 8
            else:
                self.remaining = value
        return


def record_header(length: int) -> bytes:
    return _U32.pack(length)


# --------------------------------------------------------------------------------------------
# Target


class TargetProtocol(asyncio.BufferedProtocol):
    def __init__(self, stats: dict[str, int]) -> None:
        self.stats = stats
        self.buf = bytearray(BUFFER)
        self.view = memoryview(self.buf)
        self.op = 0
        self.reader: RecordReader | None = None
        self.sent = 0
        self.stopping = False
        self.paused = False
        self.finished = False
        self.qhead = bytearray()
        self.want = -1  # N: bytes to send before closing (-1: header not complete yet)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=4 << 20, low=1 << 20)
        with contextlib.suppress(OSError, AttributeError):
            transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stats["conns"] += 1

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        data = self.view[:nbytes]
        if not self.op:
            self.op = data[0]
            data = data[1:]
            if self.op == 0x55:  # U
                self.reader = RecordReader()
            elif self.op == 0x44:  # D
                self.pump()
            elif self.op not in (0x45, 0x51, 0x4E):  # E, Q, N
                self.stats["bad_op"] += 1
                assert self.transport is not None
                self.transport.abort()
                return
        if not data:
            return
        op = self.op
        assert self.transport is not None
        if op == 0x45:  # echo: copy, the buffer is reused by the next read
            self.transport.write(bytes(data))
        elif op == 0x55:
            assert self.reader is not None
            self.reader.feed(data)
            if self.reader.done and not self.finished:
                self.finished = True
                ok = self.reader.ok
                self.stats["up_ok" if ok else "up_bad"] += 1
                self.stats["up_bytes"] += self.reader.offset
                self.transport.write(_REPLY.pack(b"K", self.reader.offset, 1 if ok else 0))
        elif op == 0x44:
            if not self.stopping:
                self.stopping = True
                self.pump()
        elif op == 0x51:
            if self.finished:
                return
            self.qhead += data
            if len(self.qhead) >= 4:
                self.finished = True
                n = min(_U32.unpack_from(self.qhead)[0], PERIOD)
                self.transport.write(PATTERN_VIEW[:n])
        elif op == 0x4E:
            if self.want >= 0:
                return  # nothing else is expected; read (not left unread) so our close is a FIN
            self.qhead += data
            if len(self.qhead) >= _U64.size:
                self.want = _U64.unpack_from(self.qhead)[0]
                self.pump_to_close()

    def pump_to_close(self) -> None:
        """N: send the first `want` pattern bytes with backpressure, then close (FIN)."""
        tr = self.transport
        assert tr is not None
        if self.finished:
            return
        for _ in range(64):  # bounded burst; pause_writing usually stops it first
            if self.paused or tr.is_closing():
                return
            left = self.want - self.sent
            if left <= 0:
                self.finished = True
                self.stats["eof_done"] += 1
                self.stats["eof_bytes"] += self.sent
                tr.close()  # after the buffered bytes: the pod's close
                return
            phase = self.sent % PERIOD
            take = min(RECORD, left)
            tr.write(PATTERN_VIEW[phase : phase + take])
            self.sent += take
        asyncio.get_running_loop().call_soon(self.pump_to_close)

    def pump(self) -> None:
        """Download: send records until paused; after the stop byte, the end record."""
        tr = self.transport
        assert tr is not None
        if self.finished:
            return
        if self.stopping:
            self.finished = True
            tr.write(_END.pack(0, self.sent))
            self.stats["down_bytes"] += self.sent
            self.stats["down_done"] += 1
            return
        hdr = record_header(RECORD)
        for _ in range(64):  # bounded burst; pause_writing usually stops it first
            if self.paused or tr.is_closing():
                return
            phase = self.sent % PERIOD
            tr.writelines((hdr, PATTERN_VIEW[phase : phase + RECORD]))
            self.sent += RECORD
        asyncio.get_running_loop().call_soon(self.pump)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.op == 0x44:
            self.pump()
        elif self.op == 0x4E and self.want >= 0:
            self.pump_to_close()

    def eof_received(self) -> bool:
        return False  # close our side too (after the write buffer drained)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.op == 0x44 and not self.finished:
            self.stats["down_cut"] += 1
        if self.op == 0x55 and not self.finished:
            self.stats["up_cut"] += 1
        if self.op == 0x4E and not self.finished:
            self.stats["eof_cut"] += 1


async def serve_target(host: str, port: int, ready: Any = None) -> None:
    loop = asyncio.get_running_loop()
    stats: dict[str, int] = {
        k: 0
        for k in (
            "conns",
            "bad_op",
            "up_ok",
            "up_bad",
            "up_bytes",
            "up_cut",
            "down_bytes",
            "down_done",
            "down_cut",
            "eof_bytes",
            "eof_done",
            "eof_cut",
        )
    }
    server = await loop.create_server(lambda: TargetProtocol(stats), host, port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    if ready is not None:
        ready(bound)
    async with server:
        await server.serve_forever()


# --------------------------------------------------------------------------------------------
# Load generators (client side)


class _Base(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.buf = bytearray(BUFFER)
        self.view = memoryview(self.buf)
        self.transport: Any = None
        self.done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.paused = False
        self.resumed: asyncio.Future[None] | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=4 << 20, low=1 << 20)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_result(None)

    def eof_received(self) -> bool:
        self._fail("EOF before the transfer completed")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection lost: {exc!r}" if exc else "connection closed early")
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_result(None)

    def _fail(self, why: str) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(why))


class DownloadClient(_Base):
    def __init__(self) -> None:
        super().__init__()
        self.reader = RecordReader()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        transport.write(b"D")

    def buffer_updated(self, nbytes: int) -> None:
        self.reader.feed(self.view[:nbytes])
        if self.reader.done and not self.done.done():
            self.done.set_result(time.perf_counter())


class UploadClient(_Base):
    def __init__(self) -> None:
        super().__init__()
        self.reply = bytearray()

    def buffer_updated(self, nbytes: int) -> None:
        self.reply += self.view[:nbytes]
        if len(self.reply) >= _REPLY.size and not self.done.done():
            self.done.set_result(time.perf_counter())


async def _one_bulk(host: str, port: int, direction: str, duration: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    grace = 30.0 + duration
    proto: _Base
    try:
        if direction == "down":
            _, proto = await asyncio.wait_for(
                loop.create_connection(DownloadClient, host, port), 10.0
            )
            await asyncio.sleep(duration)
            proto.transport.write(b"S")
            t1 = await asyncio.wait_for(proto.done, grace)
            assert isinstance(proto, DownloadClient)
            r = proto.reader
            ok = r.ok
            nbytes = r.offset
            why = (
                ""
                if ok
                else f"corrupt={r.corrupt} claimed={r.claimed} got={r.offset} extra={r.extra}"
            )
        else:
            _, proto = await asyncio.wait_for(
                loop.create_connection(UploadClient, host, port), 10.0
            )
            tr = proto.transport
            tr.write(b"U")
            hdr = record_header(RECORD)
            sent = 0
            deadline = loop.time() + duration
            for _ in range(10_000_000):  # bounded; the deadline ends it
                if loop.time() >= deadline or proto.done.done() or tr.is_closing():
                    break
                if proto.paused:
                    proto.resumed = loop.create_future()
                    await asyncio.wait_for(proto.resumed, grace)
                    continue
                phase = sent % PERIOD
                tr.writelines((hdr, PATTERN_VIEW[phase : phase + RECORD]))
                sent += RECORD
                if sent % (RECORD * 16) == 0:
                    await asyncio.sleep(0)  # let the other connections of a parallel run in
            tr.write(_END.pack(0, sent))
            t1 = await asyncio.wait_for(proto.done, grace)
            assert isinstance(proto, UploadClient)
            tag, total, okb = _REPLY.unpack_from(proto.reply)
            ok = tag == b"K" and total == sent and okb == 1 and len(proto.reply) == _REPLY.size
            nbytes = sent
            why = "" if ok else f"reply={bytes(proto.reply)!r} sent={sent}"
        proto.transport.close()
        return {"ok": ok, "bytes": nbytes, "t0": t0, "t1": t1, "error": why}
    except (OSError, ConnectionError, asyncio.TimeoutError, struct.error) as exc:
        return {"ok": False, "bytes": 0, "t0": t0, "t1": time.perf_counter(), "error": repr(exc)}


async def bulk(host: str, port: int, direction: str, conns: int, duration: float) -> dict[str, Any]:
    """`conns` parallel transfers for about `duration` s; aggregate rate, every byte checked."""
    results = await asyncio.gather(
        *(_one_bulk(host, port, direction, duration) for _ in range(conns))
    )
    t0 = min(r["t0"] for r in results)
    t1 = max(r["t1"] for r in results)
    nbytes = sum(r["bytes"] for r in results if r["ok"])
    errors = [r["error"] for r in results if not r["ok"]]
    secs = max(t1 - t0, 1e-9)
    return {
        "bytes": nbytes,
        "seconds": secs,
        "MBps": nbytes / secs / 1e6,
        "errors": len(errors),
        "error_samples": errors[:3],
    }


def download_eof(
    host: str, port: int, n: int, eof_timeout: float = 10.0, transfer_timeout: float = 60.0
) -> dict[str, Any]:
    """Download `n` bytes with a plain blocking socket and read on to EOF, as curl would.

    Sends ``N`` + u64 n, then only reads: recv_into a 1 MiB buffer, every byte checked against
    the pattern. Returns the rate from before connect to the last byte (``MBps``; for a run cut
    short, the rate of what did arrive), the delay from the last byte to EOF (``eof_s``: the
    pod's close reaching the local client) and ``ok``. Bounded: the transfer gives up after
    `transfer_timeout` s (or `eof_timeout` s without any byte), EOF after `eof_timeout` s more.
    """
    buf = bytearray(EOF_BUFFER)
    view = memoryview(buf)
    got = extra = 0
    corrupt_at = -1
    eof_s: float | None = None
    error = timeout = ""
    t0 = time.perf_counter()
    t_last = t0
    deadline = t0 + transfer_timeout
    try:
        with socket.create_connection((host, port), timeout=eof_timeout) as s:
            s.sendall(b"N" + _U64.pack(n))
            for _ in range(n + 1):  # bounded: each pass takes >= 1 byte, or ends the loop
                if got >= n:
                    break
                if time.perf_counter() > deadline:
                    error = f"transfer timeout: {got} of {n} bytes after {transfer_timeout:g} s"
                    timeout = "transfer"
                    break
                k = s.recv_into(view)  # socket.timeout after eof_timeout s without data
                if not k:
                    error = f"EOF after {got} of {n} bytes"
                    break
                take = min(k, n - got)
                if corrupt_at < 0 and not pattern_ok(view[:take], got):
                    corrupt_at = got + first_mismatch(view[:take], got)
                got += take
                extra += k - take
                t_last = time.perf_counter()
            if got >= n and not extra:
                # all bytes in: now the pod's close must arrive as EOF, and nothing more
                k = s.recv_into(view)  # socket.timeout after eof_timeout s
                if k:
                    extra += k
                else:
                    eof_s = time.perf_counter() - t_last
    except TimeoutError:
        if got >= n:
            error, timeout = f"no EOF within {eof_timeout:g} s after the last byte", "eof"
        else:
            error = f"stalled: {got} of {n} bytes, then nothing for {eof_timeout:g} s"
            timeout = "transfer"
    except OSError as exc:
        error = f"{exc!r} after {got} of {n} bytes"
    if corrupt_at >= 0:
        error = f"corrupt from byte {corrupt_at}" + (f"; {error}" if error else "")
    if extra:
        error = f"{extra} bytes beyond {n}" + (f"; {error}" if error else "")
    secs = max(t_last - t0, 1e-9)  # up to the last byte that arrived
    return {
        "ok": not error,
        "bytes": got,
        "complete": got >= n and corrupt_at < 0,
        "seconds": secs,
        "MBps": got / secs / 1e6,
        "eof_s": eof_s,
        "timeout": timeout,  # "transfer" (bytes missing), "eof" (all bytes, no EOF) or ""
        "error": error,
        # the form measure() in run.py counts as errors
        "errors": 1 if error else 0,
        "error_samples": [error] if error else [],
    }


class ChurnClient(asyncio.Protocol):
    def __init__(self, need: int, done: asyncio.Future[None]) -> None:
        self.need = need
        self.got = bytearray()
        self.done = done

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(b"Q" + _U32.pack(self.need))

    def data_received(self, data: bytes) -> None:
        self.got += data
        if len(self.got) >= self.need and not self.done.done():
            if len(self.got) == self.need and PATTERN.startswith(bytes(self.got)):
                self.done.set_result(None)
            else:
                self.done.set_exception(ValueError("corrupt response"))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"closed after {len(self.got)} bytes: {exc!r}"))


def percentiles(samples: list[float]) -> dict[str, float | None]:
    if not samples:
        return {"p50": None, "p99": None}
    s = sorted(samples)

    def rank(q: float) -> float:
        return s[min(len(s) - 1, max(0, int(q * len(s) + 0.5) - 1))]

    return {"p50": rank(0.50), "p99": rank(0.99)}


async def churn(
    host: str,
    port: int,
    concurrency: int,
    duration: float,
    size: int = 128,
    max_conns: int = 2_000_000,
) -> dict[str, Any]:
    """Short connections: connect, 5-byte request, `size`-byte response, close. Latency in ms."""
    loop = asyncio.get_running_loop()
    lat: list[float] = []
    errors: list[str] = []
    deadline = loop.time() + duration
    counter = [0]

    async def worker() -> None:
        for _ in range(max_conns):  # bounded; normally the deadline ends it
            if loop.time() >= deadline or counter[0] >= max_conns or len(errors) > 1000:
                return
            counter[0] += 1
            t0 = time.perf_counter()
            done: asyncio.Future[None] = loop.create_future()
            tr = None
            try:
                tr, _ = await asyncio.wait_for(
                    loop.create_connection(functools.partial(ChurnClient, size, done), host, port),
                    10.0,
                )
                await asyncio.wait_for(done, 10.0)
                lat.append((time.perf_counter() - t0) * 1e3)
            except (OSError, ConnectionError, ValueError, asyncio.TimeoutError) as exc:
                errors.append(repr(exc))
            finally:
                if tr is not None:
                    tr.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    secs = time.perf_counter() - t0
    await asyncio.sleep(0.05)  # let the last closes go out
    p = percentiles(lat)
    return {
        "conns": len(lat),
        "seconds": secs,
        "per_s": len(lat) / secs,
        "p50_ms": p["p50"],
        "p99_ms": p["p99"],
        "errors": len(errors),
        "error_samples": errors[:3],
    }


def pingpong(host: str, port: int, duration: float, max_count: int = 200_000) -> dict[str, Any]:
    """1-byte ping-pong on one connection with blocking sockets (least client overhead)."""
    errors: list[str] = []
    lat: list[float] = []
    try:
        with socket.create_connection((host, port), timeout=10.0) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(b"E")
            end = time.perf_counter() + duration
            warm = 50
            for i in range(max_count):
                t0 = time.perf_counter()
                if t0 >= end and i > warm:
                    break
                s.sendall(b"x")
                got = s.recv(16)
                if got != b"x":
                    errors.append(f"got {got!r}")
                    break
                if i >= warm:
                    lat.append((time.perf_counter() - t0) * 1e3)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(5.0)
            for _ in range(100):  # drain to EOF so nobody sees a reset
                if not s.recv(65536):
                    break
    except OSError as exc:
        errors.append(repr(exc))
    p = percentiles(lat)
    return {
        "count": len(lat),
        "p50_ms": p["p50"],
        "p99_ms": p["p99"],
        "errors": len(errors),
        "error_samples": errors[:3],
    }


class HoldClient(asyncio.Protocol):
    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(b"Eh")

    def data_received(self, data: bytes) -> None:
        if not self.done.done():
            if data == b"h":
                self.done.set_result(None)
            else:
                self.done.set_exception(ValueError(f"bad echo {data!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"closed: {exc!r}"))


_HELD: list[Any] = []


async def hold(host: str, port: int, n: int, parallel: int = 50) -> dict[str, Any]:
    """Open `n` connections, each proven end-to-end by a 1-byte echo, and keep them open."""
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(parallel)
    errors: list[str] = []

    async def one() -> None:
        async with sem:
            done: asyncio.Future[None] = loop.create_future()
            try:
                tr, _ = await asyncio.wait_for(
                    loop.create_connection(lambda: HoldClient(done), host, port), 15.0
                )
                _HELD.append(tr)
                await asyncio.wait_for(done, 15.0)
            except (OSError, ConnectionError, ValueError, asyncio.TimeoutError) as exc:
                errors.append(repr(exc))

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return {
        "open": n - len(errors),
        "seconds": time.perf_counter() - t0,
        "errors": len(errors),
        "error_samples": errors[:3],
    }


async def release() -> dict[str, Any]:
    n = len(_HELD)
    for tr in _HELD:
        if tr.can_write_eof():
            tr.write_eof()  # graceful: the target closes after our EOF
        tr.close()
    _HELD.clear()
    await asyncio.sleep(0.2)
    return {"closed": n}


async def dispatch(cmd: dict[str, Any]) -> dict[str, Any]:
    op = cmd["op"]
    host, port = cmd.get("host", "127.0.0.1"), int(cmd.get("port", 0))
    if op == "bulk":
        return await bulk(host, port, cmd["dir"], int(cmd.get("conns", 1)), float(cmd["duration"]))
    if op == "eof":
        return download_eof(
            host,
            port,
            int(cmd["n"]),
            float(cmd.get("eof_timeout", 10.0)),
            float(cmd.get("transfer_timeout", 60.0)),
        )
    if op == "churn":
        return await churn(
            host,
            port,
            int(cmd.get("concurrency", 50)),
            float(cmd["duration"]),
            int(cmd.get("size", 128)),
        )
    if op == "pingpong":
        return pingpong(host, port, float(cmd["duration"]))
    if op == "hold":
        return await hold(host, port, int(cmd["n"]))
    if op == "release":
        return await release()
    if op == "ping":
        return {"pong": True}
    raise ValueError(f"unknown op {op!r}")


async def worker_main() -> None:
    loop = asyncio.get_running_loop()
    for _ in range(1_000_000):  # bounded; ends on EOF or "quit"
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:  # the harness closed our stdin
            break
        if not line.strip():
            continue
        cmd = json.loads(line)
        if cmd.get("op") == "quit":
            break
        try:
            res = await dispatch(cmd)
        except Exception as exc:  # reported to the harness, never a traceback on its console
            res = {"exception": repr(exc)}
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()
    await release()


def raise_nofile() -> None:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("target", help="serve the benchmark target; prints PORT <n>")
    t.add_argument("--host", default="127.0.0.1")
    t.add_argument("--port", type=int, default=0)
    sub.add_parser("worker", help="run JSON commands from stdin, one result line each")
    one = sub.add_parser("run", help="run one JSON command and print the result")
    one.add_argument("json")
    args = ap.parse_args(argv)
    raise_nofile()
    if args.cmd == "target":

        def ready(port: int) -> None:
            print(f"PORT {port}", flush=True)

        with contextlib.suppress(KeyboardInterrupt):
            run(serve_target(args.host, args.port, ready))
        return 0
    if args.cmd == "worker":
        run(worker_main())
        return 0
    print(json.dumps(run(dispatch(json.loads(args.json)))))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
