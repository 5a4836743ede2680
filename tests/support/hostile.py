"""Reusable helpers for hostile-peer and load tests (no tests here).

* `HostileApi`: a fake API server (plain TCP, in the test's loop) that answers the REST calls
  the client makes before forwarding (a Running pod) and treats the port-forward upgrade
  request with a scripted `on_upgrade(request_head, writer)` coroutine: garbage, silence,
  a close, a redirect, a 101 followed by a frame flood...
* `Mitm`: a man-in-the-middle TCP proxy between a client and `fastpf serve --no-tls` that
  passes bytes both ways and lets the test inject bytes into a live upgraded session, toward
  the client (`to_client`) or toward the server (`to_server`), once the 101 went by.
* Process helpers: `lowered_nofile` (start a child with a low soft descriptor limit),
  `rss_kib`, `fd_count`, `fastpf_client` (a running `fastpf` with kubectl's line parsing),
  and `concurrent_echo` (N concurrent connections, each checked, all open at once).

Everything listens on 127.0.0.1 with OS-chosen ports; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import resource
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import KubectlPortForward, subprocess_env

# ---------------------------------------------------------------------------------------------
# processes


@contextlib.contextmanager
def lowered_nofile(soft: int) -> Iterator[None]:
    """Children started inside inherit a soft descriptor limit of `soft` (hard unchanged); the
    test process gets its own limit back on leaving (keep the block to the Popen)."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


def ensure_nofile(need: int) -> int:
    """Raise this process's soft limit to the hard one; returns it (callers skip if < need)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need and hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def nofile_of(pid: int) -> tuple[int, int]:
    return resource.prlimit(pid, resource.RLIMIT_NOFILE)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fastpf_client(kubeconfig: Path | str, *args: str, env: dict[str, str] | None = None) -> KubectlPortForward:
    """A running `fastpf --kubeconfig K ARGS` (stop() it; conftest's output collection)."""
    cmd = [sys.executable, "-m", "fastpf", "--kubeconfig", str(kubeconfig), *args]
    return KubectlPortForward(cmd, subprocess_env(env))


async def wait_until(check: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    for _ in range(max(1, int(timeout / step))):
        if check():
            return True
        await asyncio.sleep(step)
    return check()


# ---------------------------------------------------------------------------------------------
# load


@dataclass
class EchoResult:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    peak_open: int = 0


async def concurrent_echo(port: int, n: int, size: int = 64, *, hold: bool = True,
                          connect_parallel: int = 256, timeout: float = 60.0,
                          host: str = "127.0.0.1") -> EchoResult:
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


# ---------------------------------------------------------------------------------------------
# a hostile API server

POD = {
    "kind": "Pod", "apiVersion": "v1",
    "metadata": {"name": "x", "namespace": "default", "uid": "uid-x",
                 "creationTimestamp": "2024-01-01T00:00:00Z"},
    "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": []}]},
    "status": {"phase": "Running"},
}
SPDY_101 = (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
            b"X-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n")

Upgrade = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class HostileApi:
    """Plain-HTTP fake API server: GETs of pod `x` answer Running; any request to a path with
    `/portforward` goes to `on_upgrade(head, reader, writer)` (which owns the connection).
    `heads` keeps every request head seen (bytes)."""

    def __init__(self, on_upgrade: Upgrade) -> None:
        self.on_upgrade = on_upgrade
        self.heads: list[bytes] = []
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> HostileApi:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self, path: Path, token: str = "t0ken") -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": self.url}}],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u",
                                                   "namespace": "default"}}],
        }))
        return path

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            for _ in range(100):  # requests per connection
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                target = head.split(b" ", 2)[1].decode()
                if "/portforward" in target:
                    await self.on_upgrade(head, reader, writer)
                    return
                if target.split("?")[0] == "/api/v1/namespaces/default/pods/x":
                    body = json.dumps(POD).encode()
                    status = b"200 OK"
                else:
                    body = b'{"kind":"Status","apiVersion":"v1","status":"Failure","code":404}'
                    status = b"404 Not Found"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                             b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()


# ---------------------------------------------------------------------------------------------
# a man in the middle


class _Leg:
    """One proxied connection: client <-> server, with injection once upgraded."""

    def __init__(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter,
                 server_reader: asyncio.StreamReader, server_writer: asyncio.StreamWriter) -> None:
        self.client_reader, self.client_writer = client_reader, client_writer
        self.server_reader, self.server_writer = server_reader, server_writer
        self.upgraded = asyncio.Event()
        self.to_client_bytes = 0
        self.to_server_bytes = 0

    def to_client(self, data: bytes) -> None:
        self.client_writer.write(data)

    def to_server(self, data: bytes) -> None:
        self.server_writer.write(data)

    def close(self) -> None:
        self.client_writer.close()
        self.server_writer.close()


class Mitm:
    """TCP proxy to `upstream_port` on 127.0.0.1. `legs` lists the proxied connections in
    order; `await mitm.upgraded_leg()` gives the first leg whose server answered 101, so the
    test can inject frames into that live session (`leg.to_client` / `leg.to_server`; at a
    frame boundary, i.e. while the other side is quiet). `reading_client` (an Event, set):
    clear it to stop reading what clients send once upgraded (a server that never reads),
    set it again to resume. `on_upgrade(head, reader, writer)`: answer port-forward requests (a first
    request head naming /portforward) instead of the server; returning False passes the
    request on (e.g. the target of a redirect)."""

    def __init__(self, upstream_port: int,
                 on_upgrade: Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter],
                                      Awaitable[bool]] | None = None) -> None:
        self.upstream_port = upstream_port
        self.on_upgrade = on_upgrade
        self.port = 0
        self.legs: list[_Leg] = []
        self.new_leg = asyncio.Event()
        self.reading_client = asyncio.Event()
        self.reading_client.set()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Mitm:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for leg in self.legs:
            leg.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2)

    async def upgraded_leg(self, timeout: float = 10.0) -> _Leg:
        for _ in range(int(timeout / 0.02)):
            for leg in self.legs:
                if leg.upgraded.is_set():
                    return leg
            await asyncio.sleep(0.02)
        raise AssertionError("no upgraded connection through the proxy")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = b""
        if self.on_upgrade is not None:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError):
                writer.close()
                return
            if b"/portforward" in head.split(b"\r\n", 1)[0]:
                try:
                    if await self.on_upgrade(head, reader, writer):
                        return
                except OSError:
                    return
        sr, sw = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        sw.write(head)
        leg = _Leg(reader, writer, sr, sw)
        self.legs.append(leg)
        up = asyncio.ensure_future(self._pump(leg, reader, sw, to_server=True))
        down = asyncio.ensure_future(self._pump(leg, sr, writer, to_server=False))
        for t in (up, down):
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _pump(self, leg: _Leg, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    to_server: bool) -> None:
        seen = b""
        try:
            for _ in range(1 << 30):
                if to_server and leg.upgraded.is_set():
                    await self.reading_client.wait()
                data = await reader.read(1 << 16)
                if not data:
                    break
                if not to_server and not leg.upgraded.is_set():
                    seen = (seen + data)[-4096:]
                    if b" 101 " in seen:
                        leg.upgraded.set()
                if to_server:
                    leg.to_server_bytes += len(data)
                else:
                    leg.to_client_bytes += len(data)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, asyncio.CancelledError):
            pass


def kubeconfig_via(srv: Any, port: int, path: Path) -> Path:
    """`srv`'s kubeconfig (a conftest.ServeInstance) pointing at `port` on the same host (a
    Mitm in front of it)."""
    path.write_text(srv.kubeconfig.read_text().replace(f":{srv.port}", f":{port}"))
    return path


async def run_command(cmd: list[str], timeout: float, env: dict[str, str] | None = None
                      ) -> tuple[int | None, str, float]:
    """Run `cmd` in the current loop (so in-loop servers keep serving); returns (exit code,
    stderr, seconds). A process still running after `timeout` is killed (code None)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=subprocess_env(env))
    try:
        _out, err = await asyncio.wait_for(proc.communicate(), timeout)
        code: int | None = proc.returncode
    except asyncio.TimeoutError:
        proc.kill()
        _out, err = await proc.communicate()
        code = None
    return code, err.decode(errors="replace"), loop.time() - start


def fastpf_cmd(kubeconfig: Path | str, *args: str) -> list[str]:
    return [sys.executable, "-m", "fastpf", "--kubeconfig", str(kubeconfig), *args]


def last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""
