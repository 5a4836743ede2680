"""`--stats`: a live view of every forwarded port on stderr, and a summary line per port at exit.

On a terminal the block of lines (one per port) is redrawn in place every interval; other
stderr lines (kubectl's error lines) are written above it. Elsewhere (a pipe, a file, CI logs)
each refresh prints the block as plain lines, prefixed `[stats]`, so logs stay readable.
Rates are the bytes moved between two refreshes, live connections included.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from typing import TextIO

from fastpf.client.events import PortSnapshot, Tracker

TTY_INTERVAL = 1.0
PLAIN_INTERVAL = 10.0
MAX_ERROR = 60  # characters of the last error shown


def human_bytes(n: float) -> str:
    """Decimal units, as the demo and the benchmarks print them: 999 B, 1.2 kB, 3.4 MB."""
    if n < 1000:
        return f"{int(n)} B"
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000.0
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def human_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(seconds), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s"


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 3] + "..."


class StatsView:
    def __init__(
        self,
        trackers: list[Tracker],
        stream: TextIO,
        *,
        interval: float = 0.0,
        tty: bool | None = None,
        show_where: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.trackers = trackers
        self.stream = stream
        self.tty = bool(tty if tty is not None else getattr(stream, "isatty", lambda: False)())
        self.interval = interval or (TTY_INTERVAL if self.tty else PLAIN_INTERVAL)
        self.show_where = show_where  # many targets: name their context and namespace
        self.clock = clock
        self._previous: dict[tuple[int, int, int], tuple[float, int, int]] = {}
        self._drawn: list[str] = []  # the block currently on the terminal
        self._timer: asyncio.TimerHandle | None = None
        self.started = clock()

    # ---- lines ---------------------------------------------------------------------------------
    def _name(self, snap: PortSnapshot) -> str:
        name = snap.target.label() if self.show_where else snap.target.target
        return f"{name} {snap.local_port}->{snap.remote_port}"

    def lines(self) -> list[str]:
        """One line per port, rates since the previous call."""
        now = self.clock()
        out = []
        for index, tracker in enumerate(self.trackers):
            for snap in tracker.snapshot():
                key = (index, snap.local_port, snap.remote_port)
                then, up0, down0 = self._previous.get(key, (self.started, 0, 0))
                span = max(now - then, 1e-9)
                up_rate = (snap.bytes_to_pod - up0) / span
                down_rate = (snap.bytes_from_pod - down0) / span
                self._previous[key] = (now, snap.bytes_to_pod, snap.bytes_from_pod)
                error = _short(snap.last_error) if snap.last_error else "-"
                out.append(
                    f"{self._name(snap)}  active {snap.active}  conns {snap.connections}  "
                    f"down {human_bytes(snap.bytes_from_pod)} ({human_bytes(down_rate)}/s)  "
                    f"up {human_bytes(snap.bytes_to_pod)} ({human_bytes(up_rate)}/s)  "
                    f"reconnects {snap.reconnects}  last error: {error}"
                )
        return out

    def summary(self) -> list[str]:
        """The exit lines: one per port, over the whole run."""
        took = human_duration(self.clock() - self.started)
        out = []
        for tracker in self.trackers:
            for snap in tracker.snapshot():
                out.append(
                    f"[summary] {self._name(snap)}: {snap.connections} connection"
                    f"{'' if snap.connections == 1 else 's'}, "
                    f"down {human_bytes(snap.bytes_from_pod)}, up {human_bytes(snap.bytes_to_pod)}, "
                    f"{snap.errors} errors, {snap.reconnects} reconnects in {took}"
                )
        return out

    # ---- output --------------------------------------------------------------------------------
    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass

    def refresh(self) -> None:
        lines = self.lines()
        if not self.tty:
            self._write("".join(f"[stats] {line}\n" for line in lines))
            return
        width = max(20, shutil.get_terminal_size((120, 24)).columns - 1)
        lines = [line[:width] for line in lines]  # a wrapped line would break the redraw
        self.clear()
        self._drawn = lines
        self._write("".join(f"{line}\n" for line in lines))

    def clear(self) -> None:
        """Take the live block off the terminal (another line is about to be written)."""
        if self.tty and self._drawn:
            self._write(f"\x1b[{len(self._drawn)}F\x1b[J")

    def redraw(self) -> None:
        if self.tty and self._drawn:
            self._write("".join(f"{line}\n" for line in self._drawn))

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self.refresh()
        self._schedule()

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        self.refresh()
        self._schedule()

    def stop(self) -> None:
        """Stop refreshing and print the summary (the live block gives way to it)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.clear()
        self._drawn = []
        self._write("".join(f"{line}\n" for line in self.summary()))
