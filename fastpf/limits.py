"""Process resource limits: both entry points (client and serve) call `raise_nofile_limit()`
once at start, as Go programs do (Go >= 1.19 raises its soft RLIMIT_NOFILE to the hard limit
at start; kubectl therefore holds thousands of connections where a 1024 soft limit would
refuse them).

`nofile_limit()` is the soft limit in force, re-read at most once a second (an operator may
change it with prlimit while we run); listeners and serve's connection budget use it.
"""

from __future__ import annotations

import time

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
