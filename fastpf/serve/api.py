"""The REST side of `fastpf serve`, sans-IO: a request in, a reply out.

HTTP/1.1 (`http1.py`) and HTTP/2 (`http2.py`) both call `Api.handle()`. A reply is a complete
response, a watch (a response that stays open and streams events), or a port-forward hand-over
(only HTTP/1.1 can upgrade). Answers are always JSON, whatever Accept asks for: kubectl asks for
aggregated discovery and protobuf first and falls back to plain JSON (PROTOCOL.md 2.2).
"""

from __future__ import annotations

import hmac
import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from fastpf.serve.cluster import RESOURCES, Cluster, Resource
from fastpf.serve.selectors import SelectorError, parse_field_selector, parse_label_selector
from fastpf.types import PodTarget

SERVER_VERSION = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-fastpf",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
MAX_WATCH_SECONDS = 3600.0
DEFAULT_WATCH_SECONDS = 1800.0


@dataclass
class Request:
    method: str
    target: str  # path + "?" + query, as sent
    headers: list[tuple[str, str]]  # lower-case names
    path: str = ""
    query: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        path, _, query = self.target.partition("?")
        self.path = path
        self.query = parse_qs(query, keep_blank_values=True)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"


@dataclass
class Watch:
    """200 with a stream of JSON watch events (one per line), open for `timeout` seconds."""

    events: list[bytes]
    timeout: float


@dataclass
class Forward:
    """Hand the connection to the port-forward engine for this pod."""

    pod: PodTarget


Reply = Response | Watch | Forward


def status_response(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> Response:
    """A Kubernetes `Status` failure, as the API server sends for every error."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return Response(code, _dumps(body))


def not_found(resource: Resource, name: str) -> Response:
    details: dict[str, Any] = {"name": name, "kind": resource.plural}
    if resource.group:
        details["group"] = resource.group
    return status_response(404, "NotFound", f'{resource.qualified} "{name}" not found', details)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _json(obj: Any, status: int = 200) -> Response:
    return Response(status, _dumps(obj))


_NO_RESOURCE = status_response(404, "NotFound", "the server could not find the requested resource", {})
_NOT_ALLOWED = "the server does not allow this method on the requested resource"
_FORWARD_CACHE_SIZE = 1024

# /api/{v}/proxy/{minions|nodes}/{node}/portForward/{ns}/{pod}[/{uid}] (2015 era) and the same
# without /api/{v}; kubelet's own /portForward/{ns}/{pod}[/{uid}].
_HISTORIC = re.compile(r"^(?:/api/(?:v1beta1|v1beta3|v1))?/proxy/(?:minions|nodes)/[^/]+(/portForward/.*)$")


class Api:
    def __init__(self, cluster: Cluster, token: str, server_address: str = "127.0.0.1:6443",
                 allow_anonymous: bool = False) -> None:
        self.cluster = cluster
        self._token = token.encode()
        self.server_address = server_address
        # Plain http on loopback without an explicit --token: client-go never sends credentials
        # over http://, so a request without Authorization is let in; a wrong token is still 401.
        self._allow_anonymous = allow_anonymous
        # Port-forward answers per (namespace, pod, uid, api style), valid while the cluster's
        # resourceVersion is unchanged: building an implicit pod costs more than the rest of
        # the request, and clients such as the Python one upgrade once per local connection.
        self._forward_cache: dict[tuple[str, str, str | None, bool], Reply] = {}
        self._forward_rv = ""

    # ---- entry ---------------------------------------------------------------------------------
    def authenticate(self, request: Request) -> bool:
        value = request.header("authorization")
        if value is None:
            return self._allow_anonymous
        scheme, _, credentials = value.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credentials.strip().encode(), self._token)

    def handle(self, request: Request) -> Reply:
        if not self.authenticate(request):
            return status_response(401, "Unauthorized", "Unauthorized")
        if request.header("impersonate-user") is not None:  # recorded, not enforced
            extra = [f"{k}={v}" for k, v in request.headers if k.startswith("impersonate-")]
            print(f"impersonation: {request.method} {request.path} {' '.join(extra)}",
                  file=sys.stderr, flush=True)
        try:
            segments = [unquote(s) for s in request.path.split("/") if s]
        except Exception:  # pragma: no cover - unquote does not raise on str
            return _NO_RESOURCE
        method = request.method.upper()
        forward = self._portforward_path(request.path, segments)
        if forward is not None:
            return self._forward(method, *forward)
        if method not in ("GET", "HEAD"):
            if self._known_path(segments):
                return status_response(405, "MethodNotAllowed", _NOT_ALLOWED, {})
            return _NO_RESOURCE
        try:
            return self._get(request, segments)
        except SelectorError as exc:
            return status_response(400, "BadRequest", str(exc))

    # ---- port-forward --------------------------------------------------------------------------
    def _portforward_path(self, path: str, segments: list[str]) -> tuple[str, str, str | None, bool] | None:
        """(namespace, pod, uid, api_style) when the path is a port-forward endpoint."""
        if (len(segments) == 7 and segments[:3] == ["api", "v1", "namespaces"] and segments[4] == "pods"
                and segments[6] == "portforward"):
            return segments[3], segments[5], None, True
        historic = _HISTORIC.match(path)
        if historic:
            segments = [unquote(s) for s in historic.group(1).split("/") if s]
        if segments and segments[0] == "portForward" and len(segments) in (3, 4):
            return segments[1], segments[2], segments[3] if len(segments) == 4 else None, False
        return None

    def _forward(self, method: str, namespace: str, name: str, uid: str | None, api_style: bool) -> Reply:
        if method not in ("GET", "POST"):
            return status_response(405, "MethodNotAllowed", _NOT_ALLOWED, {})
        rv = self.cluster.resource_version
        if rv != self._forward_rv or len(self._forward_cache) >= _FORWARD_CACHE_SIZE:
            self._forward_cache.clear()
            self._forward_rv = rv
        key = (namespace, name, uid, api_style)
        reply = self._forward_cache.get(key)
        if reply is None:
            reply = self._forward_cache[key] = self._forward_reply(namespace, name, uid, api_style)
        return reply

    def _forward_reply(self, namespace: str, name: str, uid: str | None, api_style: bool) -> Reply:
        pod = self.cluster.get("pods", namespace, name)
        if pod is None or (uid and pod["metadata"]["uid"] != uid):
            if api_style:
                return not_found(RESOURCES["pods"], name)
            return status_response(404, "NotFound", "pod does not exist", {"name": name, "kind": "pods"})
        phase = pod["status"]["phase"]
        if phase == "Pending" and not pod["spec"].get("nodeName"):
            # What the API server says when it cannot locate the kubelet of an unscheduled pod.
            return status_response(400, "BadRequest", f"pod {name} does not have a host assigned")
        if phase != "Running":
            return status_response(400, "BadRequest",
                                   f"unable to upgrade connection: pod {name} is not running (phase {phase})")
        return Forward(self.cluster.pod_target(pod))

    # ---- GET -----------------------------------------------------------------------------------
    def _known_path(self, segments: list[str]) -> bool:
        return self._resolve(segments) is not None or segments in (["api"], ["apis"], ["api", "v1"],
                                                                     ["apis", "apps"], ["apis", "apps", "v1"])

    def _resolve(self, segments: list[str]) -> tuple[Resource, str | None, str | None] | None:
        """(resource, namespace or None for all, name or None for a list)."""
        if segments[:2] == ["api", "v1"]:
            rest, group = segments[2:], ""
        elif segments[:3] == ["apis", "apps", "v1"]:
            rest, group = segments[3:], "apps"
        else:
            return None
        if rest and rest[0] == "watch":  # deprecated /api/v1/watch/... paths
            rest = rest[1:]
        if not rest:
            return None
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        resource = RESOURCES.get(rest[0])
        if resource is None or resource.group != group or len(rest) > 2:
            return None
        if resource.plural == "namespaces":
            if namespace is not None:
                return None
            return resource, None, rest[1] if len(rest) == 2 else None
        if len(rest) == 2 and namespace is None:
            return None  # a named object needs its namespace
        return resource, namespace, rest[1] if len(rest) == 2 else None

    def _get(self, request: Request, segments: list[str]) -> Reply:
        discovery = self._discovery(segments)
        if discovery is not None:
            return _json(discovery)
        if segments in (["healthz"], ["readyz"], ["livez"]):
            return Response(200, b"ok", "text/plain; charset=utf-8")
        resolved = self._resolve(segments)
        if resolved is None:
            return _NO_RESOURCE
        resource, namespace, name = resolved
        watch = (request.param("watch") or "").lower() in ("true", "1") or "watch" in segments[:4]
        if name is not None and not watch:
            obj = self.cluster.get(resource.plural, namespace or "", name)
            if obj is None:
                return not_found(resource, name)
            return _json({"kind": resource.kind, **obj})
        if namespace is not None and self.cluster.get("namespaces", "", namespace) is None:
            return status_response(404, "NotFound", f'namespaces "{namespace}" not found',
                                   {"name": namespace, "kind": "namespaces"})
        label_match = parse_label_selector(request.param("labelSelector"))
        field_match = parse_field_selector(request.param("fieldSelector"))
        candidates = self.cluster.list_objects(resource.plural, namespace)
        if resource.plural == "pods" and not self.cluster.explicit and namespace:
            # Without manifests every pod name exists but none is listed, except the one a
            # request names (a watch on one pod, `fieldSelector=metadata.name=x`).
            wanted = name or _field_name(request.param("fieldSelector"))
            pod = self.cluster.get("pods", namespace, wanted) if wanted else None
            candidates = [pod] if pod is not None else []
        items = [
            obj for obj in candidates
            if label_match(obj["metadata"].get("labels") or {}) and field_match(obj)
            and (name is None or obj["metadata"]["name"] == name)
        ]
        if watch:
            return self._watch(request, resource, items, namespace, name)
        return _json({
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version,
            "metadata": {"resourceVersion": self.cluster.resource_version},
            "items": [{k: v for k, v in obj.items() if k not in ("kind", "apiVersion")} for obj in items],
        })

    def _watch(self, request: Request, resource: Resource, items: list[dict[str, Any]], namespace: str | None,
               name: str | None) -> Watch:
        # The cluster never changes, so "since resourceVersion N" (N current) has no events;
        # otherwise the current objects arrive as ADDED, as for a fresh watch.
        since = request.param("resourceVersion") or ""
        initial = (request.param("sendInitialEvents") or "").lower() == "true"
        if not initial and since not in ("", "0") and since.isdigit() and int(since) >= int(self.cluster.resource_version):
            items = []
        try:
            timeout = float(request.param("timeoutSeconds") or DEFAULT_WATCH_SECONDS)
        except ValueError:
            timeout = DEFAULT_WATCH_SECONDS
        timeout = min(max(timeout, 0.0), MAX_WATCH_SECONDS)
        events = [_dumps({"type": "ADDED", "object": {"kind": resource.kind, **obj}}) + b"\n" for obj in items]
        if (request.param("sendInitialEvents") or "").lower() == "true":
            # WatchList (kubectl 1.35+ informers, e.g. `kubectl wait`): the initial ADDED events
            # must be closed by a bookmark, or the client waits for them until it times out.
            events.append(_dumps({"type": "BOOKMARK", "object": {
                "kind": resource.kind,
                "apiVersion": resource.api_version,
                "metadata": {"resourceVersion": self.cluster.resource_version,
                             "annotations": {"k8s.io/initial-events-end": "true"}},
            }}) + b"\n")
        return Watch(events, timeout)

    def _discovery(self, segments: list[str]) -> dict[str, Any] | None:
        if segments == ["version"]:
            return SERVER_VERSION
        if segments == ["api"]:
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.server_address}],
            }
        group_apps = {
            "name": "apps",
            "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
            "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"},
        }
        if segments == ["apis"]:
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group_apps]}
        if segments == ["apis", "apps"]:
            return {"kind": "APIGroup", "apiVersion": "v1", **group_apps}
        if segments == ["api", "v1"]:
            return _resource_list("v1", "")
        if segments == ["apis", "apps", "v1"]:
            return _resource_list("apps/v1", "apps")
        return None


def _resource_list(group_version: str, group: str) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for r in RESOURCES.values():
        if r.group != group:
            continue
        resources.append({
            "name": r.plural,
            "singularName": r.kind.lower(),
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": list(r.verbs),
            "shortNames": list(r.short_names),
            **({"categories": ["all"]} if r.plural != "namespaces" else {}),
        })
        if r.plural == "pods":
            resources.append({"name": "pods/portforward", "singularName": "", "namespaced": True,
                              "kind": "PodPortForwardOptions", "verbs": ["create", "get"]})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}


def _field_name(selector: str | None) -> str | None:
    """The X of `metadata.name=X` in a field selector, if present."""
    for part in (selector or "").split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip() == "metadata.name" and not key.endswith("!"):
            return value.lstrip("=").strip() or None
    return None
