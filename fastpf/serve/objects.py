"""What the little cluster knows about each kind: validation and the fields a server fills in.

Pure functions on plain dicts, shared by manifests (`-f`) and the write API (POST/PUT/PATCH).
A problem raises `InvalidObject` with a one-line message; callers add where it came from.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from dataclasses import dataclass
from typing import Any

from fastpf.errors import InvalidObject, SelectorError
from fastpf.serve.selectors import match_labels_selector, parse_label_selector

ADDRESS_ANNOTATION = "fastpf.io/address"
NODE_NAME = "fastpf"
PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
MAX_REPLICAS = 1000  # per workload: every replica is a stored pod
UID_NAMESPACE = uuid.UUID("5f0c1e2a-7d3b-4c59-9a3e-6b1f0f9a2c11")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")  # IANA service name, checked below


@dataclass(frozen=True)
class Resource:
    """One REST resource the server knows (plural name as in URLs)."""

    plural: str
    kind: str
    group: str  # "" for core
    version: str
    namespaced: bool
    short_names: tuple[str, ...]
    verbs: tuple[str, ...] = ("create", "delete", "get", "list", "patch", "update", "watch")
    scalable: bool = False

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
        Resource("namespaces", "Namespace", "", "v1", False, ("ns",), ("get", "list", "watch")),
        Resource("deployments", "Deployment", "apps", "v1", True, ("deploy",), scalable=True),
        Resource("replicasets", "ReplicaSet", "apps", "v1", True, ("rs",), scalable=True),
        Resource("statefulsets", "StatefulSet", "apps", "v1", True, ("sts",), scalable=True),
    )
}
BY_KIND = {r.kind: r for r in RESOURCES.values()}
WORKLOADS = ("deployments", "replicasets", "statefulsets")


def copy_json(value: Any) -> Any:
    """A deep copy of JSON-like data (several times cheaper than copy.deepcopy)."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value


def is_loopback_address(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


def identify(obj: Any) -> tuple[Resource, str, str]:
    """(resource, namespace, name) of a manifest object, after checking kind, apiVersion and
    metadata. The namespace is "" for cluster-scoped kinds and "default" when absent."""
    if not isinstance(obj, dict):
        raise InvalidObject(
            f"expected a mapping with apiVersion and kind, got {type(obj).__name__}"
        )
    kind = obj.get("kind")
    if kind is None or kind == "":
        raise InvalidObject("missing 'kind'")
    if not isinstance(kind, str):
        raise InvalidObject(f"kind must be a string, not {kind!r}")
    resource = BY_KIND.get(kind)
    if resource is None:
        supported = ", ".join(sorted(BY_KIND))
        raise InvalidObject(f"unsupported kind {kind!r} (supported: {supported}, List)")
    api_version = obj.get("apiVersion")
    if api_version is None or api_version == "":
        raise InvalidObject(f"{kind} has no apiVersion (want {resource.api_version!r})")
    if api_version != resource.api_version:
        raise InvalidObject(
            f"{kind} needs apiVersion {resource.api_version!r}, not {api_version!r}"
        )
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise InvalidObject(f"{kind} has no metadata")
    name = meta.get("name")
    if name is None or name == "":
        raise InvalidObject(f"{kind} has no metadata.name")
    if not isinstance(name, str) or len(name) > 253 or not DNS_SUBDOMAIN.match(name):
        raise InvalidObject(
            f"{kind} metadata.name {name!r} is not a valid name "
            "(lower-case letters, digits, '-' and '.')"
        )
    namespace = ""
    if resource.namespaced:
        namespace = meta.get("namespace") or "default"
        if not isinstance(namespace, str) or len(namespace) > 63 or not DNS_LABEL.match(namespace):
            raise InvalidObject(
                f"{kind} {name}: metadata.namespace {namespace!r} is not a valid namespace"
            )
    return resource, namespace, name


def validate(obj: dict[str, Any], resource: Resource) -> None:
    """Kind-specific checks (after `identify`)."""
    meta = obj["metadata"]
    for field in ("labels", "annotations"):
        _string_map(meta.get(field), f"metadata.{field}")
    if resource.plural == "pods":
        _pod_spec(obj.get("spec"), "spec", allow_missing=True)
        _address(meta.get("annotations"), "metadata.annotations")
        status = obj.get("status")
        if status is not None and not isinstance(status, dict):
            raise InvalidObject("status must be a mapping")
        phase = (status or {}).get("phase")
        if phase is not None and phase not in PHASES:
            raise InvalidObject(f"status.phase {phase!r} is not one of {', '.join(PHASES)}")
    elif resource.plural == "services":
        _service_spec(obj.get("spec"))
    elif resource.plural in WORKLOADS:
        _workload_spec(obj, resource)


def _string_map(value: Any, where: str) -> None:
    if value is not None and (
        not isinstance(value, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    ):
        raise InvalidObject(f"{where} must map strings to strings (quote numbers)")


def _address(annotations: Any, where: str) -> None:
    address = (annotations or {}).get(ADDRESS_ANNOTATION)
    if address is not None and not is_loopback_address(address):
        raise InvalidObject(
            f"{where}: annotation {ADDRESS_ANNOTATION}: {address!r} is not a loopback address"
        )


def _port_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


def _port_name_problem(name: str) -> str | None:
    """Kubernetes' IANA_SVC_NAME rule for named ports."""
    if not 0 < len(name) <= 15:
        return "must be 1-15 characters"
    if not _PORT_NAME.match(name) or "--" in name:
        return "must be lower-case letters, digits and single '-' inside"
    if not any(ch.isalpha() for ch in name):
        return "must contain a letter"
    return None


def _pod_spec(spec: Any, where: str, allow_missing: bool = False) -> None:
    if spec is None and allow_missing:
        return
    if not isinstance(spec, dict):
        raise InvalidObject(f"{where} must be a mapping")
    containers = spec.get("containers")
    if containers is None and allow_missing:
        return
    if not isinstance(containers, list) or not containers:
        raise InvalidObject(f"{where}.containers must be a non-empty list")
    container_names: dict[str, int] = {}
    port_names: dict[str, str] = {}
    for i, container in enumerate(containers):
        at = f"{where}.containers[{i}]"
        if (
            not isinstance(container, dict)
            or not isinstance(container.get("name"), str)
            or not container["name"]
        ):
            raise InvalidObject(f"{at} needs a name")
        name = container["name"]
        if name in container_names:
            raise InvalidObject(
                f"{at}.name {name!r} is already used by containers[{container_names[name]}]"
            )
        container_names[name] = i
        ports = container.get("ports") or []
        if not isinstance(ports, list):
            raise InvalidObject(f"{at}.ports must be a list")
        for j, port in enumerate(ports):
            pat = f"{at}.ports[{j}]"
            if not isinstance(port, dict) or not _port_number(port.get("containerPort")):
                raise InvalidObject(f"{pat}.containerPort must be 1..65535")
            protocol = port.get("protocol", "TCP")
            if protocol not in ("TCP", "UDP", "SCTP"):
                raise InvalidObject(f"{pat}.protocol {protocol!r} is not TCP, UDP or SCTP")
            if "name" not in port:
                continue
            port_name = port["name"]
            if not isinstance(port_name, str):
                raise InvalidObject(f"{pat}.name must be a string")
            problem = _port_name_problem(port_name)
            if problem:
                raise InvalidObject(f"{pat}.name {port_name!r} {problem}")
            if port_name in port_names:
                raise InvalidObject(
                    f"{pat}.name {port_name!r} is already used by {port_names[port_name]} "
                    "(port names must be unique in a pod)"
                )
            port_names[port_name] = pat


def _service_spec(spec: Any) -> None:
    if spec is None:
        return
    if not isinstance(spec, dict):
        raise InvalidObject("spec must be a mapping")
    selector = spec.get("selector")
    if selector is not None and (
        not isinstance(selector, dict) or not all(isinstance(v, str) for v in selector.values())
    ):
        raise InvalidObject("spec.selector must map strings to strings")
    ports = spec.get("ports") or []
    if not isinstance(ports, list):
        raise InvalidObject("spec.ports must be a list")
    names: dict[str, int] = {}
    for i, port in enumerate(ports):
        if not isinstance(port, dict) or not _port_number(port.get("port")):
            raise InvalidObject(f"spec.ports[{i}].port must be 1..65535")
        target = port.get("targetPort", port["port"])
        if (
            isinstance(target, bool)
            or not isinstance(target, (int, str))
            or (isinstance(target, int) and not _port_number(target))
        ):
            raise InvalidObject(f"spec.ports[{i}].targetPort must be a port number or a name")
        name = port.get("name")
        if name is not None:
            if not isinstance(name, str):
                raise InvalidObject(f"spec.ports[{i}].name must be a string")
            if name in names:
                raise InvalidObject(
                    f"spec.ports[{i}].name {name!r} is already used by spec.ports[{names[name]}]"
                )
            names[name] = i


def _workload_spec(obj: dict[str, Any], resource: Resource) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise InvalidObject("spec must be a mapping")
    replicas = spec.get("replicas", 1)
    if (
        not isinstance(replicas, int)
        or isinstance(replicas, bool)
        or not 0 <= replicas <= MAX_REPLICAS
    ):
        raise InvalidObject(f"spec.replicas must be 0..{MAX_REPLICAS}, not {replicas!r}")
    template = spec.get("template")
    if template is not None and not isinstance(template, dict):
        raise InvalidObject("spec.template must be a mapping")
    template_meta = (template or {}).get("metadata") or {}
    if not isinstance(template_meta, dict):
        raise InvalidObject("spec.template.metadata must be a mapping")
    _string_map(template_meta.get("labels"), "spec.template.metadata.labels")
    _string_map(template_meta.get("annotations"), "spec.template.metadata.annotations")
    _address(template_meta.get("annotations"), "spec.template.metadata.annotations")
    _address(obj["metadata"].get("annotations"), "metadata.annotations")
    if template is not None:
        _pod_spec(template.get("spec"), "spec.template.spec", allow_missing=True)
    selector = spec.get("selector")
    if selector is None:
        if not template_meta.get("labels"):
            raise InvalidObject("spec.selector is required")
        return
    if not isinstance(selector, dict):
        raise InvalidObject("spec.selector must be a mapping")
    try:
        matches = parse_label_selector(match_labels_selector(selector))
    except SelectorError as exc:
        raise InvalidObject(f"spec.selector: {exc}") from None
    labels = template_meta.get("labels")
    if labels is None and template is None:
        labels = selector.get("matchLabels") or {}
    if not matches(labels or {}):
        raise InvalidObject(
            "spec.selector does not match the template's labels (spec.template.metadata.labels)"
        )


# ---- server-side fields ----------------------------------------------------------------------------


def object_uid(plural: str, namespace: str, name: str, generation: int = 0) -> str:
    """Stable uids for manifest objects; a re-created object (generation > 0) gets a new one."""
    suffix = f"#{generation}" if generation else ""
    return str(uuid.uuid5(UID_NAMESPACE, f"{plural}/{namespace}/{name}{suffix}"))


def _mapping(parent: dict[str, Any], key: str) -> dict[str, Any]:
    """parent[key] as a dict, made one when absent or null (validation allowed null)."""
    value = parent.get(key)
    if not isinstance(value, dict):
        value = parent[key] = {}
    return value


def _list(parent: dict[str, Any], key: str) -> list[Any]:
    value = parent.get(key)
    if not isinstance(value, list):
        value = parent[key] = []
    return value


def fill(
    obj: dict[str, Any], resource: Resource, default_address: str, now: str, service_ip: str
) -> None:
    """Defaults a server fills in for `obj` (already validated), in place."""
    for field in ("labels", "annotations"):
        if field in obj["metadata"] and obj["metadata"][field] is None:
            del obj["metadata"][field]
    if resource.plural == "pods":
        fill_pod(obj, default_address, now)
    elif resource.plural == "services":
        spec = _mapping(obj, "spec")
        if spec.get("selector") is None:
            spec.pop("selector", None)
        for port in _list(spec, "ports"):
            port.setdefault("targetPort", port["port"])
            port.setdefault("protocol", "TCP")
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("clusterIP", service_ip)
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("sessionAffinity", "None")
        if not isinstance(obj.get("status"), dict):
            obj["status"] = {"loadBalancer": {}}
    elif resource.plural in WORKLOADS:
        spec = obj["spec"]
        if spec.get("replicas") is None:
            spec["replicas"] = 1
        template = _mapping(spec, "template")
        template_meta = _mapping(template, "metadata")
        if spec.get("selector") is None:
            spec["selector"] = {"matchLabels": dict(template_meta.get("labels") or {})}
        if not template_meta.get("labels"):
            template_meta["labels"] = dict(spec["selector"].get("matchLabels") or {})
        if template_meta.get("annotations") is None:
            template_meta.pop("annotations", None)
        _fill_pod_spec(_mapping(template, "spec"))
        if resource.plural == "deployments":
            spec.setdefault(
                "strategy",
                {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
                },
            )
            spec.setdefault("revisionHistoryLimit", 10)
        elif resource.plural == "statefulsets":
            spec.setdefault("serviceName", obj["metadata"]["name"])
            spec.setdefault("podManagementPolicy", "OrderedReady")
        _mapping(obj, "status").setdefault("replicas", 0)
    elif resource.plural == "namespaces":
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj.setdefault("status", {"phase": "Active"})


def _fill_pod_spec(spec: dict[str, Any]) -> None:
    if not spec.get("containers"):
        spec["containers"] = [{"name": "main"}]
    for container in spec["containers"]:
        if not container.get("image"):
            container["image"] = "fastpf.io/none"
        if container.get("ports") is None:
            container.pop("ports", None)
        for port in container.get("ports") or []:
            port.setdefault("protocol", "TCP")
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)


def pod_address(pod: dict[str, Any], default_address: str) -> str:
    return str((pod["metadata"].get("annotations") or {}).get(ADDRESS_ANNOTATION, default_address))


def fill_pod(pod: dict[str, Any], default_address: str, now: str) -> None:
    _fill_pod_spec(_mapping(pod, "spec"))
    status = _mapping(pod, "status")
    if status.get("phase") is None:
        status["phase"] = "Running"
    fill_pod_status(pod, pod_address(pod, default_address), now)


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
        status.setdefault("hostIPs", [{"ip": "127.0.0.1"}])
        status.setdefault("podIP", address)
        status.setdefault("podIPs", [{"ip": address}])
        status.setdefault("startTime", started)
    status.setdefault("qosClass", "BestEffort")

    def condition(kind: str, ok: bool, reason: str | None = None) -> dict[str, Any]:
        cond: dict[str, Any] = {
            "type": kind,
            "status": "True" if ok else "False",
            "lastProbeTime": None,
            "lastTransitionTime": started,
        }
        if reason and not ok:
            cond["reason"] = reason
        return cond

    ready = running and all(c.get("ready", True) for c in status.get("containerStatuses") or [])
    status.setdefault(
        "conditions",
        [
            condition("PodReadyToStartContainers", scheduled),
            condition("Initialized", scheduled),
            condition("Ready", ready, "ContainersNotReady"),
            condition("ContainersReady", ready, "ContainersNotReady"),
            condition("PodScheduled", scheduled, "Unschedulable"),
        ],
    )
    if scheduled:
        statuses = []
        for container in spec["containers"]:
            state: dict[str, Any]
            if running:
                state = {"running": {"startedAt": started}}
            elif phase in ("Succeeded", "Failed"):
                state = {
                    "terminated": {
                        "exitCode": 0 if phase == "Succeeded" else 1,
                        "reason": "Completed" if phase == "Succeeded" else "Error",
                        "startedAt": started,
                        "finishedAt": started,
                    }
                }
            else:
                state = {"waiting": {"reason": "ContainerCreating"}}
            statuses.append(
                {
                    "name": container["name"],
                    "image": container.get("image", "fastpf.io/none"),
                    "imageID": "",
                    "containerID": f"fastpf://{uuid.uuid5(UID_NAMESPACE, pod['metadata']['uid'] + container['name']).hex}",
                    "ready": running,
                    "started": running,
                    "restartCount": 0,
                    "state": state,
                }
            )
        status.setdefault("containerStatuses", statuses)


def pod_ready(pod: dict[str, Any]) -> bool:
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False
