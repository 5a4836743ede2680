"""Process resource limits: both entry points (client and serve) call `raise_nofile_limit()`
once at start, as Go programs do (Go >= 1.19 raises its soft RLIMIT_NOFILE to the hard limit
at start; kubectl therefore holds thousands of connections where a 1024 soft limit would
refuse them).

`nofile_limit()` is the soft limit in force, re-read at most once a second (an operator may
change it with prlimit while we run); listeners and serve's connection budget use it.
"""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from typing import Any

try:
    import resource
except ImportError:  # Windows: no rlimits, the C runtime's own limit applies
    resource = None  # type: ignore[assignment]

# macOS reports RLIM_INFINITY as the hard limit but refuses a soft limit above OPEN_MAX.
_FALLBACK_SOFT = 10240
_UNKNOWN = 1 << 20  # what we assume when the platform has no rlimits
_cache: tuple[float, int] | None = None


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft descriptor limit to the hard limit. Returns (soft, hard) now in force.
    Never raises: a platform or sandbox that refuses keeps its limit."""
    global _cache
    if resource is None:
        return (_UNKNOWN, _UNKNOWN)
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return (_UNKNOWN, _UNKNOWN)
    targets = [hard] if hard != resource.RLIM_INFINITY else [_FALLBACK_SOFT]
    if hard == resource.RLIM_INFINITY or hard > _FALLBACK_SOFT:
        targets.append(_FALLBACK_SOFT)
    for target in targets:
        if soft != resource.RLIM_INFINITY and target <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            continue
        soft = target
        break
    _cache = None
    return (soft, hard)


def nofile_limit() -> int:
    """The soft descriptor limit in force (cached for a second)."""
    global _cache
    now = time.monotonic()
    if _cache is not None and now - _cache[0] < 1.0:
        return _cache[1]
    value = _UNKNOWN
    if resource is not None:
        try:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            value = _UNKNOWN if soft == resource.RLIM_INFINITY else int(soft)
        except (OSError, ValueError):
            pass
    _cache = (now, value)
    return value


# -- giving freed memory back ------------------------------------------------------------------
# glibc returns freed heap memory to the system only from the top of its heap; what sessions
# and connections freed in the middle stays resident (2,000 closed sessions kept ~170 MiB).
# malloc_trim(0) gives back every free page (well under a millisecond). It runs once nothing
# ended for TRIM_QUIET seconds (at the latest TRIM_MAX_WAIT after the first end).
# An ended TLS session is freed only by a full garbage collection (uvloop's SSL protocol and
# its transport refer to each other, and to our session's read methods), and so is a relay
# with its read buffers (the relay and its sink adapter refer to each other); an idle process
# may not collect for hours. So when GC_SESSIONS sessions or GC_STREAMS streams ended, a full
# collection runs first, but only once no tracked session carries a connection: a collection
# after a burst pauses the loop for tens of milliseconds, which connections still forwarding
# would feel (ping-pong p99 0.5 -> 5 ms). While they do, it is tried again every
# TRIM_MAX_WAIT. Every full collection that freed much (Python's own too) is followed by a
# trim.
TRIM_QUIET = 1.0
TRIM_MAX_WAIT = 10.0
GC_SESSIONS = 100
GC_STREAMS = 2000
_trim_loop: asyncio.AbstractEventLoop | None = None  # the loop a trim is scheduled on
_malloc_trim: Any = None
_ended = 0  # sessions ended since the last collection
_streams_ended = 0
_first = 0.0  # monotonic time of the first and the last event since the last trim
_last = 0.0
_sessions: weakref.WeakSet[Any] = weakref.WeakSet()  # objects with busy() -> bool


def track(session: Any) -> None:
    """`session.busy()` tells whether it carries connections (no full collection then)."""
    _sessions.add(session)


def trim_soon(
    loop: asyncio.AbstractEventLoop, session_ended: bool = False, streams_ended: int = 0
) -> None:
    """Give freed memory back once things settle (no-op off glibc). `session_ended`: an
    upgraded session ended; `streams_ended`: that many streams ended (enough of either make
    the trim collect garbage first, when nothing is forwarding)."""
    global _trim_loop, _ended, _first, _last, _streams_ended
    if session_ended:
        _ended += 1
    _streams_ended += streams_ended
    if _malloc_trim is None and not _load_trim():
        return
    _last = time.monotonic()
    if _trim_loop is loop and not loop.is_closed():
        return
    _trim_loop = loop
    _first = _last
    loop.call_later(TRIM_QUIET, _trim)


def _load_trim() -> bool:
    global _malloc_trim
    try:
        import ctypes

        _malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        _malloc_trim = False
        return False
    gc.callbacks.append(_after_gc)
    return True


def _after_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "stop" and info.get("generation") == 2 and info.get("collected", 0) > 1000:
        _malloc_trim(0)


def _busy() -> bool:
    return any(s.busy() for s in list(_sessions))


def _trim() -> None:
    global _trim_loop, _ended, _streams_ended, _first
    now = time.monotonic()
    loop = _trim_loop
    if loop is None or loop.is_closed():
        _trim_loop = None
        return
    if now - _last < TRIM_QUIET and now - _first < TRIM_MAX_WAIT:
        loop.call_later(TRIM_QUIET - (now - _last), _trim)  # still busy ending things
        return
    if _ended >= GC_SESSIONS or _streams_ended >= GC_STREAMS:
        if _busy():
            _malloc_trim(0)  # what is free already; the collection waits for a quiet moment
            _first = now
            loop.call_later(TRIM_MAX_WAIT, _trim)
            return
        _ended = _streams_ended = 0
        gc.collect()  # trims through _after_gc when it freed much
    _trim_loop = None
    _malloc_trim(0)
