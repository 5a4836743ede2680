"""Plain data types shared by the server (`fastpf.serve`), the client (`fastpf.client`) and the
port-forward engine (`fastpf.transport`). No behaviour lives here: it is the contract between them."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import h11


@dataclass(frozen=True)
class UpgradeRequest:
    """An HTTP/1.1 request head that asks for a port-forward upgrade, as the server parsed it."""

    method: str  # "GET" or "POST"
    path: str  # path without the query, e.g. /api/v1/namespaces/default/pods/x/portforward
    query: dict[str, list[str]]  # parsed query (repeated keys keep every value)
    headers: list[tuple[str, str]]  # names lower-case, values as sent, in order
    trailing: bytes = b""  # bytes the client sent after the request head (already read)
    # The server's h11 connection that parsed this request: it writes the answer (101 or
    # refusal). fastpf.transport.handshake.parse_request makes one for callers without a server.
    http: h11.Connection | None = field(default=None, compare=False, repr=False)

    def header(self, name: str) -> str | None:
        """First value of a header (case-insensitive), or None."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """Every value of a header, each split on commas and stripped (HTTP list syntax)."""
        name = name.lower()
        values: list[str] = []
        for key, value in self.headers:
            if key == name:
                values.extend(part.strip() for part in value.split(",") if part.strip())
        return values


@dataclass(frozen=True)
class PodTarget:
    """A pod the server forwards to: its ports are dialled on `address` (a loopback address)."""

    namespace: str
    name: str
    uid: str
    address: str = "127.0.0.1"


@dataclass(frozen=True)
class ServerOptions:
    """Kubelet-side port-forward behaviour (PROTOCOL.md 5.2)."""

    stream_creation_timeout: float = 30.0
    idle_timeout: float = 4 * 3600.0
    # Kubelet >= 1.33 answers a failed dial with RST_STREAM(CANCEL) on both streams after the
    # error text; <= 1.32 with FIN. Text on the error stream ends every kubectl session, so
    # `silent_errors` resets without text (keeps kubectl sessions alive).
    reset_after_error: bool = True
    silent_errors: bool = False


@dataclass
class ApiDialer:
    """How the client reaches the API server for an upgrade connection.

    Built by `fastpf.client` from kubeconfig/flags; used by `fastpf.transport.upgrade`.
    `ssl` must not offer ALPN (upgrades are HTTP/1.1 only; kubectl sends no ALPN there).
    `open_socket`, when set, returns an already-connected plain socket to the server's
    host:port (through an HTTP CONNECT or SOCKS5 proxy); TLS is layered on top of it.
    """

    host: str
    port: int
    ssl: ssl.SSLContext | None = None
    server_hostname: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)  # Authorization, User-Agent, ...
    open_socket: Callable[[], Awaitable[socket.socket]] | None = None
    base_path: str = ""  # path prefix of the server URL (e.g. "/k8s/clusters/c-1")


@dataclass(frozen=True)
class ConfigOverrides:
    """What the caller sets over the kubeconfig (kubectl's global connection flags), for
    `fastpf.client.kubeconfig.load_config`. None / empty: take the kubeconfig's value."""

    kubeconfig: str | None = None  # this file only (else $KUBECONFIG, else ~/.kube/config)
    context: str | None = None
    cluster: str | None = None
    user: str | None = None
    namespace: str | None = None
    server: str | None = None
    token: str | None = None
    username: str | None = None
    password: str | None = None
    certificate_authority: str | None = None
    client_certificate: str | None = None
    client_key: str | None = None
    insecure_skip_tls_verify: bool | None = None
    tls_server_name: str | None = None
    proxy_url: str | None = None
    impersonate: str | None = None
    impersonate_groups: tuple[str, ...] = ()
    impersonate_uid: str | None = None
    impersonate_extra: tuple[str, ...] = ()  # "key=value"


@dataclass(frozen=True)
class ForwardSpec:
    """One forward as the client engine (`fastpf.client.forward.prepare`) takes it: built
    from the command line's Options (or the library's keyword arguments) by the front end."""

    target: str  # TYPE/NAME or NAME
    ports: tuple[str, ...]  # [LOCAL:]REMOTE specs as given
    addresses: str  # --address (comma list)
    protocol: str
    overrides: ConfigOverrides
    raw_path: str | None  # --raw-path: upgrade this path instead of resolving a pod
    request_timeout: float  # 0: none
    pod_running_timeout: float
    reconnect: bool
    connections: int
    ping_interval: float
    ping_timeout: float
