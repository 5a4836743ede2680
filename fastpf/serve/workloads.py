"""The controllers of the little cluster: Deployments make ReplicaSets, ReplicaSets and
StatefulSets make pods, as kube-controller-manager would (names, labels, owner references,
status counts), synchronously after every change so tests see a settled cluster at once.

- Deployment `web`: a ReplicaSet `web-<pod-template-hash>` (the hash is 10 characters of
  Kubernetes' safe alphabet, from an FNV-1a hash of the template), whose pods are
  `web-<hash>-<5 random characters>` and carry the `pod-template-hash` label. A new template
  makes a new ReplicaSet; the old ones are scaled to 0 and kept (revisionHistoryLimit).
- ReplicaSet `rs`: pods `rs-<5 random characters>`; missing ones are made at once (Running),
  extra ones deleted (not running / not ready / newest first, as Kubernetes prefers).
- StatefulSet `db`: pods `db-0` … `db-(N-1)`, re-made under the same name when deleted.
Pods get the template's labels and annotations; a `fastpf.io/address` annotation on the
workload itself is passed to pods whose template has none.
"""

from __future__ import annotations

import json
import secrets
from typing import TYPE_CHECKING, Any

from fastpf.serve.objects import ADDRESS_ANNOTATION, RESOURCES, copy_json, pod_ready
from fastpf.serve.selectors import match_labels_selector, parse_label_selector

if TYPE_CHECKING:
    from fastpf.serve.cluster import Cluster

SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand
HASH_LABEL = "pod-template-hash"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
_INACTIVE_PHASES = ("Succeeded", "Failed")


def _fnv1a32(data: bytes) -> int:
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def template_hash(template: dict[str, Any]) -> str:
    """Kubernetes' ComputeHash shape: FNV-1a of the template, printed in decimal and each digit
    mapped to the safe alphabet. Like its collisionCount, a counter is mixed in until the hash
    has 10 digits, so names always look like `web-7c9f6d8b54-x2k4q`."""
    text = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    for collision in range(64):
        value = _fnv1a32(text + (str(collision).encode() if collision else b""))
        if value >= 1_000_000_000:
            break
    return "".join(SAFE_ALPHABET[int(ch) % len(SAFE_ALPHABET)] for ch in str(value))


def random_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(SAFE_ALPHABET) for _ in range(length))


def owner_reference(obj: dict[str, Any], plural: str) -> dict[str, Any]:
    resource = RESOURCES[plural]
    return {
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controller_uid(obj: dict[str, Any]) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return str(ref.get("uid"))
    return None


def is_active(pod: dict[str, Any]) -> bool:
    """Counted as a replica: not terminating, not finished."""
    return (
        "deletionTimestamp" not in pod["metadata"]
        and pod["status"].get("phase") not in _INACTIVE_PHASES
    )


def _owned(cluster: Cluster, plural: str) -> dict[str, list[dict[str, Any]]]:
    index: dict[str, list[dict[str, Any]]] = {}
    for obj in cluster.list_objects(plural, None):
        uid = controller_uid(obj)
        if uid is not None:
            index.setdefault(uid, []).append(obj)
    return index


def reconcile(cluster: Cluster) -> None:
    """Bring ReplicaSets and pods in line with every workload, then refresh workload status."""
    replicasets = _owned(cluster, "replicasets")
    for deploy in cluster.list_objects("deployments", None):
        _deployment(cluster, deploy, replicasets.get(deploy["metadata"]["uid"], []))
    _release_strays(cluster)
    pods = _owned(cluster, "pods")
    for rs in cluster.list_objects("replicasets", None):
        _replicaset(cluster, rs, pods.get(rs["metadata"]["uid"], []))
    for sts in cluster.list_objects("statefulsets", None):
        _statefulset(cluster, sts, pods.get(sts["metadata"]["uid"], []))
    _refresh_status(cluster)


# ---- Deployment -> ReplicaSet --------------------------------------------------------------------


def _deployment(cluster: Cluster, deploy: dict[str, Any], owned: list[dict[str, Any]]) -> None:
    meta, spec = deploy["metadata"], deploy["spec"]
    template = spec["template"]
    digest = template_hash(template)
    name = f"{meta['name']}-{digest}"
    current = next((rs for rs in owned if rs["metadata"]["name"] == name), None)
    revisions = [
        int((rs["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION, "0") or 0)
        for rs in owned
    ]
    if current is None:
        labels = {**(template.get("metadata", {}).get("labels") or {}), HASH_LABEL: digest}
        selector = copy_json(spec["selector"])
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: digest}
        rs_template = copy_json(template)
        rs_template.setdefault("metadata", {})["labels"] = labels
        annotations = {
            REVISION_ANNOTATION: str(max(revisions, default=0) + 1),
            "deployment.kubernetes.io/desired-replicas": str(spec["replicas"]),
            "deployment.kubernetes.io/max-replicas": str(spec["replicas"] + 1),
        }
        address = (meta.get("annotations") or {}).get(ADDRESS_ANNOTATION)
        if address is not None:
            annotations[ADDRESS_ANNOTATION] = address
        cluster.create_owned(
            "replicasets",
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": name,
                    "namespace": meta["namespace"],
                    "labels": labels,
                    "annotations": annotations,
                    "ownerReferences": [owner_reference(deploy, "deployments")],
                },
                "spec": {
                    "replicas": spec["replicas"],
                    "selector": selector,
                    "template": rs_template,
                },
            },
        )
    elif current["spec"]["replicas"] != spec["replicas"]:
        cluster.set_replicas("replicasets", current, spec["replicas"])
    old = [rs for rs in owned if rs["metadata"]["name"] != name]
    for rs in old:
        if rs["spec"]["replicas"] != 0:
            cluster.set_replicas("replicasets", rs, 0)
    keep = int(spec.get("revisionHistoryLimit", 10))
    old.sort(
        key=lambda rs: int(
            (rs["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION, "0") or 0
        )
    )
    for rs in old[: max(0, len(old) - keep)]:
        cluster.remove_owned("replicasets", rs)


# ---- ReplicaSet / StatefulSet -> pods -------------------------------------------------------------


def _release_strays(cluster: Cluster) -> None:
    """A pod relabelled out of its controller's selector is released (its owner reference
    removed), as Kubernetes' ControllerRefManager does; a ReplicaSet then makes a replacement,
    while a StatefulSet cannot until the name is free again."""
    owners = {
        obj["metadata"]["uid"]: obj
        for plural in ("replicasets", "statefulsets")
        for obj in cluster.list_objects(plural, None)
    }
    for pod in cluster.list_objects("pods", None):
        owner = owners.get(controller_uid(pod) or "")
        if owner is None:
            continue
        matches = parse_label_selector(match_labels_selector(owner["spec"]["selector"]))
        if not matches(pod["metadata"].get("labels") or {}):
            cluster.release_owned(pod)


def _pod_from_template(
    owner: dict[str, Any], plural: str, name: str, extra_labels: dict[str, str] | None = None
) -> dict[str, Any]:
    template = owner["spec"]["template"]
    template_meta = template.get("metadata") or {}
    annotations = dict(template_meta.get("annotations") or {})
    address = (owner["metadata"].get("annotations") or {}).get(ADDRESS_ANNOTATION)
    if address is not None:
        annotations.setdefault(ADDRESS_ANNOTATION, address)
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": owner["metadata"]["namespace"],
        "labels": {**(template_meta.get("labels") or {}), **(extra_labels or {})},
        "ownerReferences": [owner_reference(owner, plural)],
    }
    if annotations:
        metadata["annotations"] = annotations
    if plural == "replicasets":
        metadata["generateName"] = f"{owner['metadata']['name']}-"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": copy_json(template.get("spec") or {}),
        "status": {"phase": "Running"},
    }


def _least_useful_first(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Kubernetes removes the least useful replicas first: unscheduled, then not running, then
    not ready, then the newest."""
    newest_first = sorted(
        pods, key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True
    )
    return sorted(
        newest_first,
        key=lambda p: (
            1 if p["spec"].get("nodeName") else 0,
            {"Pending": 0, "Unknown": 1, "Running": 2}.get(p["status"].get("phase", ""), 0),
            1 if pod_ready(p) else 0,
        ),
    )


def _replicaset(cluster: Cluster, rs: dict[str, Any], owned: list[dict[str, Any]]) -> None:
    active = [pod for pod in owned if is_active(pod)]
    missing = rs["spec"]["replicas"] - len(active)
    prefix = f"{rs['metadata']['name']}-"
    namespace = rs["metadata"]["namespace"]
    for _ in range(max(0, missing)):
        for _attempt in range(32):  # 27^5 names: a clash is rare, eight in a row impossible
            name = prefix + random_suffix()
            if cluster.get_stored("pods", namespace, name) is None:
                break
        cluster.create_owned("pods", _pod_from_template(rs, "replicasets", name))
    if missing < 0:
        for pod in _least_useful_first(active)[:-missing]:
            cluster.remove_owned("pods", pod)


def _statefulset(cluster: Cluster, sts: dict[str, Any], owned: list[dict[str, Any]]) -> None:
    meta = sts["metadata"]
    replicas = sts["spec"]["replicas"]
    revision = f"{meta['name']}-{template_hash(sts['spec']['template'])}"
    by_name = {pod["metadata"]["name"]: pod for pod in owned}
    for index in range(replicas):
        name = f"{meta['name']}-{index}"
        if name in by_name or cluster.get_stored("pods", meta["namespace"], name) is not None:
            continue  # a terminating db-0 is replaced once it is gone, as Kubernetes does
        cluster.create_owned(
            "pods",
            _pod_from_template(
                sts,
                "statefulsets",
                name,
                {
                    "controller-revision-hash": revision,
                    "statefulset.kubernetes.io/pod-name": name,
                    "apps.kubernetes.io/pod-index": str(index),
                },
            ),
        )
    for name, pod in sorted(by_name.items(), reverse=True):
        ordinal = name.rpartition("-")[2]
        if (
            ordinal.isdigit()
            and int(ordinal) >= replicas
            and "deletionTimestamp" not in pod["metadata"]
        ):
            cluster.remove_owned("pods", pod)


# ---- status ---------------------------------------------------------------------------------------


def _refresh_status(cluster: Cluster) -> None:
    pods = _owned(cluster, "pods")
    counts: dict[str, tuple[int, int]] = {}
    for plural in ("replicasets", "statefulsets"):
        for obj in cluster.list_objects(plural, None):
            active = [p for p in pods.get(obj["metadata"]["uid"], []) if is_active(p)]
            ready = sum(1 for p in active if pod_ready(p))
            counts[obj["metadata"]["uid"]] = (len(active), ready)
            status: dict[str, Any] = {
                "replicas": len(active),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "observedGeneration": obj["metadata"].get("generation", 1),
            }
            if plural == "replicasets":
                status["fullyLabeledReplicas"] = len(active)
            else:
                revision = f"{obj['metadata']['name']}-{template_hash(obj['spec']['template'])}"
                status.update(
                    currentReplicas=len(active),
                    updatedReplicas=len(active),
                    currentRevision=revision,
                    updateRevision=revision,
                    collisionCount=0,
                )
            _set_status(cluster, plural, obj, status)
    replicasets = _owned(cluster, "replicasets")
    for deploy in cluster.list_objects("deployments", None):
        digest = template_hash(deploy["spec"]["template"])
        total = ready = updated = 0
        for rs in replicasets.get(deploy["metadata"]["uid"], []):
            n, r = counts.get(rs["metadata"]["uid"], (0, 0))
            total += n
            ready += r
            if rs["metadata"]["name"].endswith(f"-{digest}"):
                updated = n
        wanted = deploy["spec"]["replicas"]
        available = ready >= wanted
        _set_status(
            cluster,
            "deployments",
            deploy,
            {
                "observedGeneration": deploy["metadata"].get("generation", 1),
                "replicas": total,
                "updatedReplicas": updated,
                "readyReplicas": ready,
                "availableReplicas": ready,
                **({"unavailableReplicas": wanted - ready} if wanted > ready else {}),
                "conditions": [
                    {
                        "type": "Available",
                        "status": "True" if available else "False",
                        "reason": "MinimumReplicasAvailable"
                        if available
                        else "MinimumReplicasUnavailable",
                        "message": "Deployment has minimum availability."
                        if available
                        else "Deployment does not have minimum availability.",
                    },
                    {
                        "type": "Progressing",
                        "status": "True",
                        "reason": "NewReplicaSetAvailable",
                        "message": f'ReplicaSet "{deploy["metadata"]["name"]}-{digest}" has successfully progressed.',
                    },
                ],
            },
        )


def _set_status(cluster: Cluster, plural: str, obj: dict[str, Any], status: dict[str, Any]) -> None:
    status = {k: v for k, v in status.items() if v != 0 or k in ("replicas", "observedGeneration")}
    old = obj.get("status") or {}
    if any(old.get(k) != v for k, v in status.items()) or any(k not in status for k in old):
        cluster.set_status_owned(plural, obj, status)
