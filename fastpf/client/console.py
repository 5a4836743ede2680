"""The lines the user (and scripts reading our pipes) see, worded exactly as kubectl's.

stdout is flushed per line: scripts wait for "Forwarding from" through a pipe, where Python
would otherwise buffer. stderr lines for per-connection problems use klog's header so tools
that grep kubectl's log keep working.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO


def _fmt_addr(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class Console:
    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, *,
                 quiet: bool = False, verbosity: int = 0) -> None:
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.quiet = quiet
        self.verbosity = verbosity

    def _write(self, stream: TextIO, line: str) -> None:
        try:
            stream.write(line + "\n")
            stream.flush()
        except (BrokenPipeError, ValueError):
            # Reader went away (e.g. `| head`): forwarding goes on, output is dropped.
            pass

    # ---- stdout ---------------------------------------------------------------------------
    def forwarding(self, address: str, local: int, remote: int) -> None:
        self._write(self.out, f"Forwarding from {_fmt_addr(address, local)} -> {remote}")

    def handling(self, local: int) -> None:
        if not self.quiet:
            self._write(self.out, f"Handling connection for {local}")

    def usage(self, text: str) -> None:
        self._write(self.out, text)

    # ---- stderr ---------------------------------------------------------------------------
    def error(self, line: str) -> None:
        """A fatal one-line error, already prefixed (e.g. "error: ...")."""
        self._write(self.err, line)

    def plain(self, line: str) -> None:
        """An unprefixed stderr line kubectl prints as is (e.g. "Unable to listen on port ...")."""
        self._write(self.err, line)

    def conn_error(self, message: str) -> None:
        """A per-connection problem (kubectl's E-line); the session goes on."""
        self._write(self.err, klog_line("E", message))

    def warn(self, message: str) -> None:
        self._write(self.err, klog_line("W", message))

    def info(self, level: int, message: str) -> None:
        if self.verbosity >= level:
            self._write(self.err, klog_line("I", message))


def klog_line(severity: str, message: str) -> str:
    """klog's header (`E1126 15:18:36.577606   15564 file:line] msg`) with 1.31+ quoting."""
    now = time.time()
    tm = time.localtime(now)
    micros = int((now % 1) * 1e6)
    escaped = message.replace("\\", "\\\\").replace('"', '\\"')
    return (
        f"{severity}{tm.tm_mon:02d}{tm.tm_mday:02d} {tm.tm_hour:02d}:{tm.tm_min:02d}:"
        f"{tm.tm_sec:02d}.{micros:06d} {os.getpid():7d} fastpf] \"Unhandled Error\" err=\"{escaped}\""
        if severity == "E"
        else f"{severity}{tm.tm_mon:02d}{tm.tm_mday:02d} {tm.tm_hour:02d}:{tm.tm_min:02d}:"
        f"{tm.tm_sec:02d}.{micros:06d} {os.getpid():7d} fastpf] {message}"
    )
