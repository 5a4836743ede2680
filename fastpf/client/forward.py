"""Port forwarding, client role: local listeners with kubectl's address semantics and, per local
connection, an error + data stream pair (PROTOCOL.md 5.1) relayed by the engine.

Where kubectl ends the whole session on the first error-stream text (one refused connection),
we report that one connection in one stderr line and keep serving. Where kubectl ends when the
upgraded connection is lost, we keep the listeners and reconnect (fastpf.client.session_pool
for spdy/websocket, fastpf.client.channel_gate for ws-channel), follow pods that move
(fastpf.client.watch) and declare silent peers dead (fastpf.client.reconnect, which also
writes down the session-layer contract this relies on). `--reconnect=false` keeps kubectl's
`error: lost connection to pod`, exit 1.

Library use:

    async with forward("deploy/web", ["8080", ":5432"], namespace="prod") as fwd:
        print(fwd.bound_ports)   # [8080, 41234]
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import itertools
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastpf.client.api import ApiClient, connect_error, pod_path
from fastpf.client.args import (
    DEFAULT_CONNECTIONS,
    DEFAULT_PING_INTERVAL,
    DEFAULT_PING_TIMEOUT,
    Options,
    PortPair,
    parse_addresses,
    parse_ports,
)
from fastpf.client.channel_gate import ChannelGate
from fastpf.client.console import Console
from fastpf.client.kubeconfig import load_config
from fastpf.client.reconnect import ConsoleObserver, Observers
from fastpf.client.resolve import check_running, follows_pods, is_serving, resolve
from fastpf.client.session_pool import Endpoint, SessionPool, Slot
from fastpf.client.watch import PodWatcher
from fastpf.errors import (
    ApiError,
    ClientError,
    FastpfError,
    HandshakeError,
    PoolUnavailable,
    SessionClosedError,
)
from fastpf.goparity import errno_text
from fastpf.listen import Acceptor, accept_reporter
from fastpf.transport._base import TextCollector
from fastpf.transport.relay import Accepted, RelayResult, relay
from fastpf.types import ForwardSpec

STREAM_TIMEOUT = 30.0  # kubectl's wait for SYN_REPLY
ERROR_STREAM_GRACE = 5.0  # after the data stream ended, how long the error text may still take
LISTEN_BACKLOG = 1024
# A local connection whose upgraded connection ended before its streams were answered is
# retried on another (nothing was sent for it yet): at most this many times.
OPEN_RETRIES = 3

# PROTOCOL.md 5.1: requestID is a process-wide counter shared by all ports and sessions.
_request_ids = itertools.count()


def next_request_id() -> int:
    return next(_request_ids)


@dataclass
class Listener:
    sock: socket.socket
    address: str
    pair: PortPair
    server: Acceptor | None = None
    index: int = 0  # position of its pair in Forwarder.pairs (Endpoint.remotes)


def _go_listen_error(proto: str, address: str, port: int, exc: OSError) -> str:
    host = f"[{address}]" if ":" in address else address
    text = {
        errno.EADDRINUSE: "address already in use",
        errno.EADDRNOTAVAIL: "cannot assign requested address",
        errno.EACCES: "permission denied",
        errno.EAFNOSUPPORT: "address family not supported by protocol",
    }.get(exc.errno or 0, errno_text(exc))
    return f"unable to create listener: Error listen {proto} {host}:{port}: bind: {text}"


def _bind(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Go sets SO_REUSEADDR on listeners (TIME_WAIT leftovers must not block a restart),
        # and IPV6_V6ONLY for tcp6 so ::1 and 127.0.0.1 are separate listeners.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _expand_addresses(addresses: list[str]) -> list[tuple[str, str, str]]:
    """-> [(ip, "tcp4"/"tcp6", failure mode)]: localhost = both loopbacks, "all" must fail to
    fail; an explicit IP is "any" (its failure fails the port), as kubectl's parseAddresses."""
    out: list[tuple[str, str, str]] = []
    for addr in addresses:
        if addr == "localhost":
            out.append(("127.0.0.1", "tcp4", "all"))
            out.append(("::1", "tcp6", "all"))
        else:
            out.append((addr, "tcp6" if ":" in addr else "tcp4", "any"))
    return out


@dataclass
class Forwarder:
    """A running forward: owns the upgraded connections (a SessionPool, or a ChannelGate for
    ws-channel), the listeners, the relays and the pod watcher."""

    api: ApiClient
    path: str
    protocol: str
    pairs: list[PortPair]
    addresses: list[str]
    console: Console
    listeners: list[Listener] = field(default_factory=list)
    relays: set[asyncio.Task[None]] = field(default_factory=set)
    stopping: bool = False
    lost: asyncio.Future[str | None] | None = None
    # ---- staying up (issue 12) ----
    spec: ForwardSpec | None = None  # for re-resolving and re-reading the kubeconfig
    namespace: str = "default"
    pod: str = ""  # the pod resolved at start (see _current_pod once it moved)
    reconnect: bool = True
    connections: int = DEFAULT_CONNECTIONS
    ping_interval: float = DEFAULT_PING_INTERVAL
    ping_timeout: float = DEFAULT_PING_TIMEOUT
    give_up_after: float = 60.0  # --pod-running-timeout: max wait for a connection to exist
    pool: SessionPool | None = None
    gate: ChannelGate | None = None
    watcher: PodWatcher | None = None
    _negotiated: str | None = None
    # events.ForwardObserver: --stats, -o json, the Python API; it also gets the reconnect
    # events (lost, reconnecting, reconnected, pod_changed) besides the console's lines.
    observer: Any = None

    def _event(self, name: str, *args: Any) -> None:
        hook = getattr(self.observer, name, None)  # an observer may listen to some events only
        if hook is not None:
            hook(*args)

    @property
    def bound_ports(self) -> list[int]:
        return [p.local for p in self.pairs]

    @property
    def conn(self) -> Any:
        """The first live upgraded connection (None for ws-channel or while reconnecting)."""
        slot = self.pool.pick() if self.pool is not None else None
        return slot.conn if slot is not None else None

    # ---- upgrade ---------------------------------------------------------------------------
    def _effective_protocol(self) -> str:
        if self.protocol == "auto":
            env = os.environ.get("KUBECTL_PORT_FORWARD_WEBSOCKETS", "")
            if env.lower() == "false":
                return "spdy"
        return self.protocol

    async def _connect(
        self, protocol: str, ports: list[int], path: str | None = None, timeout: float | None = None
    ) -> Any:
        from fastpf.transport import upgrade

        # Pings come from our DeadPeer monitor (one timer per pool), not the session's timer.
        kwargs: dict[str, Any] = {"ping_interval": 0}
        if timeout is not None:
            kwargs["timeout"] = timeout
        for attempt in range(2):  # once more after a 401 when an exec plugin can refresh
            dialer = await self.api.dialer()
            try:
                return await upgrade.connect(dialer, path or self.path, protocol, ports, **kwargs)
            except HandshakeError as exc:
                if exc.status == 401:
                    self.api.contexts.forget_sessions()  # no TLS resumption for the retry
                if exc.status == 401 and attempt == 0 and self.api.auth.unauthorized():
                    continue
                if exc.status == 401:
                    self._reload_config()  # a reconnect attempt later uses fresh credentials
                raise ClientError(str(exc)) from None
            except (OSError, asyncio.TimeoutError) as exc:
                raise connect_error(exc, self.api.host, self.api.port) from None
        raise ClientError("error upgrading connection: Unauthorized")

    def _reload_config(self) -> None:
        """After a 401: read the kubeconfig again (a rotated token in it, a new exec or
        tokenFile setting); the next attempt uses a new REST client if anything changed.
        A tokenFile is re-read anyway (Authenticator.unauthorized drops its cache)."""
        if self.spec is None or not self.reconnect:
            return
        try:
            cfg = load_config(self.spec.overrides)
        except ClientError:
            return
        if cfg == self.api.cfg:
            return
        old = self.api
        self.api = ApiClient(cfg, request_timeout=self.spec.request_timeout, log=old.log)
        if self.watcher is not None:
            self.watcher.api = self.api
        task = asyncio.ensure_future(old.close())
        self.relays.add(task)
        task.add_done_callback(self.relays.discard)

    async def _open_session(self, endpoint: Endpoint, timeout: float | None) -> Any:
        """SessionPool's opener: one upgraded connection to `endpoint`."""
        proto = self._negotiated or self._effective_protocol()
        conn = await self._connect(proto, list(endpoint.remotes), endpoint.path, timeout)
        self._negotiated = getattr(conn, "negotiated", proto)  # auto: keep what worked
        self.console.info(4, f"upgraded {endpoint.path} with protocol {self._negotiated}")
        return conn

    async def _resolve_endpoint(self, prefer: str) -> Endpoint:
        """Re-resolve the target for a reconnect: a selector target may now be another pod
        (`prefer`, the current one, while it still runs); a pod/ target must be Running."""
        assert self.spec is not None
        spec = self.spec
        try:
            res = await resolve(
                self.api,
                self.namespace,
                spec.target,
                list(spec.ports),
                0.0,
                running_only=True,
                prefer=prefer,
            )
        except ApiError as exc:
            if exc.status == 401:
                self._reload_config()  # the next attempt uses what the kubeconfig says now
            raise
        if not is_serving(res.pod):
            phase = (res.pod.get("status") or {}).get("phase", "")
            raise ClientError(
                f"unable to forward port because pod is not running. Current status={phase}"
            )
        remotes = tuple(p.remote for p in parse_ports(res.ports))
        return Endpoint(
            res.pod_name, pod_path(self.namespace, res.pod_name, "portforward"), remotes
        )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.lost = loop.create_future()
        extra = [self.observer] if self.observer is not None else []
        events = Observers(ConsoleObserver(self.console), *extra)
        endpoint = Endpoint(self.pod, self.path, tuple(p.remote for p in self.pairs))
        can_resolve = self.spec is not None and not self.spec.raw_path
        resolver = self._resolve_endpoint if can_resolve and self.reconnect else None
        log = self.console.info
        if self._effective_protocol() != "ws-channel":
            self.pool = SessionPool(
                size=self.connections,
                opener=self._open_session,
                resolver=resolver,
                observer=events,
                reconnect=self.reconnect,
                give_up_after=self.give_up_after,
                ping_interval=self.ping_interval,
                ping_timeout=self.ping_timeout,
                log=log,
            )
            await self.pool.start(endpoint)
            self.pool.fatal.add_done_callback(self._on_fatal)
        else:
            self.gate = ChannelGate(
                endpoint,
                resolver=resolver,
                observer=events,
                give_up_after=self.give_up_after,
                ping_interval=self.ping_interval,
                ping_timeout=self.ping_timeout,
                log=log,
            )
            self.gate.fatal.add_done_callback(self._on_fatal)
        self._listen()
        await self._accept()
        if can_resolve and self.reconnect and self.spec and follows_pods(self.spec.target):
            self.watcher = PodWatcher(
                self.api, self.namespace, self._current_pod, self._pod_gone, log=log
            )
            self.watcher.start()
        else:
            # The REST connection is idle from here on; an exec refresh reopens it lazily.
            await self.api.close()

    def _current_pod(self) -> str:
        """The pod new connections go to (the pool's or the gate's current endpoint)."""
        owner = self.pool if self.pool is not None else self.gate
        return owner.endpoint.pod if owner is not None else self.pod

    def _pod_gone(self, pod: str, reason: str) -> None:
        if self.pool is not None:
            self.pool.moved(pod, reason)
        if self.gate is not None:
            self.gate.moved(pod, reason)

    def _on_fatal(self, fut: asyncio.Future[str]) -> None:
        if self.lost is not None and not self.lost.done() and not fut.cancelled():
            self.lost.set_result(None if self.stopping else fut.result())

    # ---- listeners (kubectl's listenOnPort) ------------------------------------------------
    def _listen(self) -> None:
        expanded = _expand_addresses(self.addresses)
        any_ok = False
        for i, pair in enumerate(self.pairs):
            errors: list[str] = []
            created: list[Listener] = []
            fail = {"all": 0, "any": 0}
            ok = {"all": 0, "any": 0}
            local = pair.local
            for ip, proto, mode in expanded:
                try:
                    sock = _bind(ip, local)
                except OSError as exc:
                    errors.append(_go_listen_error(proto, ip, local, exc))
                    fail[mode] += 1
                    continue
                local = sock.getsockname()[1]  # random port: the other addresses reuse it
                pair = PortPair(local, pair.remote)
                self.pairs[i] = pair
                created.append(Listener(sock, ip, pair, index=i))
                display = "127.0.0.1" if ip == "127.0.0.1" else ip
                self.console.forwarding(display, local, pair.remote)
                self._event("listening", display, local, pair.remote)
                ok[mode] += 1
            failed = (ok["all"] == 0 and fail["all"] > 0) or fail["any"] > 0
            if failed:
                self.console.plain(
                    f"Unable to listen on port {pair.local}: Listeners failed to create with "
                    f"the following errors: [{' '.join(errors)}]"
                )
            else:
                any_ok = True
            if errors and not failed:
                # kubectl is silent here; a half-bound localhost surprises users (PROTOCOL 8).
                for err in errors:
                    self.console.warn(f"port {pair.local}: {err}")
            # kubectl keeps serving on the listeners it made even when the port "failed".
            self.listeners.extend(created)
        if not any_ok:
            ports = " ".join(f"{{{p.local} {p.remote}}}" for p in self.pairs)
            raise ClientError(f"unable to listen on any of the requested ports: [{ports}]")

    async def _accept(self) -> None:
        """Accept on every listener (fastpf.listen: never drops a connection when descriptors
        run out) and hand each connection to an Accepted protocol (reading paused until its
        streams exist)."""
        for lst in self.listeners:
            lst.server = Acceptor(
                lst.sock,
                functools.partial(self._accepted, lst.index),
                report=accept_reporter(lst, self.console.conn_error),
            )

    def _accepted(self, index: int) -> Accepted:
        local = Accepted()
        if self.stopping:  # accepted while shutting down: close it once it is connected
            asyncio.get_running_loop().call_soon(local.close)
            return local
        pair = self.pairs[index]
        self.console.handling(pair.local)
        task = asyncio.ensure_future(self._handle(local, index))
        self.relays.add(task)
        task.add_done_callback(self.relays.discard)
        self._event("connection_opened", task, local, pair.local, pair.remote)
        task.add_done_callback(functools.partial(self._event, "connection_closed"))
        return local

    # ---- one local connection ----------------------------------------------------------------
    async def _handle(self, csock: Accepted, index: int) -> None:
        pair = self.pairs[index]
        try:
            if self.gate is not None:
                await self._handle_channel(csock, index)
            else:
                await self._handle_spdy(csock, index)
        except asyncio.CancelledError:
            csock.close()
            raise
        except Exception as exc:  # noqa: BLE001 - one connection must never end the session
            csock.close()
            if not self.stopping:
                self.console.conn_error(
                    f"error forwarding {pair.local} -> {pair.remote}: {str(exc) or type(exc).__name__}"
                )

    async def _handle_spdy(self, csock: Accepted, index: int) -> None:
        pool = self.pool
        assert pool is not None
        pair = self.pairs[index]
        deadline = asyncio.get_running_loop().time() + self.give_up_after
        for _ in range(OPEN_RETRIES):
            try:
                # While no upgraded connection is up (reconnecting), wait; bounded.
                slot = await pool.acquire(deadline - asyncio.get_running_loop().time())
            except PoolUnavailable as exc:
                csock.close()
                if not self.stopping:
                    self.console.conn_error(
                        f"error forwarding {pair.local} -> {pair.remote}: {exc}"
                    )
                return
            try:
                if await self._forward_on(slot, csock, index):
                    return
            finally:
                pool.release(slot)
        csock.close()
        if not self.stopping:
            self.console.conn_error(
                f"error creating stream for port {pair.local} -> "
                f"{pair.remote}: lost connection to pod"
            )

    async def _forward_on(self, slot: Slot, csock: Accepted, index: int) -> bool:
        """Forward one local connection over `slot`'s connection. False: the connection ended
        before the streams were answered and nothing was sent for it (retry elsewhere)."""
        conn = slot.conn
        pair = self.pairs[index]
        if conn is None:  # ended between acquire and here: try again (bounded by the caller)
            return False
        remote = slot.endpoint.remotes[index]
        rid = str(next_request_id())
        port = str(remote)
        retry = self.reconnect and not self.stopping
        # Both SYN_STREAMs leave at once (ids n, n+2 as kubectl), replies awaited together:
        # one round trip instead of kubectl's two.
        try:
            err_stream = conn.start_stream({"streamtype": "error", "port": port, "requestid": rid})
            data_stream = conn.start_stream({"streamtype": "data", "port": port, "requestid": rid})
        except SessionClosedError as exc:
            if retry:
                return False
            csock.close()
            if not self.stopping:
                self.console.conn_error(
                    f"error creating error stream for port {pair.local} -> {remote}: {exc}"
                )
            return True
        try:
            failures = await conn.wait_replies([err_stream, data_stream], STREAM_TIMEOUT)
        except BaseException:
            csock.close()
            raise
        for kind, failure in (("error", failures[0]), ("forwarding", failures[1])):
            if failure is not None:
                for stream in (err_stream, data_stream):
                    with contextlib.suppress(Exception):
                        stream.reset()
                if retry and isinstance(failure, SessionClosedError):
                    return False
                csock.close()
                if not self.stopping:
                    if self.watcher is not None:
                        self.watcher.poke()  # a refused stream may mean the pod is going
                    self.console.conn_error(
                        f"error creating {kind} stream for port {pair.local}"
                        f" -> {remote}: {str(failure) or type(failure).__name__}"
                    )
                return True
        err_stream.write_eof()  # the client never writes on the error stream
        errors = TextCollector(asyncio.get_running_loop())
        err_stream.set_sink(errors)
        result = await relay(data_stream, csock)
        if not errors.done.done():
            # The server FINs/RSTs the error stream right after the data stream; never hang
            # on one that does not (kubectl does, PROTOCOL.md 8).
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(errors.done), ERROR_STREAM_GRACE)
            if not errors.done.done():
                with contextlib.suppress(Exception):
                    err_stream.reset()
        self._report_end(
            PortPair(pair.local, remote),
            errors.done.result() if errors.done.done() else b"",
            result,
        )
        return True

    def _report_end(self, pair: PortPair, error_text: bytes, result: RelayResult) -> None:
        """kubectl's line for a forwarded connection that ended badly: the pod side's error
        text if it sent one, else a local copy error that is not a plain hang-up."""
        self._event("relayed", result)  # in the connection's task: its final byte counts
        if self.stopping:
            return
        if error_text:
            self.console.conn_error(
                f"an error occurred forwarding {pair.local} -> {pair.remote}: "
                f"{error_text.decode('utf-8', 'replace')}"
            )
        elif result.error and not _benign(result.error):
            self.console.conn_error(
                f"error copying for port {pair.local} -> {pair.remote}: {result.error}"
            )

    async def _handle_channel(self, csock: Accepted, index: int) -> None:
        """ws-channel: one WebSocket session per local connection (as the Python client)."""
        gate = self.gate
        assert gate is not None
        pair = self.pairs[index]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.give_up_after
        conn = None
        for _ in range(1 << 20):  # bounded by the deadline: each failure waits for the gate
            endpoint = gate.endpoint
            if self.reconnect:
                try:
                    endpoint = await gate.wait_up(deadline - loop.time())
                except PoolUnavailable as exc:
                    csock.close()
                    if not self.stopping:
                        self.console.conn_error(
                            f"error creating stream for port {pair.local} -> {pair.remote}: {exc}"
                        )
                    return
            remote = endpoint.remotes[index]
            try:
                conn = await self._connect("ws-channel", [remote], endpoint.path)
            except ClientError as exc:
                if (
                    self.reconnect
                    and not self.stopping
                    and csock.lost is False
                    and loop.time() < deadline
                ):
                    gate.failed(endpoint, exc.message)  # hold new connections, recover
                    continue
                csock.close()
                if not self.stopping:
                    self.console.conn_error(
                        f"error creating stream for port {pair.local} -> {remote}: {exc.message}"
                    )
                return
            gate.succeeded()
            break
        if conn is None:
            csock.close()
            return
        gate.track(conn)
        try:
            await conn.ready(timeout=STREAM_TIMEOUT)
            chan = conn.channels[0]
            result = await relay(chan, csock)
            # Error text received meanwhile is kept by the channel; wait a little for one only
            # if the session is still up (no task per connection for this).
            self._report_end(
                PortPair(pair.local, remote), await chan.wait_error(ERROR_STREAM_GRACE), result
            )
        finally:
            with contextlib.suppress(Exception):
                conn.close(1000)
            csock.close()

    # ---- lifecycle ----------------------------------------------------------------------------
    async def wait(self) -> str | None:
        """Until the session ends: None after stop(), else the fatal message."""
        assert self.lost is not None
        return await self.lost

    async def stop(self) -> None:
        """GOAWAY, close listeners, end relays (SIGINT/SIGTERM, or leaving `async with`)."""
        if self.stopping:
            return
        self.stopping = True
        for lst in self.listeners:
            if lst.server is not None:
                lst.server.close()  # the server owns the socket: stops accepting, closes it
            else:
                with contextlib.suppress(OSError):
                    lst.sock.close()
        if self.watcher is not None:
            await self.watcher.close()
        if self.pool is not None:
            await self.pool.close()
        if self.gate is not None:
            await self.gate.close()
        for task in list(self.relays):
            task.cancel()
        if self.relays:
            await asyncio.wait(set(self.relays), timeout=2.0)
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)
        await self.api.close()


def _benign(error: str) -> bool:
    low = error.lower()
    return any(s in low for s in ("reset by peer", "broken pipe", "connection closed", "cancel"))


def raw_path_for(raw: str, namespace: str, name: str) -> str:
    """--raw-path with optional {ns}/{namespace} and {pod}/{name} placeholders filled in."""
    for key, value in (
        ("{ns}", namespace),
        ("{namespace}", namespace),
        ("{pod}", name),
        ("{name}", name),
    ):
        raw = raw.replace(key, value)
    return raw if raw.startswith("/") else "/" + raw


async def prepare(spec: ForwardSpec, console: Console) -> Forwarder:
    """Resolve everything up to (not including) the upgrade, in kubectl's order."""
    cfg = load_config(spec.overrides)
    api = ApiClient(
        cfg, request_timeout=spec.request_timeout, log=console.info if console.verbosity else None
    )
    try:
        namespace = cfg.namespace
        if spec.raw_path:
            name = spec.target.split("/", 1)[-1]
            path = raw_path_for(spec.raw_path, namespace, name)
            specs = list(spec.ports)
        else:
            res = await resolve(
                api, namespace, spec.target, list(spec.ports), spec.pod_running_timeout
            )
            await check_running(api, namespace, res.pod_name)
            name = res.pod_name
            path = pod_path(namespace, res.pod_name, "portforward")
            specs = res.ports
        addresses = parse_addresses(spec.addresses)
        pairs = parse_ports(specs)
    except BaseException:
        await api.close()
        raise
    return Forwarder(
        api=api,
        path=path,
        protocol=spec.protocol,
        pairs=pairs,
        addresses=addresses,
        console=console,
        spec=spec,
        namespace=namespace,
        pod=name,
        reconnect=spec.reconnect,
        connections=spec.connections,
        ping_interval=spec.ping_interval,
        ping_timeout=spec.ping_timeout,
        give_up_after=spec.pod_running_timeout,
    )


@contextlib.asynccontextmanager
async def forward(
    target: str,
    ports: list[str],
    *,
    namespace: str | None = None,
    address: str = "localhost",
    protocol: str = "auto",
    kubeconfig: str | None = None,
    context: str | None = None,
    quiet: bool = True,
    console: Console | None = None,
    pod_running_timeout: float = 60.0,
    observer: Any = None,
    **overrides: Any,
) -> AsyncIterator[Forwarder]:
    """Library API: forward `ports` of `target` while the block runs; yields the Forwarder
    (`bound_ports`, `pairs`). Errors raise ClientError (with kubectl's message)."""
    opts = Options(
        target=target,
        ports=list(ports),
        namespace=namespace,
        addresses=address,
        protocol=protocol,
        kubeconfig=kubeconfig,
        context=context,
        quiet=quiet,
        pod_running_timeout=pod_running_timeout,
    )
    for key, value in overrides.items():
        if not hasattr(opts, key):
            raise TypeError(f"unknown option {key!r}")
        setattr(opts, key, value)
    devnull = None
    if console is None:
        devnull = open(os.devnull, "w")  # noqa: SIM115 - closed below
        console = Console(devnull, devnull, quiet=quiet)
    try:
        fwd = await prepare(opts.forward_spec(), console)
        fwd.observer = observer  # events.ForwardObserver, or None
        try:
            await fwd.start()
            yield fwd
        finally:
            await fwd.stop()
    finally:
        if devnull is not None:
            devnull.close()


__all__ = ["Forwarder", "FastpfError", "forward", "next_request_id", "prepare"]
