"""Server-side printing: the `meta.k8s.io` Table that `kubectl get` asks for
(`Accept: application/json;as=Table;v=v1;g=meta.k8s.io, ...`), with the columns the API
server's printers give each kind (pods: NAME READY STATUS RESTARTS AGE, then IP and NODE for
`-o wide`). kubectl prints the cells as they come, so the server formats AGE.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastpf.goparity import human_duration, parse_rfc3339
from fastpf.serve.objects import Resource
from fastpf.serve.selectors import match_labels_selector

Column = tuple[str, str, int]  # name, type, priority (1: only with -o wide)
_NAME = ("Name", "string", 0)
_AGE = ("Age", "string", 0)
_COLUMNS: dict[str, list[Column]] = {
    "pods": [
        _NAME,
        ("Ready", "string", 0),
        ("Status", "string", 0),
        ("Restarts", "string", 0),
        _AGE,
        ("IP", "string", 1),
        ("Node", "string", 1),
        ("Nominated Node", "string", 1),
        ("Readiness Gates", "string", 1),
    ],
    "services": [
        _NAME,
        ("Type", "string", 0),
        ("Cluster-IP", "string", 0),
        ("External-IP", "string", 0),
        ("Port(s)", "string", 0),
        _AGE,
        ("Selector", "string", 1),
    ],
    "deployments": [
        _NAME,
        ("Ready", "string", 0),
        ("Up-to-date", "integer", 0),
        ("Available", "integer", 0),
        _AGE,
        ("Containers", "string", 1),
        ("Images", "string", 1),
        ("Selector", "string", 1),
    ],
    "replicasets": [
        _NAME,
        ("Desired", "integer", 0),
        ("Current", "integer", 0),
        ("Ready", "integer", 0),
        _AGE,
        ("Containers", "string", 1),
        ("Images", "string", 1),
        ("Selector", "string", 1),
    ],
    "statefulsets": [
        _NAME,
        ("Ready", "string", 0),
        _AGE,
        ("Containers", "string", 1),
        ("Images", "string", 1),
    ],
    "namespaces": [_NAME, ("Status", "string", 0), _AGE],
}


def table_version(accept: str | None) -> str | None:
    """ "v1" or "v1beta1" when the Accept header asks for a meta.k8s.io Table, else None."""
    for media in (accept or "").split(","):
        params = {}
        for part in media.split(";")[1:]:
            key, _, value = part.strip().partition("=")
            params[key.strip().lower()] = value.strip()
        if (
            params.get("as") == "Table"
            and params.get("g") == "meta.k8s.io"
            and params.get("v") in ("v1", "v1beta1")
        ):
            return params["v"]
    return None


def _age(obj: dict[str, Any], now: float) -> str:
    text = obj["metadata"].get("creationTimestamp")
    if not text:
        return "<unknown>"
    try:
        created = parse_rfc3339(str(text))
    except ValueError:
        return "<unknown>"
    return human_duration(now - created)


def _pod_status(pod: dict[str, Any]) -> str:
    """The STATUS column: kubectl's reason ladder, shortened to the states served here."""
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase", "Unknown")
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        waiting, terminated = state.get("waiting"), state.get("terminated")
        if waiting and waiting.get("reason"):
            reason = waiting["reason"]
        elif terminated and terminated.get("reason"):
            reason = terminated["reason"]
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    return str(reason)


def _containers(obj: dict[str, Any]) -> tuple[str, str]:
    containers = ((obj["spec"].get("template") or {}).get("spec") or {}).get("containers") or []
    return (
        ",".join(c.get("name", "") for c in containers),
        ",".join(c.get("image", "") for c in containers),
    )


def _cells(plural: str, obj: dict[str, Any], now: float) -> list[Any]:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    if plural == "pods":
        statuses = status.get("containerStatuses") or []
        ready = sum(1 for c in statuses if c.get("ready"))
        restarts = sum(int(c.get("restartCount") or 0) for c in statuses)
        gates = spec.get("readinessGates") or []
        return [
            meta["name"],
            f"{ready}/{len(spec.get('containers') or [])}",
            _pod_status(obj),
            str(restarts),
            _age(obj, now),
            status.get("podIP") or "<none>",
            spec.get("nodeName") or "<none>",
            status.get("nominatedNodeName") or "<none>",
            f"{sum(1 for _ in gates)}/{len(gates)}" if gates else "<none>",
        ]
    if plural == "services":
        ports = ",".join(
            f"{p['port']}:{p['nodePort']}/{p.get('protocol', 'TCP')}"
            if p.get("nodePort")
            else f"{p['port']}/{p.get('protocol', 'TCP')}"
            for p in spec.get("ports") or []
        )
        external = ",".join(spec.get("externalIPs") or []) or "<none>"
        selector = (
            ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items()))
            or "<none>"
        )
        return [
            meta["name"],
            spec.get("type", "ClusterIP"),
            spec.get("clusterIP") or "<none>",
            external,
            ports or "<none>",
            _age(obj, now),
            selector,
        ]
    if plural == "namespaces":
        return [meta["name"], status.get("phase", "Active"), _age(obj, now)]
    names, images = _containers(obj)
    selector = match_labels_selector(spec.get("selector") or {})
    if plural == "deployments":
        return [
            meta["name"],
            f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            status.get("updatedReplicas", 0),
            status.get("availableReplicas", 0),
            _age(obj, now),
            names,
            images,
            selector,
        ]
    if plural == "replicasets":
        return [
            meta["name"],
            spec.get("replicas", 0),
            status.get("replicas", 0),
            status.get("readyReplicas", 0),
            _age(obj, now),
            names,
            images,
            selector,
        ]
    return [
        meta["name"],
        f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
        _age(obj, now),
        names,
        images,
    ]


def _row_object(obj: dict[str, Any], include: str, version: str) -> dict[str, Any] | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": f"meta.k8s.io/{version}",
        "metadata": obj["metadata"],
    }


def table(
    resource: Resource,
    items: list[dict[str, Any]],
    version: str,
    resource_version: str,
    include_object: str | None = None,
) -> dict[str, Any]:
    """A Table of `items` (one resource). `include_object`: Metadata (default), Object or None."""
    now = time.time()
    include = include_object if include_object in ("None", "Object", "Metadata") else "Metadata"
    rows = []
    for obj in items:
        row: dict[str, Any] = {"cells": _cells(resource.plural, obj, now)}
        row_object = _row_object(obj, include, version)
        if row_object is not None:
            row["object"] = row_object
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": f"meta.k8s.io/{version}",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            {
                "name": name,
                "type": kind,
                "format": "name" if name == "Name" else "",
                "description": name,
                "priority": priority,
            }
            for name, kind, priority in _COLUMNS[resource.plural]
        ],
        "rows": rows,
    }


def renderer(
    resource: Resource,
    version: str | None,
    include_object: str | None,
    resource_version: Callable[[], str],
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """How a watch event's object is written: as is, or as a one-row Table."""
    if version is None:
        return lambda obj: obj
    return lambda obj: table(
        resource,
        [obj],
        version,
        obj["metadata"].get("resourceVersion") or resource_version(),
        include_object,
    )
