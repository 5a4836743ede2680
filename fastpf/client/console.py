"""The lines the user (and scripts reading our pipes) see, worded exactly as kubectl's.

stdout is flushed per line: scripts wait for "Forwarding from" through a pipe, where Python
would otherwise buffer. stderr lines for per-connection problems use klog's header so tools
that grep kubectl's log keep working.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO


def _fmt_addr(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class Console:
    def __init__(
        self,
        out: TextIO | None = None,
        err: TextIO | None = None,
        *,
        quiet: bool = False,
        verbosity: int = 0,
    ) -> None:
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.quiet = quiet
        self.verbosity = verbosity
        # fastpf's own options; the defaults print exactly kubectl's lines
        self.json = False  # -o json: the events replace the stdout lines
        self.label = ""  # many targets (-f): which one a "Forwarding from" line is about
        self.on_error: Callable[[str], None] | None = None  # events.Tracker.error
        self.live: Any = None  # stats.StatsView on a terminal: kept below other stderr lines

    def for_target(self, label: str, on_error: Callable[[str], None] | None) -> Console:
        """A console on the same streams and settings, for one of several targets."""
        other = Console(self.out, self.err, quiet=self.quiet, verbosity=self.verbosity)
        other.json, other.live, other.label, other.on_error = self.json, self.live, label, on_error
        return other

    def _write(self, stream: TextIO, line: str) -> None:
        live = self.live if stream is self.err else None
        if live is not None:
            live.clear()
        try:
            stream.write(line + "\n")
            stream.flush()
        except (BrokenPipeError, ValueError):
            # Reader went away (e.g. `| head`): forwarding goes on, output is dropped.
            pass
        if live is not None:
            live.redraw()

    def _report(self, message: str) -> None:
        if self.on_error is not None:
            self.on_error(message)

    # ---- stdout ---------------------------------------------------------------------------
    def forwarding(self, address: str, local: int, remote: int) -> None:
        if not self.json:
            suffix = f" ({self.label})" if self.label else ""
            self._write(
                self.out, f"Forwarding from {_fmt_addr(address, local)} -> {remote}{suffix}"
            )

    def handling(self, local: int) -> None:
        if not self.quiet and not self.json:
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
        self._report(message)

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
        f'{tm.tm_sec:02d}.{micros:06d} {os.getpid():7d} fastpf] "Unhandled Error" err="{escaped}"'
        if severity == "E"
        else f"{severity}{tm.tm_mon:02d}{tm.tm_mday:02d} {tm.tm_hour:02d}:{tm.tm_min:02d}:"
        f"{tm.tm_sec:02d}.{micros:06d} {os.getpid():7d} fastpf] {message}"
    )
