"""Live watch events: what one watch request sees of the cluster's changes after it started.

Filtering follows the API server's watch cache: an object that stops matching the request's
selectors arrives as DELETED, one that starts matching as ADDED.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastpf.serve.cluster import Cluster, Event
from fastpf.serve.objects import Resource

Sink = Callable[[bytes], None]
Render = Callable[[dict[str, Any]], dict[str, Any]]


def event_line(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"


class Subscription:
    """Created with the watch reply; events flow once the HTTP handler attaches its sink and
    stop when it detaches (end of the watch, connection lost, server stopping)."""

    def __init__(
        self,
        cluster: Cluster,
        resource: Resource,
        namespace: str | None,
        name: str | None,
        matches: Callable[[dict[str, Any]], bool],
        render: Render,
    ) -> None:
        self.cluster = cluster
        self.resource = resource
        self.namespace = namespace
        self.name = name
        self._matches = matches
        self.render = render
        self._sink: Sink | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def attach(self, sink: Sink) -> Callable[[], None]:
        self.detach()
        self._sink = sink
        self._unsubscribe = self.cluster.subscribe(self._on_event)
        return self.detach

    def detach(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._unsubscribe = None
        self._sink = None

    @property
    def attached(self) -> bool:
        return self._sink is not None

    def _wanted(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        meta = obj["metadata"]
        if self.namespace is not None and meta.get("namespace", "") != self.namespace:
            return False
        if self.name is not None and meta["name"] != self.name:
            return False
        return self._matches(obj)

    def line(self, event: Event) -> bytes | None:
        """The watch line this request gets for `event`, if any."""
        if event.plural != self.resource.plural:
            return None
        now, before = self._wanted(event.obj), self._wanted(event.old)
        if event.type == "ADDED":
            kind = "ADDED" if now else None
        elif event.type == "DELETED":
            kind = "DELETED" if now or before else None
        elif now:
            kind = "MODIFIED" if before else "ADDED"
        else:
            kind = "DELETED" if before else None
        return event_line(kind, self.render(event.obj)) if kind is not None else None

    def _on_event(self, event: Event) -> None:
        if self._sink is None:
            return
        line = self.line(event)
        if line is not None:
            self._sink(line)
