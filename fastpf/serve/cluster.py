"""The little cluster `fastpf serve` pretends to be.

Without manifests every pod name in every namespace exists, is Running and forwards to
127.0.0.1. With manifests (`-f`) exactly the objects given exist; the server fills in the
metadata and status fields kubectl relies on (uid, resourceVersion, creationTimestamp, pod
conditions and container readiness for its "most active pod" sort).
"""

from __future__ import annotations

import copy
import ipaddress
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from fastpf.serve.selectors import SelectorError, match_labels_selector, parse_label_selector
from fastpf.types import PodTarget

ADDRESS_ANNOTATION = "fastpf.io/address"
NODE_NAME = "fastpf"
PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
_UID_NAMESPACE = uuid.UUID("5f0c1e2a-7d3b-4c59-9a3e-6b1f0f9a2c11")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class Resource:
    """One REST resource the server knows (plural name as in URLs)."""

    plural: str
    kind: str
    group: str  # "" for core
    version: str
    namespaced: bool
    short_names: tuple[str, ...]
    verbs: tuple[str, ...] = ("get", "list", "watch")

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """The name kubectl shows in errors: `pods`, `deployments.apps`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


RESOURCES: dict[str, Resource] = {
    r.plural: r
    for r in (
        Resource("pods", "Pod", "", "v1", True, ("po",)),
        Resource("services", "Service", "", "v1", True, ("svc",)),
        Resource("namespaces", "Namespace", "", "v1", False, ("ns",)),
        Resource("deployments", "Deployment", "apps", "v1", True, ("deploy",)),
        Resource("replicasets", "ReplicaSet", "apps", "v1", True, ("rs",)),
        Resource("statefulsets", "StatefulSet", "apps", "v1", True, ("sts",)),
    )
}
_BY_KIND = {r.kind: r for r in RESOURCES.values()}


class ManifestError(ValueError):
    """A manifest could not be loaded; str() is the one-line message (file and problem)."""


def is_loopback_address(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Cluster:
    """Objects by resource plural and (namespace, name). Static after start-up."""

    def __init__(self, explicit: bool = False) -> None:
        self.explicit = explicit
        self.started = _now()
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {p: {} for p in RESOURCES}
        self._rv = 1000
        self._service_ips = 10

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_files(cls, paths: Iterable[str | Path]) -> Cluster:
        cluster = cls(explicit=True)
        for path in paths:
            cluster.load_file(Path(path))
        return cluster

    def load_file(self, path: Path) -> None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ManifestError(f"{path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ManifestError(f"{path}: not UTF-8 text") from None
        self.load_text(text, str(path))

    def load_text(self, text: str, source: str = "<manifest>") -> None:
        try:
            documents = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ManifestError(f"{source}: invalid YAML{where}: {problem}") from None
        for index, doc in enumerate(documents, 1):
            if doc is None:
                continue
            where = f"{source}: document {index}"
            if not isinstance(doc, dict):
                raise ManifestError(f"{where}: expected a mapping with apiVersion/kind, got {type(doc).__name__}")
            if doc.get("kind") == "List":
                items = doc.get("items")
                if not isinstance(items, list):
                    raise ManifestError(f"{where}: kind List needs an 'items' list")
                for item_index, item in enumerate(items):
                    self.add(item, f"{where} items[{item_index}]")
            else:
                self.add(doc, where)

    def add(self, obj: Any, where: str = "<object>") -> None:
        """Validate one object, fill the server-side fields, store it."""
        if not isinstance(obj, dict):
            raise ManifestError(f"{where}: expected a mapping, got {type(obj).__name__}")
        kind = obj.get("kind")
        if not isinstance(kind, str) or not kind:
            raise ManifestError(f"{where}: missing 'kind'")
        resource = _BY_KIND.get(kind)
        if resource is None:
            supported = ", ".join(sorted(_BY_KIND))
            raise ManifestError(f"{where}: unsupported kind {kind!r} (supported: {supported}, List)")
        api_version = obj.get("apiVersion")
        if api_version is not None and api_version != resource.api_version:
            raise ManifestError(f"{where}: {kind} needs apiVersion {resource.api_version!r}, not {api_version!r}")
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            raise ManifestError(f"{where}: {kind} has no metadata")
        name = meta.get("name")
        if not isinstance(name, str) or not _DNS_SUBDOMAIN.match(name) or len(name) > 253:
            raise ManifestError(f"{where}: {kind} metadata.name {name!r} is not a valid name")
        where = f"{where} ({kind} {name})"
        namespace = meta.get("namespace", "default") if resource.namespaced else ""
        if resource.namespaced and (not isinstance(namespace, str) or not _DNS_LABEL.match(namespace)):
            raise ManifestError(f"{where}: metadata.namespace {namespace!r} is not a valid namespace")
        for field in ("labels", "annotations"):
            value = meta.get(field)
            if value is not None and (
                not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
            ):
                raise ManifestError(f"{where}: metadata.{field} must map strings to strings (quote numbers)")
        key = (namespace, name)
        if key in self._objects[resource.plural]:
            raise ManifestError(f"{where}: duplicate {kind} {namespace + '/' if namespace else ''}{name}")
        body = copy.deepcopy(obj)
        body["apiVersion"] = resource.api_version
        meta = body["metadata"]
        if resource.namespaced:
            meta["namespace"] = namespace
        meta.setdefault("uid", str(uuid.uuid5(_UID_NAMESPACE, f"{resource.plural}/{namespace}/{name}")))
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        meta.setdefault("creationTimestamp", self.started)
        meta.setdefault("generation", 1)
        fill = getattr(self, f"_fill_{resource.plural}")
        try:
            fill(body, where)
        except SelectorError as exc:
            raise ManifestError(f"{where}: {exc}") from None
        self._objects[resource.plural][key] = body

    # ---- per-kind defaults ----------------------------------------------------------------
    def _fill_pods(self, pod: dict[str, Any], where: str) -> None:
        spec = pod.setdefault("spec", {})
        if not isinstance(spec, dict):
            raise ManifestError(f"{where}: spec must be a mapping")
        containers = spec.setdefault("containers", [{"name": "main", "image": "fastpf.io/none"}])
        if not isinstance(containers, list) or not containers:
            raise ManifestError(f"{where}: spec.containers must be a non-empty list")
        for i, container in enumerate(containers):
            if not isinstance(container, dict) or not isinstance(container.get("name"), str):
                raise ManifestError(f"{where}: spec.containers[{i}] needs a name")
            container.setdefault("image", "fastpf.io/none")
            ports = container.get("ports") or []
            if not isinstance(ports, list):
                raise ManifestError(f"{where}: spec.containers[{i}].ports must be a list")
            for j, port in enumerate(ports):
                number = port.get("containerPort") if isinstance(port, dict) else None
                if not isinstance(number, int) or isinstance(number, bool) or not 0 < number < 65536:
                    raise ManifestError(f"{where}: spec.containers[{i}].ports[{j}].containerPort must be 1..65535")
                if "name" in port and not isinstance(port["name"], str):
                    raise ManifestError(f"{where}: spec.containers[{i}].ports[{j}].name must be a string")
                port.setdefault("protocol", "TCP")
        annotations = pod["metadata"].get("annotations") or {}
        address = annotations.get(ADDRESS_ANNOTATION, "127.0.0.1")
        if not is_loopback_address(address):
            raise ManifestError(f"{where}: annotation {ADDRESS_ANNOTATION}: {address!r} is not a loopback address")
        status = pod.setdefault("status", {})
        if not isinstance(status, dict):
            raise ManifestError(f"{where}: status must be a mapping")
        phase = status.setdefault("phase", "Running")
        if phase not in PHASES:
            raise ManifestError(f"{where}: status.phase {phase!r} is not one of {', '.join(PHASES)}")
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        fill_pod_status(pod, address, self.started)

    def _fill_services(self, svc: dict[str, Any], where: str) -> None:
        spec = svc.setdefault("spec", {})
        if not isinstance(spec, dict):
            raise ManifestError(f"{where}: spec must be a mapping")
        selector = spec.get("selector")
        if selector is not None and (
            not isinstance(selector, dict) or not all(isinstance(v, str) for v in selector.values())
        ):
            raise ManifestError(f"{where}: spec.selector must map strings to strings")
        ports = spec.setdefault("ports", [])
        if not isinstance(ports, list):
            raise ManifestError(f"{where}: spec.ports must be a list")
        for i, port in enumerate(ports):
            number = port.get("port") if isinstance(port, dict) else None
            if not isinstance(number, int) or isinstance(number, bool) or not 0 < number < 65536:
                raise ManifestError(f"{where}: spec.ports[{i}].port must be 1..65535")
            target = port.setdefault("targetPort", number)
            if isinstance(target, bool) or not isinstance(target, (int, str)) or (
                isinstance(target, int) and not 0 < target < 65536
            ):
                raise ManifestError(f"{where}: spec.ports[{i}].targetPort must be a port number or a name")
            port.setdefault("protocol", "TCP")
        spec.setdefault("type", "ClusterIP")
        self._service_ips += 1
        spec.setdefault("clusterIP", f"10.96.{self._service_ips // 250}.{self._service_ips % 250 + 1}")
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("sessionAffinity", "None")
        svc.setdefault("status", {"loadBalancer": {}})

    def _fill_controller(self, obj: dict[str, Any], where: str) -> None:
        spec = obj.setdefault("spec", {})
        if not isinstance(spec, dict):
            raise ManifestError(f"{where}: spec must be a mapping")
        selector = spec.get("selector")
        if selector is None:
            labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels")
            if not labels:
                raise ManifestError(f"{where}: spec.selector is required")
            selector = spec["selector"] = {"matchLabels": dict(labels)}
        if not isinstance(selector, dict):
            raise ManifestError(f"{where}: spec.selector must be a mapping")
        selector_text = match_labels_selector(selector)
        parse_label_selector(selector_text)  # validates
        replicas = spec.setdefault("replicas", 1)
        status = obj.setdefault("status", {})
        status.setdefault("replicas", replicas)
        status.setdefault("readyReplicas", replicas)
        status.setdefault("availableReplicas", replicas)
        status.setdefault("observedGeneration", 1)

    def _fill_deployments(self, obj: dict[str, Any], where: str) -> None:
        self._fill_controller(obj, where)
        obj["status"].setdefault("updatedReplicas", obj["spec"]["replicas"])

    def _fill_replicasets(self, obj: dict[str, Any], where: str) -> None:
        self._fill_controller(obj, where)
        obj["status"].setdefault("fullyLabeledReplicas", obj["spec"]["replicas"])

    def _fill_statefulsets(self, obj: dict[str, Any], where: str) -> None:
        self._fill_controller(obj, where)
        obj["spec"].setdefault("serviceName", obj["metadata"]["name"])
        obj["status"].setdefault("currentReplicas", obj["spec"]["replicas"])

    def _fill_namespaces(self, obj: dict[str, Any], where: str) -> None:
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj.setdefault("status", {"phase": "Active"})

    # ---- queries ----------------------------------------------------------------------------
    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        if plural == "namespaces":
            return self._namespace(name)
        if plural == "pods" and not self.explicit:
            return self._implicit_pod(namespace, name)
        return self._objects[plural].get((namespace, name))

    def list_objects(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        """Objects of one resource, in one namespace or all (namespace None), sorted by key."""
        if plural == "namespaces":
            names = self._namespace_names()
            return [ns for ns in (self._namespace(n) for n in names) if ns is not None]
        items = self._objects[plural]
        return [items[k] for k in sorted(items) if namespace is None or k[0] == namespace]

    def pod_target(self, pod: dict[str, Any]) -> PodTarget:
        meta = pod["metadata"]
        address = (meta.get("annotations") or {}).get(ADDRESS_ANNOTATION, "127.0.0.1")
        return PodTarget(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"], address=address)

    def _namespace_names(self) -> list[str]:
        names = {"default", "kube-system", "kube-public", "kube-node-lease"}
        for plural, objects in self._objects.items():
            if plural == "namespaces":
                names.update(name for _, name in objects)
            else:
                names.update(ns for ns, _ in objects)
        return sorted(names)

    def _namespace(self, name: str) -> dict[str, Any] | None:
        if not _DNS_LABEL.match(name) or len(name) > 63:
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
                "uid": str(uuid.uuid5(_UID_NAMESPACE, f"namespaces//{name}")),
                "resourceVersion": "1",
                "creationTimestamp": self.started,
                "labels": {"kubernetes.io/metadata.name": name},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }

    def _implicit_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        if not _DNS_SUBDOMAIN.match(name) or len(name) > 253 or not _DNS_LABEL.match(namespace):
            return None
        pod: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": str(uuid.uuid5(_UID_NAMESPACE, f"pods/{namespace}/{name}")),
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
        fill_pod_status(pod, "127.0.0.1", self.started)
        return pod


def fill_pod_status(pod: dict[str, Any], address: str, started: str) -> None:
    """Give a pod the status fields a real kubelet reports for its phase (without overriding
    anything the manifest set): node, IPs, conditions, container statuses."""
    spec = pod["spec"]
    status = pod["status"]
    phase = status["phase"]
    scheduled = phase != "Pending" or bool(spec.get("nodeName"))
    running = phase == "Running"
    if scheduled:
        spec.setdefault("nodeName", NODE_NAME)
        status.setdefault("hostIP", "127.0.0.1")
        status.setdefault("podIP", address)
        status.setdefault("podIPs", [{"ip": address}])
        status.setdefault("startTime", started)
    status.setdefault("qosClass", "BestEffort")

    def condition(kind: str, ok: bool, reason: str | None = None) -> dict[str, Any]:
        cond: dict[str, Any] = {"type": kind, "status": "True" if ok else "False", "lastProbeTime": None,
                                "lastTransitionTime": started}
        if reason and not ok:
            cond["reason"] = reason
        return cond

    ready = running and all(c.get("ready", True) for c in status.get("containerStatuses") or [])
    status.setdefault("conditions", [
        condition("PodReadyToStartContainers", scheduled),
        condition("Initialized", scheduled),
        condition("Ready", ready, "ContainersNotReady"),
        condition("ContainersReady", ready, "ContainersNotReady"),
        condition("PodScheduled", scheduled, "Unschedulable"),
    ])
    if scheduled:
        statuses = []
        for container in spec["containers"]:
            state: dict[str, Any]
            if running:
                state = {"running": {"startedAt": started}}
            elif phase in ("Succeeded", "Failed"):
                state = {"terminated": {"exitCode": 0 if phase == "Succeeded" else 1,
                                        "reason": "Completed" if phase == "Succeeded" else "Error",
                                        "startedAt": started, "finishedAt": started}}
            else:
                state = {"waiting": {"reason": "ContainerCreating"}}
            statuses.append({
                "name": container["name"],
                "image": container.get("image", "fastpf.io/none"),
                "imageID": "",
                "containerID": f"fastpf://{uuid.uuid5(_UID_NAMESPACE, pod['metadata']['uid'] + container['name']).hex}",
                "ready": running,
                "started": running,
                "restartCount": 0,
                "state": state,
            })
        status.setdefault("containerStatuses", statuses)
