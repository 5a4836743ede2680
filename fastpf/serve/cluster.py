"""The little cluster `fastpf serve` pretends to be: a store of objects that changes at run time
and tells watchers (ADDED / MODIFIED / DELETED), with workload controllers (`workloads.py`).

Without manifests every pod name in every namespace exists, is Running and forwards to the pod
address (`--pod-address`, default 127.0.0.2, see DEFAULT_POD_ADDRESS); pods created or changed
through the API are stored and listed, and a deleted one stays gone until it is created again.
With manifests (`-f`) exactly the objects given exist (plus what their workloads make). The
server fills in the metadata and status fields kubectl relies on (uid, resourceVersion,
creationTimestamp, pod conditions and container readiness for its "most active pod" sort).

Everything runs on the event loop's thread; objects handed out are never changed afterwards
(a change stores a new dict), so a watcher or cache may keep the one it got.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastpf.errors import AlreadyExists, InvalidObject, LimitExceeded, ManifestError, NotFound
from fastpf.goparity import format_rfc3339
from fastpf.serve import manifests, objects, workloads
from fastpf.serve.objects import (
    ADDRESS_ANNOTATION,
    BY_KIND,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    MAX_REPLICAS,
    NODE_NAME,
    PHASES,
    RESOURCES,
    Resource,
    copy_json,
    fill_pod_status,
    is_loopback_address,
    object_uid,
    pod_address,
)
from fastpf.types import PodTarget

__all__ = [
    "ADDRESS_ANNOTATION",
    "BY_KIND",
    "DEFAULT_POD_ADDRESS",
    "NODE_NAME",
    "PHASES",
    "RESOURCES",
    "AlreadyExists",
    "Cluster",
    "Event",
    "InvalidObject",
    "LimitExceeded",
    "ManifestError",
    "NotFound",
    "Resource",
    "fill_pod_status",
    "is_loopback_address",
]

# Pods live on their own loopback address, not on 127.0.0.1 where `fastpf`/`kubectl port-forward`
# listen by default: `fastpf mypod 5000` against a pod on 127.0.0.1 would forward port 5000
# into its own listener, which forwards again, without end.
DEFAULT_POD_ADDRESS = "127.0.0.2"
MAX_OBJECTS = 20_000  # stored objects (and deleted implicit pod names)
MAX_OBJECT_BYTES = 1_572_864  # one object as JSON: etcd's 1.5 MiB request limit
MAX_TOTAL_BYTES = 256 << 20  # all stored objects as JSON
MAX_GRACE_SECONDS = 3600.0
RELOAD_BATCH = 100  # objects applied per event-loop turn on SIGHUP
HISTORY_EVENTS = 1000  # recent events kept for watches that resume from a resourceVersion
HISTORY_BYTES = 64 << 20
_SETTLE_PASSES = 5  # controller passes per change; one or two are enough

log = logging.getLogger("fastpf.serve.cluster")


@dataclass(frozen=True)
class Event:
    type: str  # ADDED, MODIFIED, DELETED
    plural: str
    obj: dict[str, Any]
    old: dict[str, Any] | None = None


Listener = Callable[[Event], None]


class Cluster:
    """Objects by resource plural and (namespace, name)."""

    def __init__(self, explicit: bool = False, pod_address: str = DEFAULT_POD_ADDRESS) -> None:
        if not is_loopback_address(pod_address):
            raise ValueError(f"pod address {pod_address!r} is not a loopback address")
        self.explicit = explicit
        self.pod_address = pod_address
        self.started = format_rfc3339()
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {p: {} for p in RESOURCES}
        self._sizes: dict[tuple[str, str, str], int] = {}
        self._total_bytes = 0
        self._count = 0
        # resourceVersions start at the clock (µs): a client that watched a previous run of serve
        # resumes from a version older than anything kept here and gets 410, so it lists again.
        self._rv = time.time_ns() // 1000
        self._service_ips = 10
        self._listeners: list[Listener] = []
        self._declared: dict[
            tuple[str, str, str], dict[str, Any]
        ] = {}  # manifest objects, as written
        self._tombstones: set[tuple[str, str]] = set()  # deleted implicit pods
        self._timers: dict[str, asyncio.TimerHandle] = {}  # terminating pods by uid
        self._settling = False
        # Recent events by resourceVersion: a watch from an older version (an informer's
        # list-then-watch) replays what it missed, or gets 410 Expired when they are gone.
        self._history: deque[tuple[int, Event, int]] = deque()
        self._history_bytes = 0
        self._history_floor = self._rv  # events at or below this version are not kept

    # ---- construction from manifests ---------------------------------------------------------
    @classmethod
    def from_files(
        cls, paths: Iterable[str | Path], pod_address: str = DEFAULT_POD_ADDRESS
    ) -> Cluster:
        cluster = cls(explicit=True, pod_address=pod_address)
        cluster.load_objects(manifests.load_files([str(p) for p in paths]))
        return cluster

    def load_file(self, path: Path) -> None:
        self.load_objects(manifests.load_file(path))

    def load_text(self, text: str, source: str = "<manifest>") -> None:
        self.load_objects(manifests.split_objects(manifests.parse_documents(text, source), source))

    def load_objects(self, items: list[tuple[str, Any]]) -> None:
        """Add manifest objects (from `manifests.load_*`); the first bad one raises ManifestError."""
        for where, obj in items:
            resource, namespace, name = _identify(where, obj)
            key = (resource.plural, namespace, name)
            if (namespace, name) in self._objects[resource.plural]:
                label = f"{namespace}/{name}" if namespace else name
                raise ManifestError(
                    f"{where} ({resource.kind} {name}): duplicate {resource.kind} {label}"
                )
            try:
                self._put(resource, self._prepare(resource, obj, uid=object_uid(*key)), "ADDED")
            except (InvalidObject, LimitExceeded) as exc:
                raise ManifestError(f"{where} ({resource.kind} {name}): {exc}") from None
            self._declared[key] = obj
        self._settle()

    def reload(self, items: list[tuple[str, Any]]) -> str:
        """Make the manifest objects what `items` says: new ones are added, changed ones replaced
        (uid kept), ones no longer written deleted with what they own. Objects created through
        the API are left alone. Checked first: a bad manifest changes nothing."""
        steps = self._reload_steps(items)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return str(done.value)

    async def reload_async(self, items: list[tuple[str, Any]], batch: int = RELOAD_BATCH) -> str:
        """`reload`, giving the event loop a turn every `batch` objects: a big manifest never
        stalls requests (watchers see its changes arrive as they are made)."""
        steps = self._reload_steps(items)
        for count in itertools.count(1):
            try:
                next(steps)
            except StopIteration as done:
                return str(done.value)
            if count % batch == 0:
                await asyncio.sleep(0)
        raise AssertionError("unreachable")  # pragma: no cover

    def _reload_uid(self, key: tuple[str, str, str]) -> str:
        """The uid a reloaded object keeps (changed) or gets (new: not the old one's)."""
        current = self._objects[key[0]].get((key[1], key[2]))
        return (
            str(current["metadata"]["uid"]) if current is not None else object_uid(*key, self._rv)
        )

    def _reload_steps(self, items: list[tuple[str, Any]]) -> Generator[None, None, str]:
        wanted: dict[tuple[str, str, str], tuple[str, Any, dict[str, Any] | None]] = {}
        for where, obj in items:
            resource, namespace, name = _identify(where, obj)
            key = (resource.plural, namespace, name)
            if key in wanted:
                raise ManifestError(
                    f"{where} ({resource.kind} {name}): duplicate {resource.kind} {name}"
                )
            body = None
            if self._declared.get(key) != obj:  # unchanged objects are neither checked nor touched
                try:
                    body = self._prepare(resource, obj, uid=self._reload_uid(key))
                except InvalidObject as exc:
                    raise ManifestError(f"{where} ({resource.kind} {name}): {exc}") from None
            wanted[key] = (where, obj, body)
            yield
        self.explicit = True
        added = changed = removed = 0
        for key in list(self._declared):
            if key not in wanted:
                del self._declared[key]
                if (key[1], key[2]) in self._objects[key[0]]:
                    self._remove(key[0], (key[1], key[2]))
                    removed += 1
                yield
        for key, (where, obj, body) in wanted.items():
            plural, namespace, name = key
            resource = RESOURCES[plural]
            current = self._objects[plural].get((namespace, name))
            if body is None and current is not None:
                continue
            if body is None:  # declared and unchanged, but deleted through the API: make it again
                body = self._prepare(resource, obj, uid=self._reload_uid(key))
            meta = body["metadata"]
            try:
                if current is None:
                    self._put(resource, body, "ADDED")
                    added += 1
                else:
                    if (
                        meta["uid"] != current["metadata"]["uid"]
                    ):  # replaced meanwhile: keep the stored one's
                        meta["uid"] = current["metadata"]["uid"]
                    meta["creationTimestamp"] = current["metadata"].get(
                        "creationTimestamp", meta["creationTimestamp"]
                    )
                    meta["generation"] = current["metadata"].get("generation", 1) + 1
                    self._put(resource, body, "MODIFIED", current)
                    changed += 1
            except LimitExceeded as exc:
                raise ManifestError(f"{where} ({resource.kind} {name}): {exc}") from None
            self._declared[key] = obj
            yield
        self._settle()
        return f"{added} added, {changed} changed, {removed} deleted"

    # ---- watchers ------------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(event)` after every change; returns the function that stops it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def events_since(self, version: int) -> list[Event] | None:
        """Events after `version`, oldest first; None when some are no longer kept (410)."""
        if version < self._history_floor:
            return None
        return [event for rv, event, _ in self._history if rv > version]

    def _emit(self, event: Event, size: int = 0) -> None:
        self._history.append((int(event.obj["metadata"]["resourceVersion"]), event, size))
        self._history_bytes += size
        while len(self._history) > HISTORY_EVENTS or self._history_bytes > HISTORY_BYTES:
            rv, _, dropped = self._history.popleft()
            self._history_bytes -= dropped
            self._history_floor = rv
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception as exc:  # one broken watcher must not stop a change
                log.error("watch listener failed: %r", exc)

    # ---- the write API -------------------------------------------------------------------------
    def create(self, obj: Any) -> dict[str, Any]:
        """POST: a new object (`metadata.generateName` supported). Raises InvalidObject,
        AlreadyExists or LimitExceeded."""
        if (
            isinstance(obj, dict)
            and isinstance(obj.get("metadata"), dict)
            and not obj["metadata"].get("name")
        ):
            prefix = obj["metadata"].get("generateName")
            if isinstance(prefix, str) and prefix:
                obj = copy_json(obj)
                obj["metadata"]["name"] = prefix + workloads.random_suffix()
        resource, namespace, name = objects.identify(obj)
        if resource.plural == "namespaces":
            raise InvalidObject("namespaces cannot be created here; every namespace used exists")
        if (namespace, name) in self._objects[resource.plural]:
            raise AlreadyExists(resource, name)
        body = self._prepare(resource, obj, uid=str(uuid.uuid4()), created=format_rfc3339())
        stored = self._put(resource, body, "ADDED")
        self._settle()
        return self._objects[resource.plural].get((namespace, name), stored)

    def replace(self, plural: str, namespace: str, name: str, obj: Any) -> dict[str, Any]:
        """PUT / PATCH of the main resource: metadata and spec change, status is kept."""
        resource = RESOURCES[plural]
        current = self._current(resource, namespace, name)
        new_resource, new_namespace, new_name = objects.identify(obj)
        if (
            new_resource is not resource
            or new_name != name
            or (resource.namespaced and new_namespace != namespace)
        ):
            raise InvalidObject(
                f"the object must stay {resource.kind} {namespace + '/' if namespace else ''}{name}"
            )
        status = copy_json(current.get("status") or {})
        if resource.plural == "pods" and pod_address(obj, self.pod_address) != pod_address(
            current, self.pod_address
        ):
            for field in ("podIP", "podIPs"):
                status.pop(field, None)
        body = copy_json(obj)
        body["status"] = status
        if (
            plural == "services"
            and isinstance(body.get("spec"), dict)
            and not body["spec"].get("clusterIP")
        ):
            body["spec"]["clusterIP"] = current["spec"].get("clusterIP")
        body = self._prepare(
            resource,
            body,
            uid=current["metadata"]["uid"],
            created=current["metadata"].get("creationTimestamp"),
        )
        generation = current["metadata"].get("generation", 1)
        if body.get("spec") != current.get("spec"):
            generation += 1
        body["metadata"]["generation"] = generation
        for field in (
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):  # the server's, not the writer's
            if field in current["metadata"] and field not in body["metadata"]:
                body["metadata"][field] = current["metadata"][field]
        stored = self._put(resource, body, "MODIFIED", current)
        self._settle()
        return self._objects[plural].get((namespace, name), stored)

    def replace_status(self, plural: str, namespace: str, name: str, status: Any) -> dict[str, Any]:
        """PUT / PATCH of `/status`: only the status changes. A pod whose phase changes gets the
        conditions and container states of its new phase unless the patch sets them."""
        resource = RESOURCES[plural]
        current = self._current(resource, namespace, name)
        if not isinstance(status, dict):
            raise InvalidObject("status must be a mapping")
        body = copy_json(current)
        body["status"] = copy_json(status)
        if plural == "pods":
            phase = status.get("phase", "Running")
            if phase not in PHASES:
                raise InvalidObject(f"status.phase {phase!r} is not one of {', '.join(PHASES)}")
            old_status = current.get("status") or {}
            body["status"]["phase"] = phase
            if phase != old_status.get("phase"):
                for field in ("conditions", "containerStatuses"):
                    if status.get(field) == old_status.get(field):
                        body["status"].pop(field, None)
            if phase == "Pending" and status.get("startTime") == old_status.get("startTime"):
                body["status"].pop("startTime", None)
            fill_pod_status(body, pod_address(body, self.pod_address), format_rfc3339())
        stored = self._put(resource, body, "MODIFIED", current)
        self._settle()
        return self._objects[plural].get((namespace, name), stored)

    def scale(self, plural: str, namespace: str, name: str, replicas: Any) -> dict[str, Any]:
        resource = RESOURCES[plural]
        if not resource.scalable:
            raise NotFound(resource, name)
        current = self._current(resource, namespace, name)
        if (
            not isinstance(replicas, int)
            or isinstance(replicas, bool)
            or not 0 <= replicas <= MAX_REPLICAS
        ):
            raise InvalidObject(f"spec.replicas must be 0..{MAX_REPLICAS}, not {replicas!r}")
        body = copy_json(current)
        if body["spec"]["replicas"] != replicas:
            body["spec"]["replicas"] = replicas
            body["metadata"]["generation"] = body["metadata"].get("generation", 1) + 1
            self._put(resource, body, "MODIFIED", current)
            self._settle()
        return self._objects[plural][(namespace, name)]

    def delete(
        self, plural: str, namespace: str, name: str, grace: float | None = None
    ) -> dict[str, Any]:
        """DELETE: gone at once (and what it owns), or for a pod with `grace` > 0 seconds,
        Terminating (deletionTimestamp set, no longer a replica) and gone after that."""
        resource = RESOURCES[plural]
        if plural == "namespaces":
            raise InvalidObject("namespaces cannot be deleted here")
        current = self.get(plural, namespace, name)
        if current is None:
            raise NotFound(resource, name)
        if (namespace, name) not in self._objects[plural]:  # an implicit pod
            if self._count >= MAX_OBJECTS:
                raise LimitExceeded(f"more than {MAX_OBJECTS} objects")
            self._tombstones.add((namespace, name))
            self._count += 1
            self._rv += 1
            gone: dict[str, Any] = copy_json(current)
            gone["metadata"]["resourceVersion"] = str(self._rv)
            self._emit(Event("DELETED", plural, gone, current))
            return gone
        loop = _running_loop()
        if plural == "pods" and grace is not None and grace > 0 and loop is not None:
            if "deletionTimestamp" in current["metadata"]:
                return current
            grace = min(grace, MAX_GRACE_SECONDS)
            body = copy_json(current)
            body["metadata"]["deletionTimestamp"] = format_rfc3339(time.time() + grace)
            body["metadata"]["deletionGracePeriodSeconds"] = int(grace)
            uid = body["metadata"]["uid"]
            self._timers[uid] = loop.call_later(grace, self._finish_delete, namespace, name, uid)
            stored = self._put(resource, body, "MODIFIED", current)
            self._settle()
            return stored
        gone = self._remove(plural, (namespace, name))
        self._settle()
        return gone

    def _finish_delete(self, namespace: str, name: str, uid: str) -> None:
        self._timers.pop(uid, None)
        pod = self._objects["pods"].get((namespace, name))
        if pod is not None and pod["metadata"]["uid"] == uid:
            self._remove("pods", (namespace, name))
            self._settle()

    def _current(self, resource: Resource, namespace: str, name: str) -> dict[str, Any]:
        """The stored object to change; an implicit pod is stored first (without an event)."""
        stored = self._objects[resource.plural].get((namespace, name))
        if stored is not None:
            return stored
        current = self.get(resource.plural, namespace, name)
        if current is None:
            raise NotFound(resource, name)
        return self._put(resource, copy_json(current), None)

    # ---- used by the controllers (workloads.py) ------------------------------------------------
    def get_stored(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects[plural].get((namespace, name))

    def create_owned(self, plural: str, obj: dict[str, Any]) -> None:
        resource = RESOURCES[plural]
        self._put(
            resource,
            self._prepare(resource, obj, uid=str(uuid.uuid4()), created=format_rfc3339()),
            "ADDED",
        )

    def set_replicas(self, plural: str, obj: dict[str, Any], replicas: int) -> None:
        body = copy_json(obj)
        body["spec"]["replicas"] = replicas
        self._put(RESOURCES[plural], body, "MODIFIED", obj)

    def set_status_owned(self, plural: str, obj: dict[str, Any], status: dict[str, Any]) -> None:
        body = copy_json(obj)
        body["status"] = status
        self._put(RESOURCES[plural], body, "MODIFIED", obj)

    def release_owned(self, pod: dict[str, Any]) -> None:
        body = copy_json(pod)
        refs = [r for r in body["metadata"].get("ownerReferences") or [] if not r.get("controller")]
        if refs:
            body["metadata"]["ownerReferences"] = refs
        else:
            body["metadata"].pop("ownerReferences", None)
        self._put(RESOURCES["pods"], body, "MODIFIED", pod)

    def remove_owned(self, plural: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if (meta.get("namespace", ""), meta["name"]) in self._objects[plural]:
            self._remove(plural, (meta.get("namespace", ""), meta["name"]))

    # ---- store primitives ------------------------------------------------------------------------
    def _prepare(
        self, resource: Resource, obj: Any, uid: str, created: str | None = None
    ) -> dict[str, Any]:
        """A validated copy of `obj` with the server's fields filled in."""
        objects.validate(obj, resource)
        body: dict[str, Any] = copy_json(obj)
        body["apiVersion"] = resource.api_version
        body["kind"] = resource.kind
        meta = body["metadata"]
        if resource.namespaced:
            meta["namespace"] = meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        meta["uid"] = uid
        meta["creationTimestamp"] = created or meta.get("creationTimestamp") or self.started
        meta.setdefault("generation", 1)
        for field in ("resourceVersion", "selfLink"):
            meta.pop(field, None)
        if resource.plural == "services" and not (body.get("spec") or {}).get("clusterIP"):
            self._service_ips += 1
        ip = f"10.96.{self._service_ips // 250}.{self._service_ips % 250 + 1}"
        objects.fill(body, resource, self.pod_address, meta["creationTimestamp"], ip)
        return body

    def _put(
        self,
        resource: Resource,
        body: dict[str, Any],
        event: str | None,
        old: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        meta = body["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        size_key = (resource.plural, *key)
        size = len(json.dumps(body, separators=(",", ":")))
        if size > MAX_OBJECT_BYTES:
            raise LimitExceeded(f"the object is {size} bytes as JSON, more than {MAX_OBJECT_BYTES}")
        previous = self._sizes.get(size_key)
        if previous is None and self._count >= MAX_OBJECTS:
            raise LimitExceeded(f"more than {MAX_OBJECTS} objects")
        if self._total_bytes - (previous or 0) + size > MAX_TOTAL_BYTES:
            raise LimitExceeded(f"the stored objects would exceed {MAX_TOTAL_BYTES >> 20} MiB")
        if previous is None:
            self._count += 1
            if resource.plural == "pods" and key in self._tombstones:
                self._tombstones.discard(key)
                self._count -= 1
        self._sizes[size_key] = size
        self._total_bytes += size - (previous or 0)
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        self._objects[resource.plural][key] = body
        if event is not None:
            self._emit(Event(event, resource.plural, body, old), size)
        return body

    def _remove(self, plural: str, key: tuple[str, str]) -> dict[str, Any]:
        """Delete one stored object, then (garbage collection) everything it controls."""
        obj = self._objects[plural].pop(key)
        self._count -= 1
        size = self._sizes.pop((plural, *key), 0)
        self._total_bytes -= size
        self._rv += 1
        gone: dict[str, Any] = copy_json(obj)
        gone["metadata"]["resourceVersion"] = str(self._rv)
        uid = obj["metadata"]["uid"]
        timer = self._timers.pop(uid, None)
        if timer is not None:
            timer.cancel()
        self._emit(Event("DELETED", plural, gone, obj), size)
        for dependent_plural in ("replicasets", "pods"):
            for dkey, dependent in list(self._objects[dependent_plural].items()):
                if (
                    workloads.controller_uid(dependent) == uid
                    and dkey in self._objects[dependent_plural]
                ):
                    self._remove(dependent_plural, dkey)
        return gone

    def _settle(self) -> None:
        """Run the controllers until nothing changes (bounded)."""
        if self._settling:
            return
        self._settling = True
        try:
            for _ in range(_SETTLE_PASSES):
                before = self._rv
                workloads.reconcile(self)
                if self._rv == before:
                    break
        finally:
            self._settling = False

    # ---- queries ---------------------------------------------------------------------------------
    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        if plural == "namespaces":
            return self._namespace(name)
        stored = self._objects[plural].get((namespace, name))
        if (
            stored is None
            and plural == "pods"
            and not self.explicit
            and (namespace, name) not in self._tombstones
        ):
            return self._implicit_pod(namespace, name)
        return stored

    def list_objects(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        """Objects of one resource, in one namespace or all (namespace None), sorted by key."""
        if plural == "namespaces":
            names = self._namespace_names()
            return [ns for ns in (self._namespace(n) for n in names) if ns is not None]
        items = self._objects[plural]
        return [items[k] for k in sorted(items) if namespace is None or k[0] == namespace]

    def pod_target(self, pod: dict[str, Any]) -> PodTarget:
        meta = pod["metadata"]
        return PodTarget(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            address=pod_address(pod, self.pod_address),
        )

    def _namespace_names(self) -> list[str]:
        names = {"default", "kube-system", "kube-public", "kube-node-lease"}
        for plural, stored in self._objects.items():
            if plural == "namespaces":
                names.update(name for _, name in stored)
            else:
                names.update(ns for ns, _ in stored)
        return sorted(names)

    def _namespace(self, name: str) -> dict[str, Any] | None:
        if not DNS_LABEL.match(name) or len(name) > 63:
            return None
        stored = self._objects["namespaces"].get(("", name))
        if stored is not None:
            return stored
        if self.explicit and name not in self._namespace_names():
            return None
        return {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "uid": str(uuid.uuid5(objects.UID_NAMESPACE, f"namespaces//{name}")),
                "resourceVersion": "1",
                "creationTimestamp": self.started,
                "labels": {"kubernetes.io/metadata.name": name},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }

    def _implicit_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        if not DNS_SUBDOMAIN.match(name) or len(name) > 253 or not DNS_LABEL.match(namespace):
            return None
        pod: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": object_uid("pods", namespace, name),
                "resourceVersion": "1",
                "creationTimestamp": self.started,
                "generation": 1,
            },
            "spec": {
                "containers": [{"name": "main", "image": "fastpf.io/none"}],
                "restartPolicy": "Always",
                "dnsPolicy": "ClusterFirst",
                "terminationGracePeriodSeconds": 30,
            },
            "status": {"phase": "Running"},
        }
        fill_pod_status(pod, self.pod_address, self.started)
        return pod


def _identify(where: str, obj: Any) -> tuple[Resource, str, str]:
    try:
        return objects.identify(obj)
    except InvalidObject as exc:
        raise ManifestError(f"{where}: {exc}") from None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
