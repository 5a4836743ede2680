"""TYPE/NAME -> the pod to forward to, and port arguments -> numeric `L:R` specs, as kubectl does.

pod/NAME (or a bare NAME) is taken as is. svc/deploy/rs/sts/ds/rc/job: the object's selector
lists pods, sorted most-active first (kubectl's `sort.Reverse(podutils.ActivePods)`), and the
first wins; with none yet, poll until one appears or --pod-running-timeout passes. Named remote
ports and a service's targetPort are translated per PROTOCOL.md 2.3; UDP-only ports are refused.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastpf.client.api import ApiClient, pod_path
from fastpf.client.args import split_port
from fastpf.errors import ClientError
from fastpf.goparity import atoi, parse_rfc3339

POLL_INTERVAL = 1.0

# alias -> (API prefix, plural, kind)
_TYPES: dict[str, tuple[str, str, str]] = {}


def _register(prefix: str, plural: str, kind: str, *aliases: str) -> None:
    group = prefix.split("/")[2] if prefix.startswith("/apis/") else ""
    for alias in (plural, kind.lower(), *aliases):
        _TYPES[alias] = (prefix, plural, kind)
        if group:
            _TYPES[f"{alias}.{group}"] = (prefix, plural, kind)


_register("/api/v1", "pods", "Pod", "po")
_register("/api/v1", "services", "Service", "svc")
_register("/api/v1", "replicationcontrollers", "ReplicationController", "rc")
_register("/apis/apps/v1", "deployments", "Deployment", "deploy")
_register("/apis/apps/v1", "replicasets", "ReplicaSet", "rs")
_register("/apis/apps/v1", "statefulsets", "StatefulSet", "sts")
_register("/apis/apps/v1", "daemonsets", "DaemonSet", "ds")
_register("/apis/batch/v1", "jobs", "Job")


@dataclass
class Resolved:
    pod: dict[str, Any]
    pod_name: str
    ports: list[str]  # numeric "L:R" / "R" specs, for args.parse_ports


def split_target(target: str) -> tuple[str, str, str, str]:
    """-> (API prefix, plural, kind, name)."""
    if "/" in target:
        kind_s, _, name = target.partition("/")
        if not kind_s or not name or "/" in name:
            raise ClientError(
                "arguments in resource/name form must have a single resource and name"
            )
        entry = _TYPES.get(kind_s.lower())
        if entry is None:
            raise ClientError(f'the server doesn\'t have a resource type "{kind_s}"')
        return (*entry, name)
    if not target:
        raise ClientError("resource(s) were provided, but no name was specified")
    return ("/api/v1", "pods", "Pod", target)


# ---- selectors ---------------------------------------------------------------------------------


def selector_from_set(labels: dict[str, Any]) -> str:
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


def selector_from_label_selector(sel: dict[str, Any] | None) -> str:
    """metav1.LabelSelectorAsSelector(...).String()."""
    if not sel:
        return ""
    reqs: list[tuple[str, str]] = []
    for k, v in (sel.get("matchLabels") or {}).items():
        reqs.append((k, f"{k}={v}"))
    for expr in sel.get("matchExpressions") or []:
        key = str(expr.get("key"))
        op = str(expr.get("operator"))
        values = sorted(str(v) for v in (expr.get("values") or []))
        if op == "In":
            reqs.append((key, f"{key} in ({','.join(values)})"))
        elif op == "NotIn":
            reqs.append((key, f"{key} notin ({','.join(values)})"))
        elif op == "Exists":
            reqs.append((key, key))
        elif op == "DoesNotExist":
            reqs.append((key, f"!{key}"))
        else:
            raise ClientError(f'"{op}" is not a valid label selector operator')
    reqs.sort(key=lambda r: r[0])
    return ",".join(r[1] for r in reqs)


def selector_for(obj: dict[str, Any], kind: str) -> str:
    spec = obj.get("spec") or {}
    name = (obj.get("metadata") or {}).get("name", "")
    if kind in ("Service", "ReplicationController"):
        sel = spec.get("selector") or {}
        if not sel:
            if kind == "Service":
                raise ClientError(
                    f"invalid service '{name}': Service is defined without a selector"
                )
            raise ClientError(f"invalid replication controller '{name}': no selector")
        return selector_from_set(sel)
    return selector_from_label_selector(spec.get("selector"))


# ---- kubectl's ActivePods ordering ---------------------------------------------------------------


def _ts(text: Any) -> float | None:
    if not text:
        return None
    try:
        return parse_rfc3339(str(text))  # also on Python 3.10 with nanosecond fractions
    except ValueError:
        return None


def _ready_time(pod: dict[str, Any]) -> float | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            return _ts(cond.get("lastTransitionTime"))
    return None


def _is_ready(pod: dict[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def _max_restarts(pod: dict[str, Any]) -> int:
    counts = [
        int(c.get("restartCount") or 0)
        for c in (pod.get("status") or {}).get("containerStatuses") or []
    ]
    return max(counts, default=0)


def _after_or_zero(t1: float | None, t2: float | None) -> bool:
    if t1 is None or t2 is None:
        return t1 is None
    return t1 > t2


_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def _less_active(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """podutils.ActivePods.Less: a is less active than b."""
    na = (a.get("spec") or {}).get("nodeName") or ""
    nb = (b.get("spec") or {}).get("nodeName") or ""
    if na != nb and (not na or not nb):
        return not na
    pa = _PHASE_RANK.get((a.get("status") or {}).get("phase", ""), 0)
    pb = _PHASE_RANK.get((b.get("status") or {}).get("phase", ""), 0)
    if pa != pb:
        return pa < pb
    ra, rb = _is_ready(a), _is_ready(b)
    if ra != rb:
        return not ra
    if ra and rb:
        ta, tb = _ready_time(a), _ready_time(b)
        if ta != tb:
            return _after_or_zero(ta, tb)
    ca, cb = _max_restarts(a), _max_restarts(b)
    if ca != cb:
        return ca > cb
    ta = _ts((a.get("metadata") or {}).get("creationTimestamp"))
    tb = _ts((b.get("metadata") or {}).get("creationTimestamp"))
    if ta != tb:
        return _after_or_zero(ta, tb)
    return False


def most_active(pods: list[dict[str, Any]]) -> dict[str, Any]:
    def cmp(a: dict[str, Any], b: dict[str, Any]) -> int:
        if _less_active(a, b):
            return 1  # less active sorts later
        if _less_active(b, a):
            return -1
        return 0

    return sorted(pods, key=functools.cmp_to_key(cmp))[0]


# ---- ports -----------------------------------------------------------------------------------------


def _container_port_by_name(pod: dict[str, Any], name: str) -> int:
    for ctr in (pod.get("spec") or {}).get("containers") or []:
        for p in ctr.get("ports") or []:
            if p.get("name") == name:
                return int(p.get("containerPort") or 0)
    pname = (pod.get("metadata") or {}).get("name", "")
    raise ClientError(f"Pod '{pname}' does not have a named port '{name}'")


def _service_port_by_name(svc: dict[str, Any], name: str) -> int:
    for p in (svc.get("spec") or {}).get("ports") or []:
        if p.get("name") == name:
            return int(p.get("port") or 0)
    sname = (svc.get("metadata") or {}).get("name", "")
    raise ClientError(f"Service '{sname}' does not have a named port '{name}'")


def _container_port_by_service_port(svc: dict[str, Any], pod: dict[str, Any], port: int) -> int:
    spec = svc.get("spec") or {}
    for p in spec.get("ports") or []:
        if int(p.get("port") or 0) != port:
            continue
        if spec.get("clusterIP") == "None":
            return port
        target = p.get("targetPort")
        if target is None or isinstance(target, int):
            return int(target) if target else port
        if isinstance(target, str) and target.isdigit():
            return int(target) or port
        return _container_port_by_name(pod, str(target))
    sname = (svc.get("metadata") or {}).get("name", "")
    raise ClientError(f"Service {sname} does not have a service port {port}")


def _check_udp(specs: list[str], obj: dict[str, Any], kind: str) -> None:
    udp: set[int] = set()
    tcp: set[int] = set()
    if kind == "Service":
        for p in (obj.get("spec") or {}).get("ports") or []:
            (udp if p.get("protocol") == "UDP" else tcp).add(int(p.get("port") or 0))
    else:
        for ctr in (obj.get("spec") or {}).get("containers") or []:
            for p in ctr.get("ports") or []:
                (udp if p.get("protocol") == "UDP" else tcp).add(int(p.get("containerPort") or 0))
    udp_only = udp - tcp
    for spec in specs:
        _, remote = split_port(spec)
        num = atoi(remote)
        if num is None:
            num = (
                _service_port_by_name(obj, remote)
                if kind == "Service"
                else _container_port_by_name(obj, remote)
            )
        if num in udp_only:
            raise ClientError(f"UDP protocol is not supported for {remote}")


def translate_pod_ports(specs: list[str], pod: dict[str, Any]) -> list[str]:
    """kubectl's convertPodNamedPortToNumber."""
    out = []
    for spec in specs:
        local, remote = split_port(spec)
        remote_s = remote
        if atoi(remote) is None:
            remote_s = str(_container_port_by_name(pod, remote))
        out.append(f"{local}:{remote_s}" if local != remote else remote_s)
    return out


def translate_service_ports(
    specs: list[str], svc: dict[str, Any], pod: dict[str, Any]
) -> list[str]:
    """kubectl's translateServicePortToTargetPort."""
    out = []
    for spec in specs:
        local, remote = split_port(spec)
        num = atoi(remote)
        if num is None:
            num = _service_port_by_name(svc, remote)
            if local == remote:
                local = str(num)
        container = _container_port_by_service_port(svc, pod, num)
        remote = str(container)
        out.append(f"{local}:{remote}" if local != remote else remote)
    return out


# ---- resolution -------------------------------------------------------------------------------------


def is_serving(pod: dict[str, Any]) -> bool:
    """Running and not being deleted: a pod new connections may go to (reconnect, pod moves)."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return bool((pod.get("status") or {}).get("phase") == "Running")


async def first_pod(
    api: ApiClient,
    namespace: str,
    selector: str,
    timeout: float,
    *,
    running_only: bool = False,
    prefer: str | None = None,
) -> dict[str, Any]:
    """The most active pod of `selector`, polling until one exists or `timeout` passed.
    running_only (reconnect): only pods that serve (`is_serving`); `prefer` (the pod we were
    forwarding to) wins while it still serves, so a reconnect does not hop pods needlessly."""
    deadline = time.monotonic() + timeout
    query = {"labelSelector": selector} if selector else None
    for _ in range(int(timeout / POLL_INTERVAL) + 2):  # bounded by the timeout
        listing = await api.get(pod_path(namespace), query, what="get pods")
        items = [p for p in (listing.get("items") or []) if isinstance(p, dict)]
        if running_only:
            items = [p for p in items if is_serving(p)]
            for p in items:
                if prefer and (p.get("metadata") or {}).get("name") == prefer:
                    return p
        if items:
            return most_active(items)
        left = deadline - time.monotonic()
        if left <= 0:
            break
        await asyncio.sleep(min(POLL_INTERVAL, left))
    if running_only:
        raise ClientError(f"no running pod matches the selector {selector}", prefix="")
    raise ClientError("timed out waiting for the condition")


async def resolve(
    api: ApiClient,
    namespace: str,
    target: str,
    specs: list[str],
    pod_running_timeout: float,
    *,
    running_only: bool = False,
    prefer: str | None = None,
) -> Resolved:
    """TYPE/NAME -> pod and numeric port specs. running_only/prefer: see first_pod (the pod of
    a pod/ target is returned whatever its phase; check_running judges it)."""
    prefix, plural, kind, name = split_target(target)
    obj_path = f"{prefix}/namespaces/{quote(namespace, safe='')}/{plural}/{quote(name, safe='')}"
    obj = await api.get(obj_path, what=f"get {plural} {name}")
    if kind == "Pod":
        pod = obj
    else:
        pod = await first_pod(
            api,
            namespace,
            selector_for(obj, kind),
            pod_running_timeout,
            running_only=running_only,
            prefer=prefer,
        )
    pod_name = str((pod.get("metadata") or {}).get("name", ""))
    if kind == "Service":
        _check_udp(specs, obj, kind)
        ports = translate_service_ports(specs, obj, pod)
    else:
        _check_udp(specs, pod, "Pod")
        ports = translate_pod_ports(specs, pod)
    return Resolved(pod=pod, pod_name=pod_name, ports=ports)


def follows_pods(target: str) -> bool:
    """Targets whose pod is chosen by a selector (svc/, deploy/, rs/, sts/, ...): the pod may
    be replaced under a running forward, and new connections follow it."""
    return split_target(target)[2] != "Pod"


async def check_running(api: ApiClient, namespace: str, pod_name: str) -> dict[str, Any]:
    """kubectl re-reads the pod right before the upgrade and requires phase Running."""
    pod: dict[str, Any] = await api.get(pod_path(namespace, pod_name), what=f"get pods {pod_name}")
    phase = (pod.get("status") or {}).get("phase", "")
    if phase != "Running":
        raise ClientError(
            f"unable to forward port because pod is not running. Current status={phase}"
        )
    return pod
