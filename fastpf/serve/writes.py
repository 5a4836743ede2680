"""The write verbs of the REST API, so kubectl and tests can change the cluster under a running
forward (issue 12's test hooks), with the same auth as every other request:

    POST   /api/v1/namespaces/{ns}/pods                      create (JSON, or YAML by Content-Type)
    PUT    .../{resource}/{name}                              replace (status is kept)
    PATCH  .../{resource}/{name}                              merge / strategic / JSON patch
    PUT    .../{resource}/{name}/status, PATCH .../status     change only the status
    GET/PUT/PATCH .../{deployments|replicasets|statefulsets}/{name}/scale   autoscaling/v1 Scale
    DELETE .../{resource}/{name}                              at once; a pod with gracePeriodSeconds > 0
                                                              is Terminating for that long first
Every resource served (pods, services, deployments, replicasets, statefulsets) takes them;
namespaces are read-only. Answers and errors are the API server's (201 + object, 409
AlreadyExists, 404 NotFound, 422 Invalid, 400 BadRequest, 415 UnsupportedMediaType).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fastpf.errors import (
    AlreadyExists,
    InvalidObject,
    LimitExceeded,
    ManifestError,
    NotFound,
    PatchError,
)
from fastpf.serve import patch
from fastpf.serve.logs import V
from fastpf.serve.manifests import decode_body
from fastpf.serve.replies import (
    NOT_ALLOWED,
    Reply,
    Request,
    Target,
    json_response,
    not_found,
    status_response,
)
from fastpf.serve.selectors import match_labels_selector

if TYPE_CHECKING:
    from fastpf.serve.api import Api

log = logging.getLogger("fastpf.serve.writes")


def scale_of(obj: dict[str, Any]) -> dict[str, Any]:
    """The autoscaling/v1 Scale of a workload."""
    meta = obj["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": obj["spec"]["replicas"]},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": match_labels_selector(obj["spec"]["selector"]),
        },
    }


def write(api: Api, request: Request, method: str, target: Target) -> Reply:
    resource = target.resource
    if resource.plural == "namespaces" or method not in ("POST", "PUT", "PATCH", "DELETE"):
        return status_response(405, "MethodNotAllowed", NOT_ALLOWED, {})
    if (method == "POST") != (target.name is None) or target.namespace is None:
        return status_response(405, "MethodNotAllowed", NOT_ALLOWED, {})
    namespace, name = target.namespace, target.name or ""
    try:
        if method == "DELETE":
            if target.subresource is not None:
                return status_response(405, "MethodNotAllowed", NOT_ALLOWED, {})
            gone = api.cluster.delete(resource.plural, namespace, name, _grace(request))
            log.log(V(2), "deleted %s %s/%s", resource.kind, namespace, name)
            return json_response(gone)
        body = decode_body(
            request.body,
            request.header("content-type") if method != "PATCH" else "application/json",
        )
        if method == "POST":
            return _create(api, request, namespace, body)
        current = api.cluster.get(resource.plural, namespace, name)
        if current is None:
            return not_found(resource, name)
        if method == "PATCH":
            kind = request.header("content-type") or ""
            if target.subresource == "scale":
                body = patch.apply(kind, scale_of(current), body)
            else:
                body = patch.apply(kind, current, body)
        return _update(api, target, namespace, name, body)
    except NotFound as exc:
        return not_found(exc.resource, exc.name)
    except AlreadyExists as exc:
        details = {
            "name": exc.name,
            "kind": exc.resource.plural,
            **({"group": exc.resource.group} if exc.resource.group else {}),
        }
        return status_response(409, "AlreadyExists", str(exc), details)
    except PatchError as exc:
        if "unsupported patch type" in str(exc):
            return status_response(415, "UnsupportedMediaType", str(exc))
        return status_response(422, "Invalid", str(exc))
    except (InvalidObject, LimitExceeded) as exc:
        return status_response(
            422,
            "Invalid",
            f'{resource.kind} "{name}" is invalid: {exc}',
            {"name": name, "kind": resource.plural},
        )
    except ManifestError as exc:
        return status_response(400, "BadRequest", str(exc))


def _grace(request: Request) -> float | None:
    """gracePeriodSeconds from the query or the DeleteOptions body (None: delete at once)."""
    text = request.param("gracePeriodSeconds")
    if text is None and request.body:
        try:
            options = decode_body(request.body, "application/json")
        except ManifestError:
            options = None
        value = options.get("gracePeriodSeconds") if isinstance(options, dict) else None
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else None
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _create(api: Api, request: Request, namespace: str, obj: Any) -> Reply:
    if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
        given = obj["metadata"].get("namespace")
        if given and given != namespace:
            return status_response(
                400,
                "BadRequest",
                "the namespace of the provided object does not match "
                "the namespace sent on the request",
            )
        obj["metadata"]["namespace"] = namespace
    created = api.cluster.create(obj)
    log.log(V(2), "created %s %s/%s", created["kind"], namespace, created["metadata"]["name"])
    return json_response(created, 201)


def _update(api: Api, target: Target, namespace: str, name: str, body: Any) -> Reply:
    plural = target.resource.plural
    if target.subresource == "scale":
        spec = body.get("spec") if isinstance(body, dict) else None
        if not isinstance(spec, dict) or "replicas" not in spec:
            raise InvalidObject("a Scale needs spec.replicas")
        obj = api.cluster.scale(plural, namespace, name, spec["replicas"])
        log.log(
            V(2), "scaled %s %s/%s to %s", target.resource.kind, namespace, name, spec["replicas"]
        )
        return json_response(scale_of(obj))
    if target.subresource == "status":
        status = body.get("status") if isinstance(body, dict) else None
        obj = api.cluster.replace_status(
            plural, namespace, name, status if status is not None else {}
        )
        log.log(
            V(2),
            "status of %s %s/%s: %s",
            target.resource.kind,
            namespace,
            name,
            obj["status"].get("phase", "changed"),
        )
        return json_response(obj)
    if isinstance(body, dict) and isinstance(body.get("metadata"), dict):
        body["metadata"].setdefault("namespace", namespace)
    obj = api.cluster.replace(plural, namespace, name, body)
    log.log(V(2), "updated %s %s/%s", target.resource.kind, namespace, name)
    return json_response(obj)
