"""A pool of upgraded SPDY connections (protocols spdy and websocket) that stays up.

New local connections go to the least-loaded live connection of the pool, so one slow local
reader (SPDY here has no per-stream flow control: a full local socket stops the reading of its
whole upgraded connection) or one lost TCP connection only affects its share. A supervisor task
brings lost connections back: re-resolve the target, upgrade again, capped jittered backoff,
one console line per event (fastpf.client.reconnect). Local connections that arrive while no
connection is up wait, bounded, then flow. When the target's pod moves (`moved`, from the pod
watcher, or a re-resolve that picks another pod) the pool starts a new generation of slots for
the new pod; the old slots take no new streams and are closed once their last one ended.

The session-layer contract used here is written at the top of fastpf.client.reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastpf.client.reconnect import (
    ATTEMPT_TIMEOUT,
    Backoff,
    DeadPeer,
    Episode,
    describe_loss,
    give_up_message,
    set_keepalive,
)
from fastpf.errors import PoolUnavailable
from fastpf.goparity import format_duration


@dataclass(frozen=True)
class Endpoint:
    """Where the upgraded connections go: the pod, the upgrade path and, per listener (in the
    order of the port pairs), the pod port (a service's targetPort may differ between pods)."""

    pod: str
    path: str
    remotes: tuple[int, ...]


# Losses within this long are one event (one line): a server that goes away ends all of its
# connections within a few milliseconds, in separate loop iterations.
LOSS_GATHER = 0.02


class Slot:
    """One upgraded connection of the pool (conn None while it is down)."""

    __slots__ = ("index", "endpoint", "conn", "active", "draining")

    def __init__(self, index: int, endpoint: Endpoint) -> None:
        self.index = index
        self.endpoint = endpoint
        self.conn: Any = None
        self.active = 0  # local connections using it
        self.draining = False  # its pod was left: no new streams; closed when idle

    def __repr__(self) -> str:
        return f"<Slot {self.index} {self.endpoint.pod} active={self.active} up={self.live}>"

    @property
    def live(self) -> bool:
        c = self.conn
        return c is not None and not c.is_closing


Opener = Callable[[Endpoint, "float | None"], Awaitable[Any]]
Resolver = Callable[[str], Awaitable[Endpoint]]


class SessionPool:
    """`size` upgraded connections to `endpoint`, kept up.

    opener(endpoint, timeout) -> connection (raises with a one-line reason);
    resolver(current pod) -> Endpoint (None: the endpoint never changes, e.g. --raw-path);
    reconnect False: the first loss resolves `fatal` with kubectl's "lost connection to pod".
    give_up_after: how long the forward may stay without any live connection before `fatal`
    resolves (--pod-running-timeout). `fatal` is a future with the message that ends the forward.
    """

    def __init__(
        self,
        *,
        size: int,
        opener: Opener,
        resolver: Resolver | None,
        observer: Any,
        reconnect: bool = True,
        give_up_after: float = 60.0,
        ping_interval: float = 0.0,
        ping_timeout: float = 0.0,
        log: Callable[[int, str], None] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.size = size
        self.opener = opener
        self.resolver = resolver
        self.observer = observer
        self.reconnect = reconnect
        self.give_up_after = give_up_after
        self.log = log or (lambda level, msg: None)
        self.endpoint = Endpoint("", "", ())
        self.slots: list[Slot] = []
        self.draining: set[Slot] = set()
        self.fatal: asyncio.Future[str] = self.loop.create_future()
        self.closed = False
        self.dead_peer = DeadPeer(self.loop, ping_interval, ping_timeout)
        self.episode = Episode(self.loop, observer, backoff)
        self.opened = 0  # upgrades done (stats, tests)
        self._available = asyncio.Event()
        self._wake = asyncio.Event()
        self._lost_batch: list[str] = []
        self._resolve_needed = False
        self._moved_reason = ""
        self._unusable_since: float | None = None
        self._task: asyncio.Task[None] | None = None

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self, endpoint: Endpoint) -> Any:
        """Open the first connection (its failure is the caller's: kubectl exits 1), then fill
        the rest of the pool in the background. Returns the first connection."""
        self.endpoint = endpoint
        self.slots = [Slot(i, endpoint) for i in range(self.size)]
        conn = await self.opener(endpoint, None)
        self._attach(self.slots[0], conn)
        self._task = asyncio.ensure_future(self._supervise())
        return conn

    async def close(self) -> None:
        """GOAWAY every connection, stop the supervisor (SIGINT / leaving `async with`)."""
        self.closed = True
        self.dead_peer.close()
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for slot in [*self.slots, *self.draining]:
            if slot.conn is not None:
                with contextlib.suppress(Exception):
                    slot.conn.goaway(0)
        self.draining.clear()
        self._available.set()  # waiters see `closed`

    # ---- local connections -----------------------------------------------------------------------
    def pick(self) -> Slot | None:
        """The least-loaded live slot of the current generation (lowest index on ties)."""
        best: Slot | None = None
        for slot in self.slots:
            c = slot.conn
            if c is not None and not c.is_closing and (best is None or slot.active < best.active):
                best = slot
        return best

    async def acquire(self, timeout: float) -> Slot:
        """A slot for a new local connection (counted until release()); waits up to `timeout`
        seconds while none is up. Raises PoolUnavailable."""
        slot = self.pick()
        if slot is None:
            slot = await self._wait_slot(timeout)
        slot.active += 1
        return slot

    def release(self, slot: Slot) -> None:
        slot.active -= 1
        if slot.active <= 0 and slot.draining:
            self._retire(slot)

    async def _wait_slot(self, timeout: float) -> Slot:
        deadline = self.loop.time() + timeout
        for _ in range(1 << 20):  # each pass waits for a change or ends
            if self.fatal.done() or self.closed:
                raise PoolUnavailable(self.fatal.result() if self.fatal.done() else "closing")
            slot = self.pick()
            if slot is not None:
                return slot
            left = deadline - self.loop.time()
            if left <= 0:
                break
            self._available.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._available.wait(), left)
        raise PoolUnavailable(
            f"no connection to pod {self.endpoint.pod} within "
            f"{format_duration(timeout)}: {self.episode.reason or 'not connected'}"
        )

    # ---- connections coming and going ------------------------------------------------------------
    def _attach(self, slot: Slot, conn: Any) -> None:
        slot.conn = conn
        self.opened += 1
        set_keepalive(conn)
        self.dead_peer.add(conn)
        conn.closed.add_done_callback(functools.partial(self._on_closed, slot, conn))
        self._unusable_since = None
        self._available.set()

    def _on_closed(self, slot: Slot, conn: Any, fut: asyncio.Future[Any]) -> None:
        self.dead_peer.discard(conn)
        if slot.conn is not conn:
            return
        slot.conn = None
        if slot.draining:
            self.draining.discard(slot)
            return
        if self.closed or self.fatal.done():
            return
        reason = describe_loss(conn, fut.result())
        self.log(4, f"upgraded connection {slot.index} to pod {slot.endpoint.pod} ended: {reason}")
        if not self.reconnect:
            self.fatal.set_result("lost connection to pod")
            self._available.set()
            return
        self._resolve_needed = True
        if self.episode.open:  # part of the outage being repaired: no line of its own
            self.episode.failed(reason)
        else:
            # Connections of one server usually end together: one line for all of them
            # (the supervisor gathers them for LOSS_GATHER before it reports).
            self._lost_batch.append(reason)
        self._wake.set()

    def _report_losses(self) -> None:
        batch, self._lost_batch = self._lost_batch, []
        if batch and not self.closed and not self.fatal.done():
            self.episode.begin(self.endpoint.pod, batch[0], len(batch), self.size)

    def _retire(self, slot: Slot) -> None:
        self.draining.discard(slot)
        conn = slot.conn
        if conn is not None and not conn.is_closing:
            with contextlib.suppress(Exception):
                conn.goaway(0)

    def moved(self, pod: str, reason: str) -> None:
        """The pod watcher saw `pod` stop serving (deleted, not Running, terminating): its
        connections take no new streams (established ones go on while the pod lives), and the
        target is resolved again for the new ones."""
        if self.closed or pod != self.endpoint.pod or self.fatal.done():
            return
        if self._moved_reason and self._resolve_needed:
            return  # already looking for another pod
        self._moved_reason = reason
        self._new_generation(self.endpoint)
        self._resolve_needed = True
        if not self.episode.open:
            self.episode.begin_quiet(pod, f"pod {pod} {reason}")
        self._wake.set()

    def _new_generation(self, endpoint: Endpoint) -> None:
        old = self.slots
        self.endpoint = endpoint
        self.slots = [Slot(i, endpoint) for i in range(self.size)]
        for slot in old:
            slot.draining = True
            if slot.conn is None:
                continue
            if slot.active <= 0:
                self._retire(slot)
            else:
                self.draining.add(slot)

    def _switch(self, endpoint: Endpoint) -> None:
        """A re-resolve chose another endpoint (another pod, or other pod ports)."""
        old = self.endpoint
        if old.pod != endpoint.pod:
            reason = self._moved_reason or "is gone or no longer running"
            self.observer.pod_changed(old.pod, endpoint.pod, reason)
        self._new_generation(endpoint)

    # ---- the supervisor ------------------------------------------------------------------------
    async def _supervise(self) -> None:
        fill = Backoff()
        try:
            for _ in range(1 << 40):  # one pass per attempt or per wake-up
                down = [s for s in self.slots if s.conn is None]
                if not down:
                    fill.reset()
                    self._moved_reason = ""
                    self.episode.succeeded(self.endpoint.pod)
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._attempt(down, fill)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - never silently: end the forward with a line
            if not self.fatal.done():
                self.fatal.set_result(f"reconnect failed: {str(exc) or type(exc).__name__}")
                self._available.set()

    def _give_up_check(self) -> bool:
        """Past --pod-running-timeout without any live connection: resolve `fatal`."""
        if self.pick() is not None:
            self._unusable_since = None
            return False
        now = self.loop.time()
        if self._unusable_since is None:
            self._unusable_since = now
            return False
        if now - self._unusable_since < self.give_up_after:
            return False
        self.fatal.set_result(
            give_up_message(self.endpoint.pod, self.give_up_after, self.episode.reason)
        )
        self._available.set()
        return True

    def _attempt_timeout(self) -> float:
        if self._unusable_since is None:
            return ATTEMPT_TIMEOUT
        left = self._unusable_since + self.give_up_after - self.loop.time()
        return max(1.0, min(ATTEMPT_TIMEOUT, left))

    async def _attempt(self, down: list[Slot], fill: Backoff) -> None:
        if self._give_up_check():
            await asyncio.Future()  # the forward ends: wait to be cancelled
        if self._lost_batch:
            await asyncio.sleep(LOSS_GATHER)
            self._report_losses()  # the line comes before the first attempt
        delay = self.episode.next_delay() if self.episode.open else fill.next()
        if delay > 0:
            await asyncio.sleep(delay)
        if self._give_up_check():
            await asyncio.Future()
        if self._resolve_needed and self.resolver is not None:
            try:
                endpoint = await asyncio.wait_for(
                    self.resolver(self.endpoint.pod), self._attempt_timeout()
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure is one more attempt
                self.episode.failed(_reason(exc))
                return
            self._resolve_needed = False
            if endpoint != self.endpoint:
                self._switch(endpoint)
            down = [s for s in self.slots if s.conn is None]
        timeout = self._attempt_timeout()
        results = await asyncio.gather(
            *(self._open(s, timeout) for s in down), return_exceptions=True
        )
        for res in results:
            if isinstance(res, BaseException):
                if isinstance(res, asyncio.CancelledError):
                    raise res
                self.episode.failed(_reason(res))
                self.log(4, f"upgrade failed: {_reason(res)}")
                self._resolve_needed = True  # the pod may be gone: look again next time
            elif not self.episode.open:
                fill.reset()

    async def _open(self, slot: Slot, timeout: float) -> None:
        conn = await self.opener(slot.endpoint, timeout)
        if self.closed or slot.draining or slot not in self.slots or slot.conn is not None:
            with contextlib.suppress(Exception):
                conn.goaway(0)
            return
        self._attach(slot, conn)


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    if isinstance(exc, asyncio.TimeoutError) and not text:
        return "timed out"
    return text or type(exc).__name__
