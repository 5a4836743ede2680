"""Child processes the tests start: their environment, their output, stopping them by PID, and
what /proc says about them.

* `subprocess_env` (this checkout first on PYTHONPATH, no proxies), `stop_process` (signal one
  process we started, wait, SIGKILL if it lingers).
* `KubectlPortForward`: a running `kubectl port-forward` or `fastpf` (same output: reader
  threads collect stdout/stderr and parse the `Forwarding from` lines). `Fastpf` adds SIGINT;
  `fastpf_cmd` / `fastpf_client` start the client.
* `run_command` (in the running loop, so in-loop servers keep serving), `run_quiet`.
* /proc probes: `rss_kib`, `fd_count`, `nofile_of`; `lowered_nofile`, `ensure_nofile`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[2]
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


def stop_process(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10.0
) -> int | None:
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
# port-forward processes (kubectl's and fastpf's output is the same)


class KubectlPortForward:
    """A running `kubectl port-forward`; stdout/stderr are collected by reader threads."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.cmd = cmd
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._lock = threading.Condition()
        self._threads = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read(self, stream: IO[bytes], sink: list[str]) -> None:
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
        raise AssertionError(
            f"kubectl did not start forwarding: rc={self.proc.poll()} "
            f"stdout={self.stdout!r} stderr={self.stderr!r}"
        )

    def local_port(self, remote: int) -> int:
        for address, local, rem in self.forwards:
            if address == "127.0.0.1" and rem == remote:
                return local
        raise KeyError(remote)

    def wait_exit(self, timeout: float = 30.0) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"kubectl still running after {timeout}s: stderr={self.stderr!r}"
            ) from None
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


def fastpf_cmd(kubeconfig: Path | str, *args: str) -> list[str]:
    return [sys.executable, "-m", "fastpf", "--kubeconfig", str(kubeconfig), *args]


class Fastpf(KubectlPortForward):
    """A running `fastpf` client (same output collection as the kubectl helper)."""

    def interrupt(self, timeout: float = 15.0) -> int:
        os.kill(self.proc.pid, signal.SIGINT)
        return self.wait_exit(timeout)


def fastpf_client(kubeconfig: Path | str, *args: str, env: dict[str, str] | None = None) -> Fastpf:
    """A running `fastpf --kubeconfig K ARGS` (stop() it)."""
    return Fastpf(fastpf_cmd(kubeconfig, *args), subprocess_env(env))


def last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# ---------------------------------------------------------------------------------------------
# commands run to completion


async def run_command(
    cmd: list[str], timeout: float, env: dict[str, str] | None = None
) -> tuple[int | None, str, float]:
    """Run `cmd` in the current loop (so in-loop servers keep serving); returns (exit code,
    stderr, seconds). A process still running after `timeout` is killed (code None)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=subprocess_env(env),
    )
    try:
        _out, err = await asyncio.wait_for(proc.communicate(), timeout)
        code: int | None = proc.returncode
    except asyncio.TimeoutError:
        proc.kill()
        _out, err = await proc.communicate()
        code = None
    return code, err.decode(errors="replace"), loop.time() - start


def run_quiet(
    cmd: list[str], env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
    )


# ---------------------------------------------------------------------------------------------
# /proc probes and descriptor limits


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def nofile_of(pid: int) -> tuple[int, int]:
    return resource.prlimit(pid, resource.RLIMIT_NOFILE)


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
