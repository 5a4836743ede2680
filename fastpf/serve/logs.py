"""`fastpf serve -v N`: klog-style verbosity on top of `logging`, for every `fastpf.*` logger.

V(0) is logging.INFO and V(n) sits n below it, so `-v N` sets the level to INFO - N: the
default shows one line per port-forward session (start and end), per failed pod dial and per
refused upgrade (the engine logs those at INFO), -v 2 adds changes made through the API, -v 4
one line per request, -v 8 request headers (credentials masked). Lines carry klog's header
(`I1126 15:18:36.577606   15564 sessions.py:80] ...`), so tools that read kubelet logs work.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TextIO

MAX_VERBOSITY = 10


def V(level: int) -> int:  # noqa: N802 - klog's name
    """The logging level of klog's V(level)."""
    return logging.INFO - level


class KlogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        severity = (
            "E"
            if record.levelno >= logging.ERROR
            else "W"
            if record.levelno >= logging.WARNING
            else "I"
        )
        tm = time.localtime(record.created)
        micros = int((record.created % 1) * 1e6)
        message = record.getMessage().replace("\n", "\\n")
        return (
            f"{severity}{tm.tm_mon:02d}{tm.tm_mday:02d} {tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}."
            f"{micros:06d} {os.getpid():7d} {record.filename}:{record.lineno}] {message}"
        )


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802
        pass  # stderr gone (e.g. a closed pipe): serving goes on, the line is dropped


def setup(verbosity: int, stream: TextIO | None = None) -> None:
    """Route every `fastpf` logger to stderr at `-v verbosity` (0..10)."""
    verbosity = max(0, min(verbosity, MAX_VERBOSITY))
    root = logging.getLogger("fastpf")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(KlogFormatter())
    root.addHandler(handler)
    root.setLevel(V(verbosity))
    root.propagate = False
