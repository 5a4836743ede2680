"""Reconnect for ws-channel, which opens one WebSocket per local connection (as the Python
client): there is no long-lived connection to bring back, so the gate tracks whether dials
work. After a dial failed for a reason a retry may cure (server down, pod gone, 5xx, 401), new
local connections wait (bounded) while one recovery task re-resolves the target with backoff;
then they dial again. Live channel sessions are pinged with WebSocket pings (DeadPeer).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from fastpf.client.reconnect import (
    ATTEMPT_TIMEOUT,
    DeadPeer,
    Episode,
    give_up_message,
)
from fastpf.client.session_pool import Endpoint, Resolver
from fastpf.errors import PoolUnavailable
from fastpf.goparity import format_duration


class ChannelGate:
    def __init__(
        self,
        endpoint: Endpoint,
        *,
        resolver: Resolver | None,
        observer: Any,
        give_up_after: float = 60.0,
        ping_interval: float = 0.0,
        ping_timeout: float = 0.0,
        log: Callable[[int, str], None] | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.endpoint = endpoint
        self.resolver = resolver
        self.observer = observer
        self.give_up_after = give_up_after
        self.log = log or (lambda level, msg: None)
        self.fatal: asyncio.Future[str] = self.loop.create_future()
        self.dead_peer = DeadPeer(self.loop, ping_interval, ping_timeout)
        self.episode = Episode(self.loop, observer)
        self.closed = False
        self._up = asyncio.Event()
        self._up.set()
        self._down_since: float | None = None
        self._moved_reason = ""
        self._task: asyncio.Task[None] | None = None

    def track(self, conn: Any) -> None:
        """A live channel session: ping it until it ends."""
        self.dead_peer.add(conn)
        conn.closed.add_done_callback(lambda _f: self.dead_peer.discard(conn))

    async def wait_up(self, timeout: float) -> Endpoint:
        """The endpoint to dial now; waits up to `timeout` while recovering."""
        if self._up.is_set() and not self.fatal.done():
            return self.endpoint
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._up.wait(), timeout)
        if self.fatal.done():
            raise PoolUnavailable(self.fatal.result())
        if not self._up.is_set():
            raise PoolUnavailable(
                f"no connection to pod {self.endpoint.pod} within "
                f"{format_duration(timeout)}: {self.episode.reason}"
            )
        return self.endpoint

    def failed(self, endpoint: Endpoint, reason: str) -> None:
        """A dial to `endpoint` failed: hold new connections and recover."""
        if self.closed or self.fatal.done() or endpoint != self.endpoint:
            return
        if not self.episode.open:
            self.episode.begin(endpoint.pod, reason)
        else:
            self.episode.failed(reason)
        self._hold()

    def succeeded(self) -> None:
        self._down_since = None
        self._moved_reason = ""
        self.episode.succeeded(self.endpoint.pod)

    def moved(self, pod: str, reason: str) -> None:
        """The pod watcher saw the pod stop serving: resolve again before the next dial."""
        if self.closed or pod != self.endpoint.pod or self.fatal.done():
            return
        if self._moved_reason and not self._up.is_set():
            return  # already looking for another pod
        self._moved_reason = reason
        if not self.episode.open:
            self.episode.begin_quiet(pod, f"pod {pod} {reason}")
        self._hold()

    def _hold(self) -> None:
        self._up.clear()
        if self._down_since is None:
            self._down_since = self.loop.time()
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._recover())

    async def _recover(self) -> None:
        for _ in range(1 << 30):  # one pass per attempt; ends when resolved or given up
            assert self._down_since is not None
            left = self._down_since + self.give_up_after - self.loop.time()
            if left <= 0:
                self.fatal.set_result(
                    give_up_message(self.endpoint.pod, self.give_up_after, self.episode.reason)
                )
                self._up.set()  # waiters see `fatal`
                return
            delay = self.episode.next_delay()
            if delay > 0:
                await asyncio.sleep(min(delay, left))
            if self.resolver is None:
                break
            try:
                endpoint = await asyncio.wait_for(
                    self.resolver(self.endpoint.pod), max(1.0, min(ATTEMPT_TIMEOUT, left))
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure is one more attempt
                self.episode.failed(getattr(exc, "message", None) or str(exc) or type(exc).__name__)
                continue
            if endpoint.pod != self.endpoint.pod:
                self.observer.pod_changed(
                    self.endpoint.pod,
                    endpoint.pod,
                    self._moved_reason or "is gone or no longer running",
                )
            self.endpoint = endpoint
            break
        self._up.set()  # waiting connections dial; another failure holds them again

    async def close(self) -> None:
        self.closed = True
        self.dead_peer.close()
        self._up.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
