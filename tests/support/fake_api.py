"""Fake API servers in the test's own loop (plain or TLS, 127.0.0.1, OS-chosen port).

* `MiniApi`: an HTTPS (or HTTP) JSON server for the client's REST calls: `routes[path] =
  (status, obj)`, bearer-token / basic / client-certificate checks, and `seen` (every request
  it got). `pod_json(...)` builds the pod objects it serves.
* `HostileApi`: answers the pod lookup (a Running pod `x`) and hands every port-forward
  request to a scripted `on_upgrade(head, reader, writer)` coroutine: garbage, silence, a
  close, a redirect, a 101 followed by a frame flood...
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11

from tests.support.pki import Pki, write


def pod_json(
    name: str,
    phase: str = "Running",
    ports: list[dict[str, Any]] | None = None,
    labels: dict[str, str] | None = None,
    namespace: str = "default",
) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "labels": labels or {},
            "creationTimestamp": "2024-01-01T00:00:00Z",
        },
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": ports or []}]},
        "status": {"phase": phase},
    }


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    peer_cn: str | None


@dataclass
class MiniApi:
    """HTTPS (or HTTP) JSON server. `routes[path] = (status, obj)`; unknown paths 404 Status.
    `tokens`: accepted bearer tokens (None = no check); `basic`: accepted "user:pass"."""

    pki: Pki | None = None
    require_client_cert: bool = False
    routes: dict[str, tuple[int, Any]] = field(default_factory=dict)
    tokens: set[str] | None = None
    basic: str | None = None
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _server: asyncio.AbstractServer | None = None

    async def start(self, tmpdir: str) -> MiniApi:
        ctx = None
        if self.pki is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            cert = write(os.path.join(tmpdir, "srv.crt"), self.pki.server_cert)
            key = write(os.path.join(tmpdir, "srv.key"), self.pki.server_key)
            ctx.load_cert_chain(cert, key)
            ctx.set_alpn_protocols(["http/1.1"])
            if self.require_client_cert:
                ctx.verify_mode = ssl.CERT_OPTIONAL
                ctx.load_verify_locations(cadata=self.pki.ca_pem.decode())
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0, ssl=ctx)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"{'https' if self.pki else 'http'}://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def _authorized(self, headers: dict[str, str], peer_cn: str | None) -> bool:
        if self.require_client_cert and peer_cn is None:
            return False
        auth = headers.get("authorization", "")
        if self.tokens is not None and auth.removeprefix("Bearer ") not in self.tokens:
            return False
        if self.basic is not None:
            want = "Basic " + base64.b64encode(self.basic.encode()).decode()
            if auth != want:
                return False
        return True

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        peer_cn = None
        sslobj = writer.get_extra_info("ssl_object")
        if sslobj is not None:
            cert = sslobj.getpeercert()
            if cert:
                for rdn in cert.get("subject", ()):
                    for k, v in rdn:
                        if k == "commonName":
                            peer_cn = v
        try:
            for _ in range(100):  # requests per connection
                req = None
                for _ in range(1000):
                    ev = conn.next_event()
                    if ev is h11.NEED_DATA:
                        data = await reader.read(65536)
                        conn.receive_data(data)
                        if not data:
                            return
                        continue
                    if isinstance(ev, h11.Request):
                        req = ev
                    if isinstance(ev, h11.EndOfMessage):
                        break
                    if isinstance(ev, h11.ConnectionClosed):
                        return
                assert req is not None
                headers = {k.decode().lower(): v.decode() for k, v in req.headers}
                target = req.target.decode()
                self.seen.append(Seen(req.method.decode(), target, headers, peer_cn))
                path = target.split("?")[0]
                if not self._authorized(headers, peer_cn):
                    status, obj = (
                        401,
                        {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "status": "Failure",
                            "message": "Unauthorized",
                            "reason": "Unauthorized",
                            "code": 401,
                        },
                    )
                else:
                    status, obj = self.routes.get(
                        path,
                        (
                            404,
                            {
                                "kind": "Status",
                                "apiVersion": "v1",
                                "status": "Failure",
                                "message": f"{path} not found",
                                "reason": "NotFound",
                                "code": 404,
                            },
                        ),
                    )
                body = json.dumps(obj).encode()
                writer.write(
                    conn.send(
                        h11.Response(
                            status_code=status,
                            headers=[
                                ("Content-Type", "application/json"),
                                ("Content-Length", str(len(body))),
                            ],
                        )
                    )
                )
                writer.write(conn.send(h11.Data(data=body)))
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
                if conn.our_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (OSError, h11.ProtocolError, ssl.SSLError):
            pass
        finally:
            writer.close()


POD = {
    "kind": "Pod",
    "apiVersion": "v1",
    "metadata": {
        "name": "x",
        "namespace": "default",
        "uid": "uid-x",
        "creationTimestamp": "2024-01-01T00:00:00Z",
    },
    "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": []}]},
    "status": {"phase": "Running"},
}
SPDY_101 = (
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    b"X-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n"
)

Upgrade = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class HostileApi:
    """Plain-HTTP fake API server: GETs of pod `x` answer Running; any request to a path with
    `/portforward` goes to `on_upgrade(head, reader, writer)` (which owns the connection).
    `heads` keeps every request head seen (bytes)."""

    def __init__(self, on_upgrade: Upgrade) -> None:
        self.on_upgrade = on_upgrade
        self.heads: list[bytes] = []
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> HostileApi:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self, path: Path, token: str = "t0ken") -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "c",
                    "clusters": [{"name": "c", "cluster": {"server": self.url}}],
                    "users": [{"name": "u", "user": {"token": token}}],
                    "contexts": [
                        {
                            "name": "c",
                            "context": {"cluster": "c", "user": "u", "namespace": "default"},
                        }
                    ],
                }
            )
        )
        return path

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            for _ in range(100):  # requests per connection
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                target = head.split(b" ", 2)[1].decode()
                if "/portforward" in target:
                    await self.on_upgrade(head, reader, writer)
                    return
                if target.split("?")[0] == "/api/v1/namespaces/default/pods/x":
                    body = json.dumps(POD).encode()
                    status = b"200 OK"
                else:
                    body = b'{"kind":"Status","apiVersion":"v1","status":"Failure","code":404}'
                    status = b"404 Not Found"
                writer.write(
                    b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                    b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
