"""Traffic the tests send and check, from the client side of a forward.

* The deterministic pattern: `pattern_bytes(n)` (chunks of the 1 MiB `PATTERN` block the
  `targets` repeat), `pattern_sha256(n)`; `pattern(n, seed)` for in-process transport tests.
* Against the `targets` stand-ins (see targets.py for their protocols): `upload` to a sink,
  `download` from a source, `upload_checked` and `Download` (every byte checked, so a corrupt
  byte never passes as a short read; they say how a transfer ended: complete, reset, eof).
* Echo: `echo_once` (one payload through), `concurrent_echo` (N connections at once, each
  checked).
Everything loopback, bounded in count and time.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

PATTERN = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(1 << 15))  # 1 MiB
_SHA_CACHE: dict[int, str] = {}


def pattern_bytes(n: int) -> Iterator[memoryview]:
    """N deterministic bytes in chunks of up to 1 MiB."""
    view = memoryview(PATTERN)
    while n > 0:
        k = min(n, len(PATTERN))
        yield view[:k]
        n -= k


def pattern_sha256(n: int) -> str:
    if n not in _SHA_CACHE:
        h = hashlib.sha256()
        for chunk in pattern_bytes(n):
            h.update(chunk)
        _SHA_CACHE[n] = h.hexdigest()
    return _SHA_CACHE[n]


def pattern(n: int, seed: int = 0) -> bytes:
    """N bytes of a 64 KiB block derived from `seed` (in-process tests: small, fast)."""
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    return (block * (n // len(block) + 1))[:n]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _recv_line(sock: socket.socket, limit: int = 256) -> bytes:
    buf = b""
    while not buf.endswith(b"\n") and len(buf) < limit:
        chunk = sock.recv(1)
        if not chunk:
            break
        buf += chunk
    return buf


def upload(port: int, n: int, host: str = "127.0.0.1", timeout: float = 60.0) -> str:
    """Send N pattern bytes to a `sink` through `host:port`; returns the sink's reply line
    (expected: f"{n} {pattern_sha256(n)}")."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(f"{n}\n".encode())
        for chunk in pattern_bytes(n):
            sock.sendall(chunk)
        return _recv_line(sock).decode(errors="replace").strip()


def download(port: int, n: int, host: str = "127.0.0.1", timeout: float = 60.0) -> tuple[int, str]:
    """Ask a `source` for N bytes through `host:port`; returns (bytes received, sha256hex)."""
    h = hashlib.sha256()
    got = 0
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(f"{n}\n".encode())
        buf = bytearray(1 << 20)
        while got < n:
            k = sock.recv_into(buf)
            if not k:
                break
            h.update(memoryview(buf)[:k])
            got += k
    return got, h.hexdigest()


def upload_checked(port: int, n: int, host: str = "127.0.0.1", timeout: float = 60.0) -> str:
    """Upload N pattern bytes to a `sink`; "complete", or how it ended early. A reply that
    names a byte count with the wrong sha256 of that prefix is corruption (AssertionError)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(f"{n}\n".encode())
            for chunk in pattern_bytes(n):
                sock.sendall(chunk)
            reply = b""
            for _ in range(256):
                d = sock.recv(1)
                if not d or d == b"\n":
                    break
                reply += d
    except (ConnectionResetError, BrokenPipeError):
        return "reset"
    except OSError as exc:
        return f"error: {exc}"
    if not reply:
        return "eof"
    count_s, _, sha = reply.decode().partition(" ")
    count = int(count_s)
    assert sha == pattern_sha256(count), f"corrupt upload: {reply!r}"
    return "complete" if count == n else "short"


class Download:
    """Reads N pattern bytes from a `source` target through `port`, checking each byte.
    outcome: "complete", "reset" (connection reset) or "eof" (closed early)."""

    def __init__(
        self,
        port: int,
        n: int,
        *,
        host: str = "127.0.0.1",
        timeout: float = 60.0,
        pause_after: int | None = None,
        pause: float = 0.0,
    ) -> None:
        self.port = port
        self.n = n
        self.host = host
        self.timeout = timeout
        self.pause_after = pause_after
        self.pause = pause
        self.got = 0
        self.outcome = ""
        self.corrupt_at: int | None = None

    def run(self) -> str:
        buf = bytearray(1 << 18)
        plen = len(PATTERN)
        try:
            with socket.create_connection((self.host, self.port), timeout=self.timeout) as sock:
                sock.sendall(f"{self.n}\n".encode())
                paused = False
                for _ in range(1 << 30):  # each pass reads >= 1 byte or ends
                    if self.got >= self.n:
                        break
                    if not paused and self.pause_after is not None and self.got >= self.pause_after:
                        paused = True
                        time.sleep(self.pause)  # a stalled local reader
                    k = sock.recv_into(buf)
                    if not k:
                        self.outcome = "eof"
                        return self.outcome
                    view = memoryview(buf)[:k]
                    off = self.got % plen
                    pos = 0
                    while pos < k:  # compare against the pattern, wrapping at 1 MiB
                        m = min(k - pos, plen - off)
                        if view[pos : pos + m] != PATTERN[off : off + m]:
                            self.corrupt_at = self.got + pos
                            raise AssertionError(f"corrupt byte near offset {self.corrupt_at}")
                        pos += m
                        off = 0
                    self.got += k
        except (ConnectionResetError, BrokenPipeError):
            self.outcome = "reset"
            return self.outcome
        except OSError as exc:
            self.outcome = f"error: {exc}"
            return self.outcome
        self.outcome = "complete" if self.got == self.n else "eof"
        return self.outcome


def echo_once(
    port: int, payload: bytes = b"ping", host: str = "127.0.0.1", timeout: float = 20.0
) -> bytes:
    """Send `payload` to an echo through `host:port`; returns what came back (up to its length)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(payload)
        got = b""
        for _ in range(1000):
            if len(got) >= len(payload):
                break
            d = s.recv(65536)
            if not d:
                break
            got += d
        return got


@dataclass
class EchoResult:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    peak_open: int = 0


async def concurrent_echo(
    port: int,
    n: int,
    size: int = 64,
    *,
    hold: bool = True,
    connect_parallel: int = 256,
    timeout: float = 60.0,
    host: str = "127.0.0.1",
) -> EchoResult:
    """`n` connections to an echo through `port`; each sends `size` bytes unique to it and
    checks the echo. hold=True: every connection stays open until all have their echo (so
    all `n` are open at once); False: each closes when done."""
    result = EchoResult()
    everyone = asyncio.Event()
    gate = asyncio.Semaphore(connect_parallel)
    opened = 0

    async def one(i: int) -> None:
        nonlocal opened
        payload = hashlib.sha256(str(i).encode()).digest() * (size // 32 + 1)
        payload = payload[:size]
        writer = None
        try:
            async with gate:
                reader, writer = await asyncio.open_connection(host, port)
            opened += 1
            result.peak_open = max(result.peak_open, opened)
            writer.write(payload)
            got = await reader.readexactly(size)
            if got != payload:
                result.failures.append(f"{i}: wrong bytes")
                return
            result.ok += 1
            if result.ok + len(result.failures) >= n:
                everyone.set()
            if hold:
                await everyone.wait()
        except (OSError, asyncio.IncompleteReadError) as exc:
            result.failures.append(f"{i}: {exc!r}")
            if result.ok + len(result.failures) >= n:
                everyone.set()
        finally:
            if writer is not None:
                opened -= 1
                writer.close()

    tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for t in pending:
        t.cancel()
    if pending:
        result.failures.append(f"{len(pending)} connections still running after {timeout}s")
        await asyncio.wait(pending, timeout=5)
    return result
