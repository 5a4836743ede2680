"""Child-process bookkeeping for the benchmark harness: start, wait for ready, measure, stop.

Every child is started in its own session (so a Ctrl-C on the terminal reaches only the harness,
which then stops the children itself, in order) and with PR_SET_PDEATHSIG, so even a harness
killed with SIGKILL leaves nothing behind. Children are stopped by their own PID / process group
(the group the child itself leads), never by name.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import select
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def _child_setup() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: die with the harness
    except (OSError, AttributeError):
        pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Proc:
    """One started child with its log file."""

    def __init__(self, name: str, popen: subprocess.Popen[Any], log: Path | None) -> None:
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        self.log = log
        self.stop_seconds = 0.0

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 6) -> str:
        if self.log is None or not self.log.exists():
            return ""
        text = self.log.read_text(errors="replace").strip().splitlines()
        # "Handling connection" lines say nothing about why something failed
        keep = [t for t in text if not t.startswith("Handling connection")]
        return " | ".join(keep[-lines:])

    def count_lines(self, pattern: str) -> int:
        """Lines of the log matching `pattern` (e.g. error lines a forwarder printed)."""
        if self.log is None or not self.log.exists():
            return 0
        rx = re.compile(pattern)
        return sum(
            1 for line in self.log.read_text(errors="replace").splitlines() if rx.search(line)
        )

    def wait_for_line(self, pattern: str, timeout: float) -> re.Match[str] | None:
        """Wait until the log has a line matching `pattern` (or the child exits / time runs out)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # bounded by the deadline
            if self.log is not None and self.log.exists():
                m = rx.search(self.log.read_text(errors="replace"))
                if m:
                    return m
            if not self.alive():
                return None
            time.sleep(0.05)
        return None


class Registry:
    """All children of this run; `stop_all()` in a finally block ends every one of them."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[Proc] = []
        self.history: list[tuple[str, int]] = []  # every child ever started (name, pid)
        self._n = 0

    def start(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        pipes: bool = False,
    ) -> Proc:
        self._n += 1
        log = None
        stdin: Any = subprocess.DEVNULL
        stdout: Any
        if pipes:  # stdin/stdout are the command channel; stderr goes to the log
            stdin, stdout = subprocess.PIPE, subprocess.PIPE
            log = self.logdir / f"{self._n:02d}-{name}.log"
            stderr: Any = open(log, "wb")  # noqa: SIM115 - closed with the child
        else:
            # Files, not pipes: kubectl prints a line per connection and would block on a full pipe.
            log = self.logdir / f"{self._n:02d}-{name}.log"
            stdout = open(log, "wb")  # noqa: SIM115
            stderr = subprocess.STDOUT
        popen = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_child_setup,
        )
        for f in (stdout, stderr):
            if hasattr(f, "close") and f not in (subprocess.PIPE, subprocess.STDOUT):
                f.close()
        p = Proc(name, popen, log)
        self.procs.append(p)
        self.history.append((name, p.pid))
        return p

    def stop(self, p: Proc, grace: float = 3.0) -> None:
        """SIGINT (kubectl/fastpf send GOAWAY on it), then SIGTERM, then SIGKILL; by PID."""
        t0 = time.monotonic()
        if p.alive():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(p.pid, sig)  # the group this child leads (start_new_session)
                except ProcessLookupError:
                    break
                except PermissionError:
                    p.popen.send_signal(sig)
                try:
                    p.popen.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
        else:
            # its children (e.g. socat forks) may outlive it in its group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
        for f in (p.popen.stdin, p.popen.stdout):
            if f is not None:
                f.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.popen.wait(timeout=grace)
        if p in self.procs:
            self.procs.remove(p)
        p.stop_seconds = time.monotonic() - t0
        if p.stop_seconds > 1.0:
            print(f"[bench] {p.name} (pid {p.pid}) took {p.stop_seconds:.1f} s to stop", flush=True)

    def signal(self, p: Proc, sig: int = signal.SIGINT) -> None:
        """Ask a child to stop without waiting for it."""
        if p.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, sig)

    def stop_many(self, procs: list[Proc], grace: float = 3.0) -> None:
        """Stop several children in parallel: SIGINT to all, wait, then `stop` each (escalates)."""
        for p in procs:
            self.signal(p)
        deadline = time.monotonic() + grace
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(timeout=max(0.01, deadline - time.monotonic()))
        for p in procs:
            self.stop(p, grace)

    def stop_all(self) -> None:
        for p in reversed(list(self.procs)):
            self.stop(p)


# ---------------------------------------------------------------------------------------------
# /proc measurements


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces/parens: split after the last ")"
    return raw[raw.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """`pid` and every live descendant."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _stat(int(entry))
        if st is None:
            continue
        children.setdefault(int(st[1]), []).append(int(entry))
    out, todo = [], [pid]
    for _ in range(100_000):  # bounded walk
        if not todo:
            break
        cur = todo.pop()
        out.append(cur)
        todo.extend(children.get(cur, []))
    return out


def cpu_seconds(pid: int) -> float:
    """utime+stime of the process tree, plus children already reaped (cutime+cstime)."""
    total = 0
    for p in descendants(pid):
        st = _stat(p)
        if st is None:
            continue
        # fields after comm: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
        total += int(st[11]) + int(st[12]) + int(st[13]) + int(st[14])
    return total / CLK_TCK


def peak_rss_kib(pid: int) -> tuple[int, str]:
    """Peak memory of a forwarder: VmHWM for one process; for a process tree (socat forks one
    child per connection) the sum of current Pss, so shared pages are not counted 1,000 times."""
    tree = descendants(pid)
    if len(tree) == 1:
        return vm_kib(pid, "VmHWM"), "VmHWM"
    total = 0
    for p in tree:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total, f"sum of Pss over {len(tree)} processes"


def vm_kib(pid: int, key: str) -> int:
    """Sum of /proc/PID/status `key` (VmHWM, VmRSS) over the process tree, in KiB."""
    total = 0
    for p in descendants(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


class LineChannel:
    """JSON-line request/response over a child's stdin/stdout, with a timeout per call."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        assert proc.popen.stdin is not None and proc.popen.stdout is not None
        self.w: IO[bytes] = proc.popen.stdin
        self.r: IO[bytes] = proc.popen.stdout

    def call(self, line: bytes, timeout: float) -> bytes | None:
        try:
            self.w.write(line + b"\n")
            self.w.flush()
        except (BrokenPipeError, OSError):
            return None
        ready, _, _ = select.select([self.r], [], [], timeout)
        if not ready:
            return None
        out = self.r.readline()
        return out or None


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (all CPUs), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
    vals = [int(x) for x in fields[:8]]
    return (sum(vals) - vals[3] - vals[4]) / CLK_TCK


def own_cpu_seconds() -> float:
    """CPU of this process plus every child it (or they, recursively) reaped."""
    import resource

    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime
