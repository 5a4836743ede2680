"""Helpers for the reconnect / pool / fault tests: a `fastpf serve` that can be killed and
restarted on the same port with the same credentials (token and --tls-dir), a download that
checks every byte it receives against the pattern (so a corrupt byte can never pass as a
short read), RSS sampling and small timing helpers. Everything loopback, bounded in time."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.client.test_client_e2e import echo_once  # noqa: F401 - re-exported for the fault tests
from tests.conftest import ServeInstance, pattern_bytes, start_serve, stop_process

PATTERN = bytes(next(pattern_bytes(1 << 20)))  # the 1 MiB block the targets repeat
TOKEN = "resilience-token-3f9c2d"


class RestartableServe:
    """`fastpf serve` on a fixed port with a fixed token and certificate directory."""

    def __init__(self, tmp: Path, *args: str, manifest: str | None = None, tls: bool = True,
                 token: str | None = TOKEN) -> None:
        self.tmp = tmp
        self.tls = tls
        self.token = token
        self.base = [*(["--token", token] if token else []),
                     *(["--tls-dir", str(tmp / "tls")] if tls else []), *args]
        self.count = 0
        self.inst: ServeInstance = self._start(self.base, manifest, "127.0.0.1:0")
        self.port = self.inst.port
        self.kubeconfig = self.inst.kubeconfig
        self.started: list[ServeInstance] = [self.inst]

    def _start(self, args: list[str], manifest: str | None, listen: str) -> ServeInstance:
        self.count += 1
        return start_serve(self.tmp / f"serve{self.count}", *args, manifest=manifest,
                           tls=self.tls, listen=listen)

    @property
    def pid(self) -> int:
        return self.inst.process.pid

    def kill(self, sig: int = signal.SIGKILL) -> None:
        os.kill(self.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.inst.process.wait(10)

    def restart(self, *args: str, manifest: str | None = None, token: str | None = None) -> float:
        """Start again on the same port; returns the monotonic time it was serving."""
        base = list(self.base)
        if token is not None:
            base[base.index("--token") + 1] = token
        for _ in range(50):  # the port may linger a moment after a SIGKILL
            try:
                self.inst = self._start([*base, *args], manifest, f"127.0.0.1:{self.port}")
                break
            except RuntimeError as exc:
                if "address already in use" not in str(exc).lower():
                    raise
                time.sleep(0.1)
        self.started.append(self.inst)
        return time.monotonic()

    def close(self) -> None:
        for inst in self.started:
            if inst.process.poll() is None:
                os.kill(inst.process.pid, signal.SIGCONT)  # a stopped one must see SIGTERM
            stop_process(inst.process)


class Download:
    """Reads N pattern bytes from a `source` target through `port`, checking each byte.
    outcome: "complete", "reset" (connection reset) or "eof" (closed early)."""

    def __init__(self, port: int, n: int, *, host: str = "127.0.0.1", timeout: float = 60.0,
                 pause_after: int | None = None, pause: float = 0.0) -> None:
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
                    if (not paused and self.pause_after is not None
                            and self.got >= self.pause_after):
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
                        if view[pos:pos + m] != PATTERN[off:off + m]:
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


def upload_checked(port: int, n: int, host: str = "127.0.0.1", timeout: float = 60.0) -> str:
    """Upload N pattern bytes to a `sink`; "complete", or how it ended early. A reply that
    names a byte count with the wrong sha256 of that prefix is corruption (AssertionError)."""
    from tests.conftest import pattern_sha256

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


def time_until(check: Callable[[], bool], timeout: float, step: float = 0.02) -> float:
    """Seconds until check() first returns True (exceptions count as False); raises
    AssertionError after `timeout`."""
    start = time.monotonic()
    last: Any = None
    while time.monotonic() - start < timeout:
        try:
            if check():
                return time.monotonic() - start
        except OSError as exc:
            last = exc
        time.sleep(step)
    raise AssertionError(f"not within {timeout}s (last error: {last!r})")


def wait_line(pf: Any, needle: str, timeout: float) -> float:
    """Seconds until a stderr line of `pf` contains `needle`."""
    return time_until(lambda: any(needle in ln for ln in list(pf.stderr)), timeout)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_quiet(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)
