"""The Python API: a port-forward as a context manager, for async and for plain code.

    async with fastpf.forward("svc/db", "0:5432", namespace="prod", context="dev") as fwd:
        await connect(port=fwd.local_port)

    with fastpf.forward("deploy/web", ["8080:80", ":9090"]) as fwd:   # no event loop needed
        requests.get(fwd.url("/healthz"))

`async with` runs the forward on the running loop. `with` runs it on a loop of its own in a
background thread (daemon: it never keeps the interpreter alive) and waits for the listeners,
so the port is usable when the block starts. Either way the forward is fastpf's
(fastpf.client.forward wraps the same Forwarder the command line uses), failures raise
`fastpf.ClientError` with kubectl's message, and leaving the block stops it (listeners closed,
connections ended).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from fastpf.client.console import Console
from fastpf.client.events import Target, Tracker
from fastpf.errors import ClientError

EventCallback = Callable[[dict[str, Any]], None]
START_GRACE = 60.0  # `with`: beyond pod_running_timeout, how long the start may take at most


class PortForward:
    """One running forward. Create it with `fastpf.forward(...)`; use it with `async with` or
    `with`. Its attributes are valid inside the block."""

    def __init__(
        self,
        target: str,
        ports: str | int | Sequence[str | int],
        *,
        namespace: str | None = None,
        context: str | None = None,
        kubeconfig: str | None = None,
        address: str = "localhost",
        protocol: str = "auto",
        pod_running_timeout: float = 60.0,
        on_event: EventCallback | None = None,
        **kubectl_options: Any,
    ) -> None:
        """`ports` as kubectl takes them ("5432", "8080:80", ":5432" / "0:5432" for a free
        local port, "http" for a named port). `kubectl_options` are further Options fields
        (e.g. cluster=, user=, token=, server=, insecure_skip_tls_verify=, impersonate=).
        `on_event(dict)` receives the events of docs/EVENTS.md (on the forward's loop thread;
        it must not block)."""
        self.target = target
        self.ports = [str(ports)] if isinstance(ports, (str, int)) else [str(p) for p in ports]
        if not self.ports:
            raise ValueError("at least one port is required")
        self._options: dict[str, Any] = dict(
            namespace=namespace,
            context=context,
            kubeconfig=kubeconfig,
            address=address,
            protocol=protocol,
            pod_running_timeout=pod_running_timeout,
            **kubectl_options,
        )
        self._on_event = on_event
        self._pending: list[dict[str, Any]] | None = []  # events before the target is known
        self._tracker = Tracker(Target(target), self._emit)
        self._fwd: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cm: Any = None
        self._devnull: Any = None
        # `with`: the background thread and how to stop it
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    # ---- what the block uses -------------------------------------------------------------------
    @property
    def local_ports(self) -> list[int]:
        """The local port of each port spec, in order (random ones resolved)."""
        return list(self._running().bound_ports)

    @property
    def local_port(self) -> int:
        """The local port of the first port spec."""
        return self.local_ports[0]

    @property
    def remote_ports(self) -> list[int]:
        return [p.remote for p in self._running().pairs]

    @property
    def address(self) -> str:
        """An address the listeners are bound on, to connect to (IPv4 loopback first)."""
        addresses = self._running().addresses
        first = addresses[0] if addresses else "localhost"
        return "127.0.0.1" if first == "localhost" else first

    @property
    def namespace(self) -> str:
        return str(self._running().api.cfg.namespace)

    @property
    def pod(self) -> str:
        return self._tracker.target.pod

    def url(self, path: str = "/", scheme: str = "http", port_index: int = 0) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{scheme}://{host}:{self.local_ports[port_index]}{path}"

    def stats(self) -> list[dict[str, Any]]:
        """Per forwarded port: active / total connections, bytes each way (live ones
        included), errors, last error. Safe to call from any thread."""

        def snap() -> list[dict[str, Any]]:
            out = []
            for s in self._tracker.snapshot():
                row = asdict(s)
                row.pop("target")
                out.append(row)
            return out

        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running() or self._on_own_loop():
            return snap()  # not started, ended (the counts stay), or called on its own loop
        future: concurrent.futures.Future[list[dict[str, Any]]] = concurrent.futures.Future()
        loop.call_soon_threadsafe(lambda: future.set_result(snap()))
        return future.result(timeout=30)

    # ---- async -------------------------------------------------------------------------------
    async def __aenter__(self) -> PortForward:
        from fastpf.client.forward import forward

        self._loop = asyncio.get_running_loop()
        self._devnull = open(os.devnull, "w")  # noqa: SIM115 - closed in _close
        console = Console(self._devnull, self._devnull, quiet=True)
        console.on_error = self._tracker.error
        self._cm = forward(
            self.target, self.ports, console=console, observer=self._tracker, **self._options
        )
        try:
            self._fwd = await self._cm.__aenter__()
        except BaseException:
            self._close()
            raise
        self._resolved()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            if self._cm is not None:
                await self._cm.__aexit__(*exc)
        finally:
            self._close()

    # ---- sync (a loop in a background thread) ------------------------------------------------
    def __enter__(self) -> PortForward:
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._thread_main, args=(started,), daemon=True, name=f"fastpf {self.target}"
        )
        self._thread.start()
        timeout = float(self._options.get("pod_running_timeout") or 60.0) + START_GRACE
        try:
            started.result(timeout=timeout)  # raises what the start raised
        except concurrent.futures.TimeoutError:
            self.__exit__(None, None, None)
            raise ClientError(f"the forward did not start within {timeout:.0f}s") from None
        except BaseException:
            self._thread.join(timeout=30)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(timeout=30)

    def _thread_main(self, started: concurrent.futures.Future[None]) -> None:
        from fastpf.loop import new_event_loop

        loop = new_event_loop()
        try:
            loop.run_until_complete(self._serve(started))
        except BaseException as exc:  # noqa: BLE001 - handed to __enter__
            if not started.done():
                started.set_exception(exc)
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self, started: concurrent.futures.Future[None]) -> None:
        self._stop = asyncio.Event()
        async with self:
            started.set_result(None)
            await self._stop.wait()
        from fastpf.transport.tls import lingering_done

        await lingering_done()  # before the loop ends: see lingering_done

    # ---- helpers -------------------------------------------------------------------------------
    def _running(self) -> Any:
        if self._fwd is None:
            raise RuntimeError("the forward is not running (use it inside `with` / `async with`)")
        return self._fwd

    def _on_own_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _resolved(self) -> None:
        """Started: the target's namespace, context and pod are known; send what waited."""
        fwd = self._fwd
        target = self._tracker.target
        target.namespace = fwd.api.cfg.namespace
        target.context = fwd.api.cfg.context
        parts = fwd.path.strip("/").split("/")
        if len(parts) >= 3 and parts[-1] == "portforward":
            target.pod = parts[-2]
        pending, self._pending = self._pending or [], None
        for event in pending:
            event.update(target.fields())
            self._deliver(event)
        from fastpf.client.events import SCHEMA, ready_document
        from fastpf.goparity import format_rfc3339_micro

        self._emit(
            {
                "schema": SCHEMA,
                "event": "ready",
                "time": format_rfc3339_micro(),
                "forwards": ready_document([self._tracker])["forwards"],
            }
        )

    def _emit(self, event: dict[str, Any]) -> None:
        if self._pending is not None:
            self._pending.append(event)
        else:
            self._deliver(event)

    def _deliver(self, event: dict[str, Any]) -> None:
        if self._on_event is not None:
            self._on_event(event)

    def _close(self) -> None:
        if self._devnull is not None:
            self._devnull.close()
            self._devnull = None


def forward(
    target: str,
    ports: str | int | Sequence[str | int],
    *,
    namespace: str | None = None,
    context: str | None = None,
    kubeconfig: str | None = None,
    address: str = "localhost",
    protocol: str = "auto",
    pod_running_timeout: float = 60.0,
    on_event: EventCallback | None = None,
    **kubectl_options: Any,
) -> PortForward:
    """Forward `ports` of `target` (kubectl's TYPE/NAME) while a `with` / `async with` block
    runs. See PortForward."""
    return PortForward(
        target,
        ports,
        namespace=namespace,
        context=context,
        kubeconfig=kubeconfig,
        address=address,
        protocol=protocol,
        pod_running_timeout=pod_running_timeout,
        on_event=on_event,
        **kubectl_options,
    )


__all__ = ["ClientError", "PortForward", "forward"]
