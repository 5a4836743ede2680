"""Per-connection work of ws-channel (one upgrade per local connection) done once: the client's
TLS context (rebuilt when the exec plugin's certificate or a TLS file changes), TLS session
resumption across upgrades (dropped after a 401), the server's 101 head and
port-forward answers, and the 101 + port announcements in one write."""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import time
from pathlib import Path
from typing import Any

import h11
import pytest
import yaml

from fastpf import _frames as F
from fastpf.client import auth as A
from fastpf.client import kubeconfig as K
from fastpf.client.api import ApiClient, pod_path
from fastpf.client.args import parse_args
from fastpf.client.tlsconfig import ResumingContext
from fastpf.loop import run
from fastpf.serve.api import Api
from fastpf.serve.cluster import Cluster
from fastpf.serve.replies import Forward, Request, Response
from fastpf.transport import handshake, kubelet, upgrade
from fastpf.transport.channel import ChannelConnection
from fastpf.types import PodTarget, ServerOptions, UpgradeRequest
from tests.support.pki import Pki, make_pki, write
from tests.support.serve_process import ServeInstance
from tests.support.targets import Targets


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


def _kubeconfig(path: Path, user: dict[str, Any], cluster: dict[str, Any]) -> str:
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1", **cluster}}],
        "users": [{"name": "c", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "c"}}],
    }
    return write(str(path), yaml.safe_dump(cfg))


def _client(kc: str) -> ApiClient:
    return ApiClient(K.load_config(parse_args(["--kubeconfig", kc, "p", "80"]).config_overrides()))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---- client: TLS context reuse -------------------------------------------------------------------
def test_upgrade_dialer_and_context_built_once(tmp_path: Path, pki: Pki) -> None:
    kc = _kubeconfig(
        tmp_path / "kc",
        {
            "client-certificate-data": _b64(pki.client_cert),
            "client-key-data": _b64(pki.client_key),
            "token": "t",
        },
        {"certificate-authority-data": _b64(pki.ca_pem)},
    )
    api = _client(kc)

    async def body() -> None:
        first = await api.dialer()
        for _ in range(5):
            again = await api.dialer()
            assert again is first  # same ApiDialer, same SSLContext
        assert isinstance(first.ssl, ResumingContext)
        assert ("Authorization", "Bearer t") in first.headers
        assert api.contexts.builds == 1
        rest = await api._ssl(["h2", "http/1.1"])  # the REST context (ALPN) is another one
        assert rest is not first.ssl and not isinstance(rest, ResumingContext)
        assert await api._ssl(["h2", "http/1.1"]) is rest
        assert api.contexts.builds == 2

    run(body())


def _exec_client(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch, plugin: Any
) -> ApiClient:
    """An ApiClient whose credentials come from an exec plugin answered by `plugin`."""
    monkeypatch.setattr(A.Authenticator, "_run_plugin", plugin)
    A.reset_exec_cache()
    kc = _kubeconfig(
        tmp_path / "kc",
        {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": "unused",
                "interactiveMode": "Never",
            }
        },
        {"certificate-authority-data": _b64(pki.ca_pem)},
    )
    return _client(kc)


def test_context_rebuilt_when_exec_certificate_changes(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = make_pki("bob")
    certs = [
        (pki.client_cert, pki.client_key),
        (other.client_cert, other.client_key),
        (other.client_cert, other.client_key),
    ]
    runs: list[int] = []

    async def plugin(self: A.Authenticator, ex: Any) -> A.ExecResult:
        cert, key = certs[min(len(runs), len(certs) - 1)]
        runs.append(1)
        return A.ExecResult(token=None, cert=cert, key=key, expires=None, fetched=time.monotonic())

    api = _exec_client(tmp_path, pki, monkeypatch, plugin)

    async def body() -> None:
        first = await api.dialer()
        assert (await api.dialer()).ssl is first.ssl and len(runs) == 1
        assert api.auth.unauthorized()  # a 401: the plugin runs again, with a new cert
        second = await api.dialer()
        assert len(runs) == 2 and second.ssl is not first.ssl
        assert api.contexts.builds == 2
        assert api.auth.unauthorized()  # same cert again: the context is kept
        assert (await api.dialer()).ssl is second.ssl
        assert len(runs) == 3 and api.contexts.builds == 2

    try:
        run(body())
    finally:
        A.reset_exec_cache()


def test_context_rebuilt_when_ca_file_changes(tmp_path: Path, pki: Pki) -> None:
    ca = write(str(tmp_path / "ca.pem"), pki.ca_pem)
    kc = _kubeconfig(tmp_path / "kc", {"token": "t"}, {"certificate-authority": ca})
    api = _client(kc)

    async def body() -> None:
        first = (await api.dialer()).ssl
        assert (await api.dialer()).ssl is first
        write(ca, pki.other_ca_pem)
        st = os.stat(ca)
        os.utime(ca, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
        assert (await api.dialer()).ssl is not first
        os.unlink(ca)  # unreadable now: the error comes from the rebuild, as before
        with pytest.raises(Exception, match="certificate-authority"):
            await api.dialer()

    run(body())


# ---- client: TLS session resumption across upgrade connections ----------------------------------
def _ssl_object(conn: Any) -> ssl.SSLObject:
    obj = conn.transport.get_extra_info("ssl_object")
    assert obj is not None
    return obj  # type: ignore[no-any-return]


def test_upgrades_resume_the_tls_session(serve: ServeInstance, targets: Targets) -> None:
    api = _client(str(serve.kubeconfig))
    path = pod_path("default", "mypod", "portforward")

    async def one() -> bool:
        conn = await upgrade.connect(await api.dialer(), path, "ws-channel", [targets.echo])
        assert isinstance(conn, ChannelConnection)
        try:
            await conn.ready()
            return bool(_ssl_object(conn).session_reused)
        finally:
            conn.close(1000)

    async def body() -> None:
        assert await one() is False  # full handshake; its session is kept
        assert await one() is True
        assert await one() is True
        api.contexts.forget_sessions()  # what a 401 on an upgrade does
        assert await one() is False
        assert await one() is True
        assert api.contexts.builds == 1

    run(body())


def test_upgrade_401_retries_without_tls_resumption(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastpf.client.console import Console
    from fastpf.client.forward import Forwarder
    from fastpf.errors import UpgradeRefusedError

    tokens = ["stale", "good"]

    async def plugin(self: A.Authenticator, ex: Any) -> A.ExecResult:
        return A.ExecResult(
            token=tokens.pop(0), cert=None, key=None, expires=None, fetched=time.monotonic()
        )

    api = _exec_client(tmp_path, pki, monkeypatch, plugin)
    seen: list[tuple[str | None, object]] = []

    async def fake_connect(
        dialer: Any, path: str, protocol: str, ports: list[int], **kwargs: Any
    ) -> str:
        authz = dict(dialer.headers).get("Authorization")
        seen.append((authz, dialer.ssl.offered_session))
        if authz == "Bearer stale":
            dialer.ssl._session = "a session"  # as if earlier upgrades had left one
            raise UpgradeRefusedError("error upgrading connection: Unauthorized", 401)
        return "connected"

    monkeypatch.setattr(upgrade, "connect", fake_connect)
    devnull = open(os.devnull, "w")  # noqa: SIM115 - closed below
    fwd = Forwarder(
        api=api,
        path="/x",
        protocol="ws-channel",
        pairs=[],
        addresses=[],
        console=Console(devnull, devnull, quiet=True),
    )
    try:
        assert run(fwd._connect("ws-channel", [80])) == "connected"
    finally:
        devnull.close()
        A.reset_exec_cache()
    assert seen == [("Bearer stale", None), ("Bearer good", None)]


def test_resuming_context_stops_asking_a_server_without_tickets() -> None:
    ctx = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)

    class NoTicket:
        session_reused = False
        session = None
        asked = 0

        def __getattribute__(self, name: str) -> Any:
            if name == "session":
                NoTicket.asked += 1
            return object.__getattribute__(self, name)

    for _ in range(10):
        ctx.remember_session(NoTicket())  # type: ignore[arg-type]
    assert NoTicket.asked == 3 and ctx.offered_session is None


# ---- client: error text of a channel without a task ---------------------------------------------
def test_wait_error_returns_text_received_before_and_times_out() -> None:
    async def body() -> None:
        conn = ChannelConnection(client=True, ports=[80])
        chan = conn.channels[0]
        chan._on_error(b"boom")  # arrived while the relay ran
        assert await chan.wait_error(30.0) == b"boom"
        quiet = ChannelConnection(client=True, ports=[81]).channels[0]
        assert await quiet.wait_error(0.01) == b""  # none came: gives up
        later = ChannelConnection(client=True, ports=[82])
        asyncio.get_running_loop().call_soon(later.channels[0]._on_error, b"late")
        assert await later.channels[0].wait_error(30.0) == b"late"
        ended = ChannelConnection(client=True, ports=[83])
        asyncio.get_running_loop().call_soon(ended._ended, None)
        assert await ended.channels[0].wait_error(30.0) == b""

    run(body())


# ---- server: 101 head, port-forward answers, one write ------------------------------------------
def _upgrade_request(
    key: str, protocol: str = handshake.CHANNEL_V4, ports: str = "80,81"
) -> UpgradeRequest:
    head = (
        f"GET /api/v1/namespaces/default/pods/p/portforward?ports={ports} HTTP/1.1\r\n"
        f"host: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\n"
        f"sec-websocket-version: 13\r\nsec-websocket-key: {key}\r\n"
        f"sec-websocket-protocol: {protocol}\r\n\r\n"
    )
    return handshake.parse_request(head.encode())


def _h11_101(headers: list[tuple[str, str]]) -> bytes:
    client = h11.Connection(h11.CLIENT)
    raw = client.send(
        h11.Request(
            method="GET",
            target="/",
            headers=[("host", "x"), ("connection", "upgrade"), ("upgrade", "x")],
        )
    )
    server = h11.Connection(h11.SERVER)
    server.receive_data((raw or b"") + (client.send(h11.EndOfMessage()) or b""))
    server.next_event()
    server.next_event()
    return (
        server.send(
            h11.InformationalResponse(
                status_code=101, headers=headers, reason=b"Switching Protocols"
            )
        )
        or b""
    )


@pytest.mark.parametrize("protocol", [handshake.CHANNEL_V4, handshake.CHANNEL_V4_BASE64])
def test_switching_head_is_h11_output_with_each_accept(protocol: str) -> None:
    for _ in range(3):
        key = handshake.new_websocket_key()
        result = handshake.negotiate(_upgrade_request(key, protocol))
        assert isinstance(result, handshake.Accepted)
        assert result.response == _h11_101(
            [
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Accept", handshake.websocket_accept(key)),
                ("Sec-WebSocket-Protocol", protocol),
            ]
        )


def test_forward_answers_follow_cluster_changes() -> None:
    token = "tok"
    auth = [("authorization", f"Bearer {token}")]
    cluster = Cluster(explicit=True)
    api = Api(cluster, token)
    path = "/api/v1/namespaces/default/pods/late/portforward"
    reply = api.handle(Request("GET", path, auth))
    assert isinstance(reply, Response) and reply.status == 404
    assert api.handle(Request("GET", path, auth)) is reply  # answered from the cache
    cluster.load_text("apiVersion: v1\nkind: Pod\nmetadata: {name: late}\n", "m.yaml")
    forward = api.handle(Request("GET", path, auth))
    assert isinstance(forward, Forward) and forward.pod.name == "late"
    assert isinstance(api.handle(Request("GET", path, [])), Response)  # auth still per request


class _RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.protocol: Any = None

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def writelines(self, parts: Any) -> None:
        self.writes.append(b"".join(bytes(p) for p in parts))

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False


@pytest.mark.parametrize("b64", [False, True])
def test_101_and_port_announcements_leave_in_one_write(b64: bool) -> None:
    protocol = handshake.CHANNEL_V4_BASE64 if b64 else handshake.CHANNEL_V4
    key = handshake.new_websocket_key()
    request = _upgrade_request(key, protocol)
    expected_head = handshake.negotiate(_upgrade_request(key, protocol))  # the same request again
    assert isinstance(expected_head, handshake.Accepted)
    frames = b""
    for port, channels in ((80, (0, 1)), (81, (2, 3))):
        for channel in channels:
            opcode, msg = F.channel_encode(channel, port.to_bytes(2, "little"), b64)
            frames += F.ws_encode(opcode, msg)

    async def body() -> list[bytes]:
        transport = _RecordingTransport()
        # Nothing listens on these ports of 127.0.0.3: the dials fail in the background.
        kubelet.accept_portforward(
            transport,
            request,
            PodTarget("default", "p", "uid", "127.0.0.3"),
            ServerOptions(silent_errors=True),
        )
        writes = list(transport.writes)
        await kubelet.shutdown_all(timeout=5.0)
        return writes

    writes = run(body())
    assert writes[0] == expected_head.response + frames


@pytest.mark.parametrize(
    "path",
    ["/api/v1/namespaces/default/pods/p/portforward?ports=80", "/raw?x={sec-websocket-key-slot}"],
)
def test_cached_websocket_request_is_h11_output_with_a_fresh_key(path: str) -> None:
    extra = [("User-Agent", "fastpf-test"), ("Authorization", "Bearer t")]
    keys = set()
    for _ in range(3):
        conn, data, key = handshake.websocket_request("h:1", path, [handshake.CHANNEL_V4], extra)
        keys.add(key)
        ref_conn, ref_data, _ = handshake.websocket_request(
            "h:1", path, [handshake.CHANNEL_V4], extra, key=key
        )
        assert data == ref_data and f"Sec-WebSocket-Key: {key}\r\n".encode() in data
        assert (conn.our_state, conn.their_state) == (ref_conn.our_state, ref_conn.their_state)
    assert len(keys) == 3


def _memory_handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> ssl.SSLObject:
    ci, co, si, so = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(ci, co, server_hostname="localhost")
    s = server.wrap_bio(si, so, server_side=True)
    for _ in range(10):  # bounded: a handshake takes a few round trips
        done = 0
        for obj, src, dst in ((c, co, si), (s, so, ci)):
            try:
                obj.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
            dst.write(src.read())
        if done == 2:
            break
    s.write(b"x")  # the server's tickets go out with its first write
    ci.write(so.read())
    assert c.read(10) == b"x"
    return c


def test_resuming_context_drops_a_session_openssl_refuses(tmp_path: Path) -> None:
    from tests.support.pki import tls_contexts

    server, plain_client = tls_contexts()
    ca = plain_client.get_ca_certs(binary_form=True)[0]
    ours = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    ours.load_verify_locations(cadata=ca)
    other = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    other.load_verify_locations(cadata=ca)
    first = _memory_handshake(ours, server)
    ours.remember_session(first)
    assert ours.offered_session is not None
    assert _memory_handshake(ours, server).session_reused
    other._session = ours._session  # from another context: the ssl module refuses it
    assert not _memory_handshake(other, server).session_reused  # full handshake instead
    assert other.offered_session is None
