"""Pods that move: for selector targets (svc/, deploy/, rs/, sts/, ...) the chosen pod is polled
through the API; when it is deleted, leaves phase Running or starts terminating, the forward is
told (`on_gone(pod, reason)`) and sends new connections to another running pod of the selector.

Polling one pod by name (a small GET on the kept-alive REST connection) rather than a watch
stream: it needs no long-lived response on the one-request-at-a-time REST client, costs one
request per interval, and `poke()` makes it look at once when a connection hints that the pod
is gone (an error stream text, a refused stream).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from fastpf.client.api import ApiClient, pod_path
from fastpf.client.resolve import is_serving
from fastpf.errors import ApiError

POLL_INTERVAL = 2.0
REQUEST_TIMEOUT = 5.0  # a frozen API server must not hold the REST client (reconnect uses it)


def gone_reason(pod: dict[str, Any] | None) -> str | None:
    """Why `pod` (None: 404) no longer takes new connections, or None if it does."""
    if pod is None:
        return "was deleted"
    if is_serving(pod):
        return None
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "is terminating"
    return f"is {(pod.get('status') or {}).get('phase') or 'not running'}"


class PodWatcher:
    def __init__(
        self,
        api: ApiClient,
        namespace: str,
        current: Callable[[], str],
        on_gone: Callable[[str, str], None],
        *,
        interval: float = POLL_INTERVAL,
        log: Callable[[int, str], None] | None = None,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.current = current
        self.on_gone = on_gone
        self.interval = interval
        self.log = log or (lambda level, msg: None)
        self.polls = 0
        self._poke = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def poke(self) -> None:
        """Look now (a connection failed in a way that suggests the pod is gone)."""
        self._poke.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _run(self) -> None:
        for _ in range(1 << 40):  # one poll per interval (or poke) while the forward runs
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.interval)
            self._poke.clear()
            pod = self.current()
            if pod:
                await self.check(pod)

    async def check(self, name: str) -> None:
        self.polls += 1
        try:
            obj: dict[str, Any] | None = await asyncio.wait_for(
                self.api.get(pod_path(self.namespace, name), what=f"get pods {name}"),
                REQUEST_TIMEOUT,
            )
        except ApiError as exc:
            if exc.status != 404:
                self.log(4, f"pod watch: {exc.message}")
                return
            obj = None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - server away: the connections notice that
            self.log(4, f"pod watch: {getattr(exc, 'message', None) or exc or type(exc).__name__}")
            return
        reason = gone_reason(obj)
        if reason is not None:
            self.log(4, f"pod watch: pod {name} {reason}")
            self.on_gone(name, reason)
