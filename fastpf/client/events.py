"""What a forward does, as events: the observer interface the forwarder calls, the per-target
accounting behind `--stats`, and the JSON objects of `-o json` (schema: docs/EVENTS.md).

The forwarder (fastpf.client.forward) calls a `ForwardObserver` on its loop thread when a
listener is bound and when a local connection opens and ends; the reconnect machinery calls
`lost` / `reconnecting` / `reconnected` / `pod_changed`; the Console reports the error lines it
prints. A `Tracker` is that observer for one target: it keeps the counts per forwarded port and
hands each event, as a JSON-ready dict, to its `emit` callback (the `-o json` writer, the
Python API's callback). Nothing here blocks or allocates per byte: byte counts are read from
the relay's result when asked for (a live view samples them once per refresh).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from fastpf.goparity import format_rfc3339_micro
from fastpf.transport.relay import RelayResult

SCHEMA = 1  # "schema" of every event object; bumped only for incompatible changes

_conn_ids = itertools.count(1)  # process-wide: ids stay unique across targets


class ForwardObserver(Protocol):
    """Hooks a Forwarder calls (all on its event loop thread; none may block or raise).

    `conn` is the connection's task (its identity until it ends) and `accepted` its local
    side (a relay.Accepted: the relay's byte counts are read from it)."""

    def listening(self, address: str, local_port: int, remote_port: int) -> None: ...
    def connection_opened(
        self, conn: Any, accepted: Any, local_port: int, remote_port: int
    ) -> None: ...
    def connection_closed(self, conn: Any) -> None: ...
    def relayed(self, result: RelayResult) -> None: ...  # in the connection's task, at its end
    def error(self, message: str) -> None: ...
    # reconnect events (fastpf.client.reconnect calls them; issue 12)
    def lost(self, pod: str, reason: str, count: int, total: int) -> None: ...
    def reconnecting(self, attempt: int, delay: float, reason: str) -> None: ...
    def reconnected(self, pod: str, attempts: int, downtime: float) -> None: ...
    def pod_changed(self, old: str, new: str, reason: str) -> None: ...


def live_result(accepted: Any) -> RelayResult | None:
    """The RelayResult of a local connection being relayed: once relay() has adopted the
    connection, the transport's protocol carries it, counting as bytes move (the loop drops
    the protocol when the connection closes: `ForwardObserver.relayed` gives the final one)."""
    transport = getattr(accepted, "transport", None)
    protocol = transport.get_protocol() if transport is not None else None
    result = getattr(protocol, "result", None)
    return result if isinstance(result, RelayResult) else None


@dataclass
class Target:
    """Who a Tracker speaks for: the target as given, where it resolved to."""

    target: str
    namespace: str = ""
    context: str = ""
    pod: str = ""
    name: str = ""  # the `name:` of a forward in a -f file

    def fields(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "name": self.name or None,
            "namespace": self.namespace,
            "context": self.context or None,
            "pod": self.pod or None,
        }

    def label(self) -> str:
        where = [f"context {self.context}"] if self.context else []
        if self.namespace:
            where.append(f"namespace {self.namespace}")
        name = self.name or self.target
        return f"{name} ({', '.join(where)})" if where else name


@dataclass
class PortStats:
    """Counts of one forwarded port (local -> remote) of one target."""

    local_port: int
    remote_port: int
    addresses: list[str] = field(default_factory=list)
    active: int = 0
    connections: int = 0
    bytes_to_pod: int = 0  # of connections that ended (live ones: Tracker.snapshot)
    bytes_from_pod: int = 0
    errors: int = 0
    last_error: str = ""


@dataclass
class _Conn:
    id: int
    accepted: Any
    port: PortStats
    started: float
    error: str | None = None
    result: RelayResult | None = None  # kept once seen: the same object counts to the end

    def counts(self) -> tuple[int, int]:
        """(bytes to the pod, bytes from the pod) so far."""
        if self.result is None:
            self.result = live_result(self.accepted)
        return (self.result.sent, self.result.received) if self.result is not None else (0, 0)


@dataclass
class PortSnapshot:
    """One port's counts at one moment, live connections included."""

    target: Target
    local_port: int
    remote_port: int
    active: int
    connections: int
    bytes_to_pod: int
    bytes_from_pod: int
    errors: int
    last_error: str
    reconnects: int


class Tracker:
    """The ForwardObserver of one target: counts per port and one event dict per event."""

    def __init__(
        self,
        target: Target,
        emit: Callable[[dict[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.emit = emit
        self.clock = clock
        self.ports: dict[tuple[int, int], PortStats] = {}
        self._conns: dict[Any, _Conn] = {}
        self.reconnects = 0
        self.last_error = ""  # also session-level problems (lost connection, ...)
        self.started = clock()

    # ---- helpers -------------------------------------------------------------------------------
    def _event(self, name: str, **fields: Any) -> None:
        if self.emit is not None:
            self.emit(
                {
                    "schema": SCHEMA,
                    "event": name,
                    "time": format_rfc3339_micro(),
                    **self.target.fields(),
                    **fields,
                }
            )

    def _port(self, local: int, remote: int) -> PortStats:
        port = self.ports.get((local, remote))
        if port is None:
            port = self.ports[(local, remote)] = PortStats(local, remote)
        return port

    # ---- ForwardObserver -----------------------------------------------------------------------
    def listening(self, address: str, local_port: int, remote_port: int) -> None:
        port = self._port(local_port, remote_port)
        if address not in port.addresses:
            port.addresses.append(address)
        self._event("listening", address=address, local_port=local_port, remote_port=remote_port)

    def connection_opened(
        self, conn: Any, accepted: Any, local_port: int, remote_port: int
    ) -> None:
        port = self._port(local_port, remote_port)
        port.active += 1
        port.connections += 1
        record = self._conns[conn] = _Conn(next(_conn_ids), accepted, port, self.clock())
        self._event(
            "connection_opened", id=record.id, local_port=local_port, remote_port=remote_port
        )

    def connection_closed(self, conn: Any) -> None:
        record = self._conns.pop(conn, None)
        if record is None:
            return
        port = record.port
        port.active -= 1
        to_pod, from_pod = record.counts()
        port.bytes_to_pod += to_pod
        port.bytes_from_pod += from_pod
        self._event(
            "connection_closed",
            id=record.id,
            local_port=port.local_port,
            remote_port=port.remote_port,
            bytes_to_pod=to_pod,
            bytes_from_pod=from_pod,
            duration_s=round(self.clock() - record.started, 6),
            error=record.error,
        )

    def relayed(self, result: RelayResult) -> None:
        record = self._current()
        if record is not None:
            record.result = result

    def _current(self) -> _Conn | None:
        """The connection whose task is running (errors and results are reported from it)."""
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no running loop (e.g. a fatal error after the loop ended)
            return None
        return self._conns.get(task) if task is not None else None

    def error(self, message: str, fatal: bool = False) -> None:
        """An error line the user saw (per connection: kubectl's E-line text)."""
        record = self._current()
        if record is not None:
            record.error = record.error or message
            record.port.errors += 1
            record.port.last_error = message
        else:  # about the whole target (e.g. the connection to the API server)
            self.last_error = message
        self._event(
            "error",
            message=message,
            id=record.id if record else None,
            local_port=record.port.local_port if record else None,
            fatal=fatal,
        )

    def lost(self, pod: str, reason: str, count: int, total: int) -> None:
        self.last_error = reason
        if pod:
            self.target.pod = pod
        self._event("lost", reason=reason, connections_lost=count, connections_total=total)

    def reconnecting(self, attempt: int, delay: float, reason: str) -> None:
        self._event("reconnecting", attempt=attempt, delay_s=round(delay, 3), reason=reason)

    def reconnected(self, pod: str, attempts: int, downtime: float) -> None:
        self.reconnects += 1
        if pod:
            self.target.pod = pod
        self._event("reconnected", attempts=attempts, downtime_s=round(downtime, 3))

    def pod_changed(self, old: str, new: str, reason: str) -> None:
        self.target.pod = new
        self._event("pod_changed", old_pod=old, reason=reason)

    # ---- reading -------------------------------------------------------------------------------
    def snapshot(self) -> list[PortSnapshot]:
        """Every port's counts now, including the bytes of connections still open."""
        live: dict[tuple[int, int], tuple[int, int]] = {}
        for record in self._conns.values():
            key = (record.port.local_port, record.port.remote_port)
            to_pod, from_pod = record.counts()
            a, b = live.get(key, (0, 0))
            live[key] = (a + to_pod, b + from_pod)
        out = []
        for key, port in self.ports.items():
            to_pod, from_pod = live.get(key, (0, 0))
            out.append(
                PortSnapshot(
                    self.target,
                    port.local_port,
                    port.remote_port,
                    port.active,
                    port.connections,
                    port.bytes_to_pod + to_pod,
                    port.bytes_from_pod + from_pod,
                    port.errors,
                    port.last_error or (self.last_error if port.active == 0 else ""),
                    self.reconnects,
                )
            )
        return out


class JsonLines:
    """`-o json`: each event as one compact JSON object on its own line, flushed at once (a
    script reads them through a pipe). A reader that went away ends the output, not the forward."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.broken = False

    def __call__(self, event: dict[str, Any]) -> None:
        if self.broken:
            return
        try:
            self.stream.write(json.dumps(event, separators=(",", ":")) + "\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            self.broken = True


def ready_document(trackers: list[Tracker]) -> dict[str, Any]:
    """What --ready-file holds (and the `ready` event carries): every bound listener."""
    forwards = []
    for tracker in trackers:
        for port in tracker.ports.values():
            for address in port.addresses:
                forwards.append(
                    {
                        **tracker.target.fields(),
                        "address": address,
                        "local_port": port.local_port,
                        "remote_port": port.remote_port,
                    }
                )
    return {"schema": SCHEMA, "pid": os.getpid(), "forwards": forwards}


def write_ready_file(path: str, doc: dict[str, Any]) -> None:
    """Atomically (a reader never sees half a file): write a sibling, then rename."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)
