"""Port-forward sessions as `fastpf serve` sees them: one log line when a session starts and one
when it ends, and the sessions of each pod, so that deleting a pod ends them.

The HTTP layer hands an upgrade to `accept()` instead of calling the engine directly. After
the engine took the transport, its protocol is the session (`SpdyConnection` or
`ChannelConnection`, with a `closed` future); a refused upgrade leaves the HTTP protocol in
place and the engine has logged why.

A deleted pod's sessions are told to go away, as its kubelet would no longer serve it: SPDY
sessions (raw or tunnelled in WebSocket) get GOAWAY, so connections in flight finish and new
ones are refused; a ws-channel session (one per connection) is closed with 1001. A pod that
only stops Running keeps its sessions, as on a cluster.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from fastpf import _frames as F
from fastpf.serve.cluster import Event
from fastpf.types import PodTarget, ServerOptions, UpgradeRequest

log = logging.getLogger("fastpf.serve.sessions")
AcceptFn = Callable[[asyncio.Transport, UpgradeRequest, PodTarget, ServerOptions], None]


class Session:
    __slots__ = ("pod", "protocol", "peer", "conn", "started")

    def __init__(self, pod: PodTarget, protocol: str, peer: str, conn: Any) -> None:
        self.pod = pod
        self.protocol = protocol
        self.peer = peer
        self.conn = conn
        self.started = time.monotonic()

    def go_away(self) -> None:
        if self.protocol.startswith("ws-channel"):
            self.conn.close(1001)
        else:
            self.conn.goaway(F.GOAWAY_OK, ws_close_code=1001)


_by_pod: dict[str, set[Session]] = {}  # pod uid -> live sessions


def live() -> int:
    return sum(len(s) for s in _by_pod.values())


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    return "unknown"


def _protocol(conn: Any) -> str:
    if hasattr(conn, "tunnel"):
        return "websocket" if conn.tunnel else "spdy"
    return "ws-channel-base64" if getattr(conn, "base64", False) else "ws-channel"


def accept(
    engine: AcceptFn,
    transport: asyncio.Transport,
    request: UpgradeRequest,
    pod: PodTarget,
    options: ServerOptions,
) -> None:
    """Call the engine's accept_portforward, then log and track the session it started."""
    peer = _peer(transport)
    engine(transport, request, pod, options)
    conn = transport.get_protocol()
    closed = getattr(conn, "closed", None)
    if not isinstance(closed, asyncio.Future):
        return  # refused (the engine answered 4xx and logged it)
    session = Session(pod, _protocol(conn), peer, conn)
    _by_pod.setdefault(pod.uid, set()).add(session)
    log.info(
        '"Port-forward session started" pod="%s/%s" address="%s" protocol="%s" peer="%s" userAgent="%s"',
        pod.namespace,
        pod.name,
        pod.address,
        session.protocol,
        peer,
        request.header("user-agent") or "",
    )
    closed.add_done_callback(lambda fut: _ended(session, fut))


def _ended(session: Session, fut: asyncio.Future[Any]) -> None:
    sessions = _by_pod.get(session.pod.uid)
    if sessions is not None:
        sessions.discard(session)
        if not sessions:
            del _by_pod[session.pod.uid]
    reason = None if fut.cancelled() else fut.result()
    why = f' reason="{reason}"' if reason is not None and str(reason) != "connection closed" else ""
    log.info(
        '"Port-forward session ended" pod="%s/%s" protocol="%s" peer="%s" duration="%.3fs"%s',
        session.pod.namespace,
        session.pod.name,
        session.protocol,
        session.peer,
        time.monotonic() - session.started,
        why,
    )


def on_cluster_event(event: Event) -> None:
    """Cluster listener: a deleted pod's sessions go away."""
    if event.type != "DELETED" or event.plural != "pods":
        return
    for session in list(_by_pod.get(event.obj["metadata"]["uid"], ())):
        log.info(
            '"Pod deleted: ending its port-forward session" pod="%s/%s" peer="%s"',
            session.pod.namespace,
            session.pod.name,
            session.peer,
        )
        session.go_away()
