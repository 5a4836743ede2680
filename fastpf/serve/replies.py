"""What the REST layer answers, shared by `api` (reads), `writes` and the HTTP handlers:
a complete response, a watch (open, streaming events), or a port-forward hand-over."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from fastpf.serve.objects import Resource
from fastpf.serve.watch import Subscription
from fastpf.types import PodTarget


@dataclass
class Request:
    method: str
    target: str  # path + "?" + query, as sent
    headers: list[tuple[str, str]]  # lower-case names
    path: str = ""
    query: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""

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
    """200 with a stream of JSON watch events (one per line), open for `timeout` seconds: the
    `events` first, then what `subscription` delivers once the handler attaches to it."""

    events: list[bytes]
    timeout: float
    subscription: Subscription | None = None


@dataclass
class Forward:
    """Hand the connection to the port-forward engine for this pod."""

    pod: PodTarget


Reply = Response | Watch | Forward


def status_response(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> Response:
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
    return Response(code, dumps(body))


def not_found(resource: Resource, name: str) -> Response:
    details: dict[str, Any] = {"name": name, "kind": resource.plural}
    if resource.group:
        details["group"] = resource.group
    return status_response(404, "NotFound", f'{resource.qualified} "{name}" not found', details)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(status, dumps(obj))


NO_RESOURCE = status_response(
    404, "NotFound", "the server could not find the requested resource", {}
)
NOT_ALLOWED = "the server does not allow this method on the requested resource"


@dataclass(frozen=True)
class Target:
    """A REST path resolved: resource, namespace (None: all), name (None: a list), subresource."""

    resource: Resource
    namespace: str | None
    name: str | None
    subresource: str | None = None
