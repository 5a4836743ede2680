"""The REST side of `fastpf serve`, sans-IO: a request in, a reply out.

HTTP/1.1 (`http1.py`) and HTTP/2 (`http2.py`) both call `Api.handle()`. A reply is a complete
response, a watch (a response that stays open and streams events as the cluster changes), or a
port-forward hand-over (only HTTP/1.1 can upgrade). Answers are JSON whatever else Accept asks
for (kubectl asks for aggregated discovery and protobuf first and falls back to plain JSON,
PROTOCOL.md 2.2), except that a list asked `as=Table` gets the Table kubectl prints.
Writes (POST, PUT, PATCH, DELETE, scale) are in `writes.py`.
"""

from __future__ import annotations

import hmac
import logging
import re
import sys
from typing import Any
from urllib.parse import unquote

from fastpf.errors import SelectorError
from fastpf.serve import table
from fastpf.serve.cluster import RESOURCES, Cluster, Resource
from fastpf.serve.logs import V
from fastpf.serve.replies import (
    NO_RESOURCE,
    NOT_ALLOWED,
    Forward,
    Reply,
    Request,
    Response,
    Target,
    Watch,
    dumps,
    json_response,
    not_found,
    status_response,
)
from fastpf.serve.selectors import parse_field_selector, parse_label_selector
from fastpf.serve.watch import Subscription, event_line
from fastpf.serve.writes import scale_of, write

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
SUBRESOURCES = ("status", "scale")

log = logging.getLogger("fastpf.serve.api")


_FORWARD_CACHE_SIZE = 1024

# /api/{v}/proxy/{minions|nodes}/{node}/portForward/{ns}/{pod}[/{uid}] (2015 era) and the same
# without /api/{v}; kubelet's own /portForward/{ns}/{pod}[/{uid}].
_HISTORIC = re.compile(
    r"^(?:/api/(?:v1beta1|v1beta3|v1))?/proxy/(?:minions|nodes)/[^/]+(/portForward/.*)$"
)


class Api:
    def __init__(
        self,
        cluster: Cluster,
        token: str,
        server_address: str = "127.0.0.1:6443",
        allow_anonymous: bool = False,
    ) -> None:
        self.cluster = cluster
        self._token = token.encode()
        self.server_address = server_address
        # Plain http on loopback: client-go never sends credentials over http://, so a request
        # without Authorization is let in; a wrong token is still 401.
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
        reply = self._handle(request)
        if log.isEnabledFor(V(4)):
            _log_request(request, reply)
        return reply

    def _handle(self, request: Request) -> Reply:
        if not self.authenticate(request):
            return status_response(401, "Unauthorized", "Unauthorized")
        if request.header("impersonate-user") is not None:  # recorded, not enforced
            extra = [f"{k}={v}" for k, v in request.headers if k.startswith("impersonate-")]
            print(
                f"impersonation: {request.method} {request.path} {' '.join(extra)}",
                file=sys.stderr,
                flush=True,
            )
        segments = [unquote(s) for s in request.path.split("/") if s]
        method = request.method.upper()
        forward = self._portforward_path(request.path, segments)
        if forward is not None:
            return self._forward(method, *forward)
        if method in ("GET", "HEAD"):
            try:
                return self._get(request, segments)
            except SelectorError as exc:
                return status_response(400, "BadRequest", str(exc))
        target = self.resolve(segments)
        if target is None:
            return (
                NO_RESOURCE
                if not self._known_path(segments)
                else status_response(405, "MethodNotAllowed", NOT_ALLOWED, {})
            )
        return write(self, request, method, target)

    # ---- port-forward --------------------------------------------------------------------------
    def _portforward_path(
        self, path: str, segments: list[str]
    ) -> tuple[str, str, str | None, bool] | None:
        """(namespace, pod, uid, api_style) when the path is a port-forward endpoint."""
        if (
            len(segments) == 7
            and segments[:3] == ["api", "v1", "namespaces"]
            and segments[4] == "pods"
            and segments[6] == "portforward"
        ):
            return segments[3], segments[5], None, True
        historic = _HISTORIC.match(path)
        if historic:
            segments = [unquote(s) for s in historic.group(1).split("/") if s]
        if segments and segments[0] == "portForward" and len(segments) in (3, 4):
            return segments[1], segments[2], segments[3] if len(segments) == 4 else None, False
        return None

    def _forward(
        self, method: str, namespace: str, name: str, uid: str | None, api_style: bool
    ) -> Reply:
        if method not in ("GET", "POST"):
            return status_response(405, "MethodNotAllowed", NOT_ALLOWED, {})
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
            return status_response(
                404, "NotFound", "pod does not exist", {"name": name, "kind": "pods"}
            )
        phase = pod["status"]["phase"]
        if phase == "Pending" and not pod["spec"].get("nodeName"):
            # What the API server says when it cannot locate the kubelet of an unscheduled pod.
            return status_response(400, "BadRequest", f"pod {name} does not have a host assigned")
        if phase != "Running":
            return status_response(
                400,
                "BadRequest",
                f"unable to upgrade connection: pod {name} is not running (phase {phase})",
            )
        return Forward(self.cluster.pod_target(pod))

    # ---- paths ---------------------------------------------------------------------------------
    def _known_path(self, segments: list[str]) -> bool:
        return segments in (
            ["api"],
            ["apis"],
            ["api", "v1"],
            ["apis", "apps"],
            ["apis", "apps", "v1"],
        )

    def resolve(self, segments: list[str]) -> Target | None:
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
        if resource is None or resource.group != group or len(rest) > 3:
            return None
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) == 3 else None
        if sub is not None and (
            sub not in SUBRESOURCES or (sub == "scale" and not resource.scalable)
        ):
            return None
        if resource.plural == "namespaces":
            if namespace is not None or sub is not None:
                return None
            return Target(resource, None, name)
        if name is not None and namespace is None:
            return None  # a named object needs its namespace
        return Target(resource, namespace, name, sub)

    # ---- GET -----------------------------------------------------------------------------------
    def _get(self, request: Request, segments: list[str]) -> Reply:
        discovery = self._discovery(segments)
        if discovery is not None:
            return json_response(discovery)
        if segments in (["healthz"], ["readyz"], ["livez"]):
            return Response(200, b"ok", "text/plain; charset=utf-8")
        target = self.resolve(segments)
        if target is None:
            return NO_RESOURCE
        resource, namespace, name = target.resource, target.namespace, target.name
        watch = (request.param("watch") or "").lower() in ("true", "1") or "watch" in segments[:4]
        table_version = table.table_version(request.header("accept"))
        if name is not None and not watch:
            obj = self.cluster.get(resource.plural, namespace or "", name)
            if obj is None:
                return not_found(resource, name)
            if target.subresource == "scale":
                return json_response(scale_of(obj))
            if table_version is not None:
                return json_response(
                    table.table(
                        resource,
                        [obj],
                        table_version,
                        self.cluster.resource_version,
                        request.param("includeObject"),
                    )
                )
            return json_response(obj)
        if target.subresource is not None:
            return NO_RESOURCE
        if namespace is not None and self.cluster.get("namespaces", "", namespace) is None:
            return status_response(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                {"name": namespace, "kind": "namespaces"},
            )
        label_match = parse_label_selector(request.param("labelSelector"))
        field_match = parse_field_selector(request.param("fieldSelector"))
        candidates = self.cluster.list_objects(resource.plural, namespace)
        if resource.plural == "pods" and not self.cluster.explicit and namespace:
            # Without manifests every pod name exists but only stored ones (created or changed
            # through the API) are listed, plus the one a request names (a watch on one pod,
            # `fieldSelector=metadata.name=x`).
            wanted = name or _field_name(request.param("fieldSelector"))
            if wanted and not any(p["metadata"]["name"] == wanted for p in candidates):
                pod = self.cluster.get("pods", namespace, wanted)
                candidates = candidates + ([pod] if pod is not None else [])

        def matches(obj: dict[str, Any]) -> bool:
            return label_match(obj["metadata"].get("labels") or {}) and field_match(obj)

        items = [
            obj
            for obj in candidates
            if matches(obj) and (name is None or obj["metadata"]["name"] == name)
        ]
        if watch:
            return self._watch(request, resource, items, namespace, name, matches, table_version)
        if table_version is not None:
            return json_response(
                table.table(
                    resource,
                    items,
                    table_version,
                    self.cluster.resource_version,
                    request.param("includeObject"),
                )
            )
        return json_response(
            {
                "kind": f"{resource.kind}List",
                "apiVersion": resource.api_version,
                "metadata": {"resourceVersion": self.cluster.resource_version},
                "items": [
                    {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
                    for obj in items
                ],
            }
        )

    def _watch(
        self,
        request: Request,
        resource: Resource,
        items: list[dict[str, Any]],
        namespace: str | None,
        name: str | None,
        matches: Any,
        table_version: str | None,
    ) -> Watch:
        # No resourceVersion (or "0"): the current objects as ADDED, then live changes. From an
        # older version N: what happened since N, replayed from the recent events, then live;
        # 410 Expired when those are no longer kept (the client lists again), as the API server.
        since = request.param("resourceVersion") or ""
        initial = (request.param("sendInitialEvents") or "").lower() == "true"
        subscription = Subscription(
            self.cluster,
            resource,
            namespace,
            name,
            matches,
            table.renderer(
                resource,
                table_version,
                request.param("includeObject"),
                lambda: self.cluster.resource_version,
            ),
        )
        replay: list[bytes] | None = None
        if not initial and since not in ("", "0") and since.isdigit():
            history = self.cluster.events_since(int(since))
            if history is None:
                expired = {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": f"too old resource version: {since} ({self.cluster.resource_version})",
                    "reason": "Expired",
                    "code": 410,
                }
                return Watch([event_line("ERROR", expired)], 0.0)
            replay = [line for line in map(subscription.line, history) if line is not None]
        try:
            timeout = float(request.param("timeoutSeconds") or DEFAULT_WATCH_SECONDS)
        except ValueError:
            timeout = DEFAULT_WATCH_SECONDS
        timeout = min(max(timeout, 0.0), MAX_WATCH_SECONDS)
        events = (
            replay
            if replay is not None
            else [event_line("ADDED", subscription.render(obj)) for obj in items]
        )
        if initial:
            # WatchList (kubectl 1.35+ informers, e.g. `kubectl wait`): the initial ADDED events
            # must be closed by a bookmark, or the client waits for them until it times out.
            events.append(
                dumps(
                    {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": resource.kind,
                            "apiVersion": resource.api_version,
                            "metadata": {
                                "resourceVersion": self.cluster.resource_version,
                                "annotations": {"k8s.io/initial-events-end": "true"},
                            },
                        },
                    }
                )
                + b"\n"
            )
        return Watch(events, timeout, subscription)

    def _discovery(self, segments: list[str]) -> dict[str, Any] | None:
        if segments == ["version"]:
            return SERVER_VERSION
        if segments == ["api"]:
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": self.server_address}
                ],
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
        if segments[:2] == ["openapi", "v3"]:
            return _openapi_v3(segments[2:])
        return None


def _resource_list(group_version: str, group: str) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for r in RESOURCES.values():
        if r.group != group:
            continue
        resources.append(
            {
                "name": r.plural,
                "singularName": r.kind.lower(),
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": list(r.verbs),
                "shortNames": list(r.short_names),
                **({"categories": ["all"]} if r.plural != "namespaces" else {}),
            }
        )
        if r.plural == "namespaces":
            continue
        resources.append(
            {
                "name": f"{r.plural}/status",
                "singularName": "",
                "namespaced": True,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }
        )
        if r.scalable:
            resources.append(
                {
                    "name": f"{r.plural}/scale",
                    "singularName": "",
                    "namespaced": True,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": ["get", "patch", "update"],
                }
            )
        if r.plural == "pods":
            resources.append(
                {
                    "name": "pods/portforward",
                    "singularName": "",
                    "namespaced": True,
                    "kind": "PodPortForwardOptions",
                    "verbs": ["create", "get"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def _openapi_v3(rest: list[str]) -> dict[str, Any] | None:
    """Just enough OpenAPI v3 for kubectl's default `--validate=strict`: every PATCH operation
    takes the `fieldValidation` query parameter, so kubectl leaves validation to the server
    (which checks what it serves) instead of failing to download schemas it does not need."""
    if not rest:
        return {
            "paths": {
                "api/v1": {"serverRelativeURL": "/openapi/v3/api/v1"},
                "apis/apps/v1": {"serverRelativeURL": "/openapi/v3/apis/apps/v1"},
            }
        }
    group = {("api", "v1"): "", ("apis", "apps", "v1"): "apps"}.get(tuple(rest))
    if group is None:
        return None
    paths: dict[str, Any] = {}
    for r in RESOURCES.values():
        if r.group != group or not r.namespaced:
            continue
        prefix = f"/apis/{r.api_version}" if r.group else "/api/v1"
        paths[f"{prefix}/namespaces/{{namespace}}/{r.plural}/{{name}}"] = {
            "patch": {
                "x-kubernetes-group-version-kind": {
                    "group": r.group,
                    "version": r.version,
                    "kind": r.kind,
                },
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}
                ],
                "responses": {},
            }
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "fastpf serve", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }


def _field_name(selector: str | None) -> str | None:
    """The X of `metadata.name=X` in a field selector, if present."""
    for part in (selector or "").split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip() == "metadata.name" and not key.endswith("!"):
            return value.lstrip("=").strip() or None
    return None


_SECRET_PARAM = re.compile(r"(?i)([?&][^=&]*(?:token|secret|password)[^=&]*=)[^&]*")


def _log_request(request: Request, reply: Reply) -> None:
    """One line per request at -v 4 (like the API server's httplog), headers at -v 8. Never a
    credential: Authorization is masked and query values named like tokens are dropped."""
    status = (
        reply.status if isinstance(reply, Response) else 200 if isinstance(reply, Watch) else 101
    )
    uri = _SECRET_PARAM.sub(r"\1<masked>", request.target)
    log.log(
        V(4),
        'HTTP verb="%s" URI="%s" resp=%d userAgent="%s"',
        request.method,
        uri,
        status,
        request.header("user-agent") or "",
    )
    if log.isEnabledFor(V(8)):
        for key, value in request.headers:
            shown = (
                "<masked>" if key in ("authorization", "proxy-authorization", "cookie") else value
            )
            log.log(V(8), "Request Header: %s: %s", key, shown)
