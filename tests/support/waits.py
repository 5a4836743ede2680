"""Bounded waits: `time_until` (seconds until a check holds), `wait_line` (until a process
prints a line containing a needle), `wait_until` (the same inside a running loop)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from tests.support.processes import KubectlPortForward


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


def wait_line(pf: KubectlPortForward, needle: str, timeout: float) -> float:
    """Seconds until a stderr line of `pf` contains `needle`."""
    return time_until(lambda: any(needle in ln for ln in list(pf.stderr)), timeout)


async def wait_until(check: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    for _ in range(max(1, int(timeout / step))):
        if check():
            return True
        await asyncio.sleep(step)
    return check()
