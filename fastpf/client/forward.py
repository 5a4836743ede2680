"""Port forwarding, client role: local listeners with kubectl's address semantics and, per local
connection, an error + data stream pair (PROTOCOL.md 5.1) relayed by the engine.

Where kubectl ends the whole session on the first error-stream text (one refused connection),
we report that one connection in one stderr line and keep serving. The session ends only when
the upgraded connection itself is lost (`error: lost connection to pod`, exit 1) or on request.

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
from fastpf.client.args import Options, PortPair, parse_addresses, parse_ports
from fastpf.client.console import Console
from fastpf.client.errors import ClientError
from fastpf.client.kubeconfig import load_config
from fastpf.client.resolve import check_running, resolve
from fastpf.errors import FastpfError, HandshakeError
from fastpf.listen import Acceptor, accept_reporter
from fastpf.transport._base import TextCollector
from fastpf.transport.relay import Accepted, RelayResult, relay
from fastpf.transport.spdy import SessionClosedError

STREAM_TIMEOUT = 30.0  # kubectl's wait for SYN_REPLY
ERROR_STREAM_GRACE = 5.0  # after the data stream ended, how long the error text may still take
LISTEN_BACKLOG = 1024

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


def _go_listen_error(proto: str, address: str, port: int, exc: OSError) -> str:
    host = f"[{address}]" if ":" in address else address
    text = {
        errno.EADDRINUSE: "address already in use",
        errno.EADDRNOTAVAIL: "cannot assign requested address",
        errno.EACCES: "permission denied",
        errno.EAFNOSUPPORT: "address family not supported by protocol",
    }.get(exc.errno or 0, (exc.strerror or str(exc)).lower())
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
    """A running forward: owns the upgraded connection(s), the listeners and the relays."""

    api: ApiClient
    path: str
    protocol: str
    pairs: list[PortPair]
    addresses: list[str]
    console: Console
    conn: Any = None
    listeners: list[Listener] = field(default_factory=list)
    relays: set[asyncio.Task[None]] = field(default_factory=set)
    stopping: bool = False
    lost: asyncio.Future[str | None] | None = None
    observer: Any = None  # events.ForwardObserver: --stats, -o json, the Python API

    def _event(self, name: str, *args: Any) -> None:
        hook = getattr(self.observer, name, None)  # an observer may listen to some events only
        if hook is not None:
            hook(*args)

    @property
    def bound_ports(self) -> list[int]:
        return [p.local for p in self.pairs]

    # ---- upgrade ---------------------------------------------------------------------------
    def _effective_protocol(self) -> str:
        if self.protocol == "auto":
            env = os.environ.get("KUBECTL_PORT_FORWARD_WEBSOCKETS", "")
            if env.lower() == "false":
                return "spdy"
        return self.protocol

    async def _connect(self, protocol: str, ports: list[int]) -> Any:
        from fastpf.transport import upgrade

        for attempt in range(2):  # once more after a 401 when an exec plugin can refresh
            dialer = await self.api.dialer()
            try:
                return await upgrade.connect(dialer, self.path, protocol, ports)
            except HandshakeError as exc:
                if exc.status == 401:
                    self.api.contexts.forget_sessions()  # no TLS resumption for the retry
                if exc.status == 401 and attempt == 0 and self.api.auth.unauthorized():
                    continue
                raise ClientError(str(exc)) from None
            except (OSError, asyncio.TimeoutError) as exc:
                raise connect_error(exc, self.api.host, self.api.port) from None
        raise ClientError("error upgrading connection: Unauthorized")

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.lost = loop.create_future()
        proto = self._effective_protocol()
        if proto != "ws-channel":
            self.conn = await self._connect(proto, [p.remote for p in self.pairs])
            self.conn.closed.add_done_callback(self._on_conn_closed)
            self.console.info(4, f"upgraded {self.path} with protocol "
                                 f"{getattr(self.conn, 'negotiated', proto)}")
        self._listen()
        await self._accept()
        # The REST connection is idle from here on; an exec refresh reopens it lazily.
        await self.api.close()

    def _on_conn_closed(self, fut: asyncio.Future[Any]) -> None:
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None if self.stopping else "lost connection to pod")

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
                created.append(Listener(sock, ip, pair))
                display = "127.0.0.1" if ip == "127.0.0.1" else ip
                self.console.forwarding(display, local, pair.remote)
                self._event("listening", display, local, pair.remote)
                ok[mode] += 1
            failed = (ok["all"] == 0 and fail["all"] > 0) or fail["any"] > 0
            if failed:
                self.console.plain(
                    f"Unable to listen on port {pair.local}: Listeners failed to create with "
                    f"the following errors: [{' '.join(errors)}]")
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
            lst.server = Acceptor(lst.sock, functools.partial(self._accepted, lst.pair),
                                  report=accept_reporter(lst, self.console.conn_error))

    def _accepted(self, pair: PortPair) -> Accepted:
        local = Accepted()
        if self.stopping:  # accepted while shutting down: close it once it is connected
            asyncio.get_running_loop().call_soon(local.close)
            return local
        self.console.handling(pair.local)
        task = asyncio.ensure_future(self._handle(local, pair))
        self.relays.add(task)
        task.add_done_callback(self.relays.discard)
        self._event("connection_opened", task, local, pair.local, pair.remote)
        task.add_done_callback(functools.partial(self._event, "connection_closed"))
        return local

    # ---- one local connection ----------------------------------------------------------------
    async def _handle(self, csock: Accepted, pair: PortPair) -> None:
        try:
            if self._effective_protocol() == "ws-channel":
                await self._handle_channel(csock, pair)
            else:
                await self._handle_spdy(csock, pair)
        except asyncio.CancelledError:
            csock.close()
            raise
        except Exception as exc:  # noqa: BLE001 - one connection must never end the session
            csock.close()
            if not self.stopping:
                self.console.conn_error(
                    f"error forwarding {pair.local} -> {pair.remote}: {str(exc) or type(exc).__name__}")

    async def _handle_spdy(self, csock: Accepted, pair: PortPair) -> None:
        conn = self.conn
        rid = str(next_request_id())
        port = str(pair.remote)
        # Both SYN_STREAMs leave at once (ids n, n+2 as kubectl), replies awaited together:
        # one round trip instead of kubectl's two.
        try:
            err_stream = conn.start_stream({"streamtype": "error", "port": port, "requestid": rid})
            data_stream = conn.start_stream({"streamtype": "data", "port": port, "requestid": rid})
        except SessionClosedError as exc:
            csock.close()
            if not self.stopping:
                self.console.conn_error(f"error creating error stream for port {pair.local} -> "
                                        f"{pair.remote}: {exc}")
            return
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
                csock.close()
                if not self.stopping:
                    self.console.conn_error(f"error creating {kind} stream for port {pair.local}"
                                            f" -> {pair.remote}: {str(failure) or type(failure).__name__}")
                return
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
        self._report_end(pair, errors.done.result() if errors.done.done() else b"", result)

    def _report_end(self, pair: PortPair, error_text: bytes, result: RelayResult) -> None:
        """kubectl's line for a forwarded connection that ended badly: the pod side's error
        text if it sent one, else a local copy error that is not a plain hang-up."""
        self._event("relayed", result)  # in the connection's task: its final byte counts
        if self.stopping:
            return
        if error_text:
            self.console.conn_error(
                f"an error occurred forwarding {pair.local} -> {pair.remote}: "
                f"{error_text.decode('utf-8', 'replace')}")
        elif result.error and not _benign(result.error):
            self.console.conn_error(
                f"error copying for port {pair.local} -> {pair.remote}: {result.error}")

    async def _handle_channel(self, csock: Accepted, pair: PortPair) -> None:
        """ws-channel: one WebSocket session per local connection (as the Python client)."""
        try:
            conn = await self._connect("ws-channel", [pair.remote])
        except ClientError as exc:
            csock.close()
            self.console.conn_error(f"error creating stream for port {pair.local} -> "
                                    f"{pair.remote}: {exc.message}")
            return
        try:
            await conn.ready(timeout=STREAM_TIMEOUT)
            chan = conn.channels[0]
            result = await relay(chan, csock)
            # Error text received meanwhile is kept by the channel; wait a little for one only
            # if the session is still up (no task per connection for this).
            self._report_end(pair, await chan.wait_error(ERROR_STREAM_GRACE), result)
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
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.goaway(0)
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
    for key, value in (("{ns}", namespace), ("{namespace}", namespace), ("{pod}", name),
                       ("{name}", name)):
        raw = raw.replace(key, value)
    return raw if raw.startswith("/") else "/" + raw


async def prepare(opts: Options, console: Console) -> Forwarder:
    """Resolve everything up to (not including) the upgrade, in kubectl's order."""
    cfg = load_config(opts)
    api = ApiClient(cfg, request_timeout=opts.request_timeout,
                    log=console.info if console.verbosity else None)
    try:
        namespace = cfg.namespace
        if opts.raw_path:
            name = opts.target.split("/", 1)[-1]
            path = raw_path_for(opts.raw_path, namespace, name)
            specs = list(opts.ports)
        else:
            res = await resolve(api, namespace, opts.target, opts.ports, opts.pod_running_timeout)
            await check_running(api, namespace, res.pod_name)
            path = pod_path(namespace, res.pod_name, "portforward")
            specs = res.ports
        addresses = parse_addresses(opts.addresses)
        pairs = parse_ports(specs)
    except BaseException:
        await api.close()
        raise
    return Forwarder(api=api, path=path, protocol=opts.protocol, pairs=pairs,
                     addresses=addresses, console=console)


@contextlib.asynccontextmanager
async def forward(target: str, ports: list[str], *, namespace: str | None = None,
                  address: str = "localhost", protocol: str = "auto", kubeconfig: str | None = None,
                  context: str | None = None, quiet: bool = True, console: Console | None = None,
                  pod_running_timeout: float = 60.0, observer: Any = None,
                  **overrides: Any) -> AsyncIterator[Forwarder]:
    """Library API: forward `ports` of `target` while the block runs; yields the Forwarder
    (`bound_ports`, `pairs`). Errors raise ClientError (with kubectl's message)."""
    opts = Options(target=target, ports=list(ports), namespace=namespace, addresses=address,
                   protocol=protocol, kubeconfig=kubeconfig, context=context, quiet=quiet,
                   pod_running_timeout=pod_running_timeout)
    for key, value in overrides.items():
        if not hasattr(opts, key):
            raise TypeError(f"unknown option {key!r}")
        setattr(opts, key, value)
    devnull = None
    if console is None:
        devnull = open(os.devnull, "w")  # noqa: SIM115 - closed below
        console = Console(devnull, devnull, quiet=quiet)
    try:
        fwd = await prepare(opts, console)
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
