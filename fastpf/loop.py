"""Event loop selection: uvloop where it is installed (Linux/macOS), plain asyncio elsewhere."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # Windows, or a platform without wheels: asyncio works, only slower
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion on a fresh (uv)loop."""
    # Every forwarded connection allocates a few dozen short-lived objects and profiles of
    # connection churn showed ~3-5 % of CPU in the collector: keep the start-up heap (modules,
    # config) out of the full collections. (A larger young-generation threshold measured no
    # better and makes each collection a longer pause in the latency tail.)
    gc.collect()
    gc.freeze()
    with (
        asyncio.Runner(loop_factory=new_event_loop)
        if hasattr(asyncio, "Runner")
        else _Legacy() as runner
    ):
        return runner.run(coro)


class _Legacy:
    """asyncio.Runner for Python 3.10."""

    def __enter__(self) -> _Legacy:
        self.loop = new_event_loop()
        return self

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def __exit__(self, *exc: object) -> None:
        self.loop.close()
