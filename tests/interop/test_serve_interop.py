"""Real clients through `fastpf serve` (TLS) and the port-forward engine: kubectl 1.27-1.33 and
1.37 over SPDY and the WebSocket tunnel, and the Python `kubernetes` client over v4.channel.

Pods live on 127.0.0.2 (annotation fastpf.io/address) so that kubectl's `R` form can bind
127.0.0.1:R while the pod listens on 127.0.0.2:R.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.kubectl import KUBECTL_VERSIONS, require_peer
from tests.support.patterns import download, pattern_sha256, upload
from tests.support.processes import KubectlPortForward
from tests.support.serve_process import ServeInstance
from tests.support.targets import Targets, free_port

POD_HOST = "127.0.0.2"
BIG = 64 << 20

MANIFEST = """
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  labels: {{app: web}}
  annotations: {{fastpf.io/address: {host}}}
spec:
  containers:
  - name: main
    ports:
    - {{name: sink, containerPort: {sink}}}
    - {{name: source, containerPort: {source}}}
    - {{name: echo, containerPort: {echo}}}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-pending
  labels: {{app: web}}
  annotations: {{fastpf.io/address: {host}}}
spec: {{containers: [{{name: main}}]}}
status: {{phase: Pending}}
---
apiVersion: v1
kind: Pod
metadata: {{name: pending}}
status: {{phase: Pending}}
---
apiVersion: v1
kind: Pod
metadata:
  name: refused
  annotations: {{fastpf.io/address: {host}}}
spec: {{containers: [{{name: main, ports: [{{name: closed, containerPort: {refused}}}]}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports:
  - {{name: up, port: 80, targetPort: sink}}
  - {{name: down, port: 81, targetPort: {source}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 0  # its pods are the hand-written ones above (serve makes `replicas` pods of its own)
  selector:
    matchLabels: {{app: web}}
    matchExpressions: [{{key: app, operator: In, values: [web, www]}}]
  template: {{metadata: {{labels: {{app: web}}}}}}
"""

# (kubectl version, KUBECTL_PORT_FORWARD_WEBSOCKETS or None, expected transport)
VARIANTS = [
    ("1.29", None, "spdy"),
    ("1.33", None, "websocket"),
    ("1.33", "false", "spdy"),
]


@pytest.fixture
def cluster(
    serve_factory: Callable[..., ServeInstance], targets_factory: Callable[[str], Targets]
) -> tuple[ServeInstance, Targets, int]:
    t = targets_factory(POD_HOST)
    refused = free_port(POD_HOST)
    s = serve_factory(
        manifest=MANIFEST.format(
            host=POD_HOST, sink=t.sink, source=t.source, echo=t.echo, refused=refused
        )
    )
    return s, t, refused


def _env(ws: str | None) -> dict[str, str]:
    return {"KUBECTL_PORT_FORWARD_WEBSOCKETS": ws} if ws is not None else {}


def _transport_used(pf: KubectlPortForward) -> str:
    """Which upgrade succeeded, from kubectl's -v=6 request log (stderr is read by its own
    thread, so the line may trail the `Forwarding from` lines on stdout a little)."""
    deadline = time.monotonic() + 10
    while True:
        log = "\n".join(pf.stderr)
        if re.search(r'GET[" ].*pods/[^/ ]+/portforward.*101', log):
            return "websocket"
        if re.search(r'POST[" ].*pods/[^/ ]+/portforward.*101', log):
            return "spdy"
        if time.monotonic() > deadline:
            return "unknown"
        time.sleep(0.05)


def _echo(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(payload)
        got = bytearray()
        while len(got) < len(payload):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return bytes(got)


@pytest.mark.parametrize(
    ("version", "ws", "transport"), VARIANTS, ids=["1.29-spdy", "1.33-ws", "1.33-spdy"]
)
def test_port_forms_and_bulk_data(
    cluster: tuple[ServeInstance, Targets, int],
    kubectl_port_forward: Callable[..., KubectlPortForward],
    version: str,
    ws: str | None,
    transport: str,
) -> None:
    s, t, _ = cluster
    fixed_local = free_port()
    # R (local = remote: 127.0.0.1:sink, pod on 127.0.0.2:sink), L:R, :R, 0:R, all in one session.
    pf = kubectl_port_forward(
        version,
        s.kubeconfig,
        "pod/web-0",
        str(t.sink),
        f"{fixed_local}:{t.source}",
        f":{t.echo}",
        f"0:{t.sink}",
        env=_env(ws),
        args=("-v=6",),
    )
    assert _transport_used(pf) == transport
    forwards = [(local, remote) for address, local, remote in pf.forwards if address == "127.0.0.1"]
    assert forwards[0] == (t.sink, t.sink)
    assert forwards[1] == (fixed_local, t.source)
    assert forwards[2][1] == t.echo and forwards[2][0] not in (0, t.echo)
    assert forwards[3][1] == t.sink and forwards[3][0] not in (0, t.sink)
    with ThreadPoolExecutor(2) as pool:  # 64 MiB each way at the same time
        up = pool.submit(upload, t.sink, BIG)
        down = pool.submit(download, fixed_local, BIG)
        assert up.result(120) == f"{BIG} {pattern_sha256(BIG)}"
        assert down.result(120) == (BIG, pattern_sha256(BIG))
    assert _echo(forwards[2][0], b"ping" * 1000) == b"ping" * 1000
    assert upload(forwards[3][0], 12345) == f"12345 {pattern_sha256(12345)}"
    assert pf.proc.poll() is None, pf.output()
    assert "Handling connection for" in pf.output()


@pytest.mark.parametrize(
    ("version", "ws", "transport"), VARIANTS, ids=["1.29-spdy", "1.33-ws", "1.33-spdy"]
)
def test_many_concurrent_connections(
    cluster: tuple[ServeInstance, Targets, int],
    kubectl_port_forward: Callable[..., KubectlPortForward],
    version: str,
    ws: str | None,
    transport: str,
) -> None:
    s, t, _ = cluster
    pf = kubectl_port_forward(
        version, s.kubeconfig, "web-0", f":{t.echo}", f":{t.source}", env=_env(ws)
    )
    echo_port, source_port = pf.local_port(t.echo), pf.local_port(t.source)
    n = 64

    async def one(i: int) -> bool:
        if i % 2:
            reader, writer = await asyncio.open_connection("127.0.0.1", echo_port)
            payload = bytes([i]) * (200_000 + i)
            writer.write(payload)
            got = await asyncio.wait_for(reader.readexactly(len(payload)), 60)
            writer.close()
            return got == payload
        got_n, sha = await asyncio.to_thread(download, source_port, 1_000_000 + i)
        return (got_n, sha) == (1_000_000 + i, pattern_sha256(1_000_000 + i))

    async def run_all() -> list[bool]:
        return list(await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), 120))

    results = asyncio.run(run_all())
    assert all(results), results
    assert pf.proc.poll() is None, pf.output()


def test_service_and_deployment_targets_with_named_ports(
    cluster: tuple[ServeInstance, Targets, int],
    kubectl_port_forward: Callable[..., KubectlPortForward],
) -> None:
    s, t, _ = cluster
    # svc: port name "up" -> targetPort "sink" (a container port name); port 81 -> int targetPort.
    pf = kubectl_port_forward("1.33", s.kubeconfig, "svc/web", ":up", ":81")
    assert [remote for address, _, remote in pf.forwards if address == "127.0.0.1"] == [
        t.sink,
        t.source,
    ]
    assert upload(pf.local_port(t.sink), 1 << 20) == f"{1 << 20} {pattern_sha256(1 << 20)}"
    assert download(pf.local_port(t.source), 1 << 20) == (1 << 20, pattern_sha256(1 << 20))
    # deploy: selector with matchExpressions; pod named port; the Pending pod must not win.
    pf2 = kubectl_port_forward("1.29", s.kubeconfig, "deploy/web", ":source", ":echo")
    assert download(pf2.local_port(t.source), 1 << 20) == (1 << 20, pattern_sha256(1 << 20))
    assert _echo(pf2.local_port(t.echo), b"x" * 5000) == b"x" * 5000


@pytest.mark.parametrize("version", ["1.29", "1.33"])
def test_pending_pod_error(
    cluster: tuple[ServeInstance, Targets, int],
    kubectl_port_forward: Callable[..., KubectlPortForward],
    version: str,
) -> None:
    s, _, _ = cluster
    pf = kubectl_port_forward(version, s.kubeconfig, "pod/pending", "5000", wait=False)
    assert pf.wait_exit(30) == 1
    assert (
        "error: unable to forward port because pod is not running. Current status=Pending"
        in pf.stderr
    )


@pytest.mark.parametrize(("version", "ws"), [("1.29", None), ("1.33", None), ("1.33", "false")])
def test_refused_pod_port(
    cluster: tuple[ServeInstance, Targets, int],
    kubectl_port_forward: Callable[..., KubectlPortForward],
    version: str,
    ws: str | None,
) -> None:
    s, _, refused = cluster
    pf = kubectl_port_forward(version, s.kubeconfig, "pod/refused", f":{refused}", env=_env(ws))
    local = pf.local_port(refused)
    with socket.create_connection(("127.0.0.1", local), timeout=30) as sock:
        sock.settimeout(30)
        with pytest.raises(OSError):  # closed without data, or reset
            if sock.recv(1) == b"":
                raise ConnectionResetError
    assert pf.wait_exit(30) == 1
    errors = "\n".join(pf.stderr)
    assert re.search(r"^E\d{4} .*an error occurred forwarding", errors, re.M | re.I), errors
    assert f"{refused}" in errors and "connection refused" in errors
    assert pf.stderr[-1] == "error: lost connection to pod", errors


def test_silent_errors_keep_session(
    serve_factory: Callable[..., ServeInstance],
    targets_factory: Callable[[str], Targets],
    kubectl_port_forward: Callable[..., KubectlPortForward],
) -> None:
    """--silent-errors: a refused pod port resets only that connection; the session lives."""
    t = targets_factory(POD_HOST)
    refused = free_port(POD_HOST)
    s = serve_factory(
        "--silent-errors",
        manifest=MANIFEST.format(
            host=POD_HOST, sink=t.sink, source=t.source, echo=t.echo, refused=refused
        ),
    )
    pf = kubectl_port_forward("1.33", s.kubeconfig, "pod/web-0", f":{refused}", f":{t.echo}")
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", pf.local_port(refused)), timeout=30) as sock:
            sock.settimeout(30)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1) == b""
    assert _echo(pf.local_port(t.echo), b"still here") == b"still here"
    assert pf.proc.poll() is None, pf.output()
    assert "an error occurred forwarding" not in pf.output()


SMOKE = [(v, None) for v in KUBECTL_VERSIONS] + [("1.30", "true")]


@pytest.mark.parametrize(("version", "ws"), SMOKE, ids=[f"{v}-{w or 'default'}" for v, w in SMOKE])
def test_smoke_every_kubectl(
    cluster: tuple[ServeInstance, Targets, int],
    kubectl_port_forward: Callable[..., KubectlPortForward],
    version: str,
    ws: str | None,
) -> None:
    """Every kubectl with its default transport (1.27-1.30 SPDY, 1.31+ WebSocket tunnel), and
    1.30 with the WebSocket opt-in."""
    s, t, _ = cluster
    pf = kubectl_port_forward(
        version,
        s.kubeconfig,
        "pod/web-0",
        f":{t.sink}",
        f":{t.source}",
        env=_env(ws),
        args=("-v=6",),
    )
    expected = "websocket" if ws == "true" or version >= "1.31" else "spdy"
    assert _transport_used(pf) == expected
    n = 4 << 20
    assert upload(pf.local_port(t.sink), n) == f"{n} {pattern_sha256(n)}"
    assert download(pf.local_port(t.source), n) == (n, pattern_sha256(n))


def test_kubectl_137_spdy_fallback_setting(
    cluster: tuple[ServeInstance, Targets, int],
    kubectl_port_forward: Callable[..., KubectlPortForward],
) -> None:
    s, t, _ = cluster
    for ws, transport in ((None, "websocket"), ("false", "spdy")):
        pf = kubectl_port_forward(
            "1.37", s.kubeconfig, "svc/web", ":down", env=_env(ws), args=("-v=6",)
        )
        assert _transport_used(pf) == transport
        assert download(pf.local_port(t.source), 8 << 20) == (8 << 20, pattern_sha256(8 << 20))
        pf.stop()


def test_garbage_after_upgrade_does_not_disturb_others(
    cluster: tuple[ServeInstance, Targets, int],
    kubectl_port_forward: Callable[..., KubectlPortForward],
) -> None:
    s, t, _ = cluster
    pf = kubectl_port_forward("1.33", s.kubeconfig, "pod/web-0", f":{t.source}", f":{t.echo}")
    ctx = s.ssl_context()
    assert ctx is not None

    def garbage(kind: str) -> bytes:
        with (
            socket.create_connection(("127.0.0.1", s.port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            if kind == "spdy":
                head = (
                    "POST /api/v1/namespaces/default/pods/web-0/portforward HTTP/1.1\r\nHost: x\r\n"
                    "Content-Length: 0\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                    "X-Stream-Protocol-Version: portforward.k8s.io\r\n"
                )
            else:
                head = (
                    "GET /api/v1/namespaces/default/pods/web-0/portforward?ports=1 HTTP/1.1\r\nHost: x\r\n"
                    "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io\r\n"
                )
            head += f"Authorization: Bearer {s.token}\r\n\r\n"
            tls.sendall(
                head.encode() + b"\x80\x03\x00\x63\xff\xff\xff\xff" + bytes(range(256)) * 64
            )
            got = b""
            for _ in range(100):  # read until the server closes (bounded)
                try:
                    chunk = tls.recv(65536)
                except (ssl.SSLError, OSError):
                    break
                if not chunk:
                    break
                got += chunk
            return got

    with ThreadPoolExecutor(3) as pool:
        bulk = pool.submit(download, pf.local_port(t.source), 16 << 20)
        replies = [pool.submit(garbage, kind).result(30) for kind in ("spdy", "ws", "spdy", "ws")]
        assert bulk.result(60) == (16 << 20, pattern_sha256(16 << 20))
    for reply in replies:
        assert reply.startswith(b"HTTP/1.1 101 "), reply[:200]
    assert _echo(pf.local_port(t.echo), b"after garbage") == b"after garbage"
    assert pf.proc.poll() is None and s.process.poll() is None
    assert s.get("/api")[0] == 200


def test_python_kubernetes_client(cluster: tuple[ServeInstance, Targets, int]) -> None:
    try:
        import kubernetes
        from kubernetes.stream import portforward
    except ImportError:  # a peer like kubectl: skipped locally, a failure in CI
        require_peer(None, "Python kubernetes client")
        return

    s, t, _ = cluster
    api_client = kubernetes.config.new_client_from_config(config_file=str(s.kubeconfig))
    try:
        core = kubernetes.client.CoreV1Api(api_client)
        pod = core.read_namespaced_pod("web-0", "default")
        assert pod.status is not None and pod.status.phase == "Running"
        assert pod.status.container_statuses and pod.status.container_statuses[0].ready
        listed = core.list_namespaced_pod("default", label_selector="app=web").items
        assert [p.metadata.name if p.metadata else None for p in listed] == ["web-0", "web-pending"]
        pf = portforward(
            core.connect_get_namespaced_pod_portforward,
            "web-0",
            "default",
            ports=f"{t.sink},{t.source}",
        )
        try:
            n = 8 << 20
            sink = pf.socket(t.sink)
            sink.settimeout(60)
            sink.sendall(f"{n}\n".encode())
            from tests.support.patterns import pattern_bytes

            for chunk in pattern_bytes(n):
                sink.sendall(chunk)
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = sink.recv(1024)
                assert chunk, reply
                reply += chunk
            assert reply.decode().strip() == f"{n} {pattern_sha256(n)}"
            source = pf.socket(t.source)
            source.settimeout(60)
            source.sendall(f"{n}\n".encode())
            import hashlib

            h = hashlib.sha256()
            got = 0
            while got < n:
                chunk = source.recv(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
                got += len(chunk)
            assert (got, h.hexdigest()) == (n, pattern_sha256(n))
            assert pf.error(t.sink) is None and pf.error(t.source) is None
        finally:
            pf.close()
    finally:
        api_client.close()


def test_engine_present() -> None:
    """The interop above needs the engine; its absence is a failure, not a skip."""
    from fastpf.transport import kubelet

    assert callable(kubelet.accept_portforward) and callable(kubelet.shutdown_all)


def _raw_upgrade(s: ServeInstance, path: str, kind: str = "spdy", extra: str = "") -> bytes:
    """Send one upgrade request on a fresh TLS connection; return the response head."""
    ctx = s.ssl_context()
    assert ctx is not None
    if kind == "spdy":
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: Upgrade\r\n"
            "Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n"
        )
    else:
        head = (
            f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Protocol: {kind}\r\n"
        )
    head += extra + f"Authorization: Bearer {s.token}\r\n\r\n"
    with (
        socket.create_connection(("127.0.0.1", s.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(head.encode())
        got = b""
        for _ in range(50):  # bounded: until the end of the head
            chunk = tls.recv(4096)
            if not chunk:
                break
            got += chunk
            if b"\r\n\r\n" in got:
                break
        return got


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/namespaces/default/pods/web-0/portforward",
        "/portForward/default/web-0",
        "/api/v1beta1/proxy/minions/node-1/portForward/default/web-0",
        "/api/v1beta3/proxy/nodes/node-1/portForward/default/web-0",
    ],
)
def test_upgrade_paths_reach_engine(cluster: tuple[ServeInstance, Targets, int], path: str) -> None:
    s, _, _ = cluster
    head = _raw_upgrade(s, path)
    assert head.startswith(b"HTTP/1.1 101 "), head
    assert b"portforward.k8s.io" in head
    missing = _raw_upgrade(s, path.replace("web-0", "nosuch"))
    assert missing.startswith(b"HTTP/1.1 404 "), missing
    ws = _raw_upgrade(s, path + "?ports=80", kind="v4.channel.k8s.io")
    assert ws.startswith(b"HTTP/1.1 101 ") and b"v4.channel.k8s.io" in ws, ws


def test_engine_refusals_pass_through(cluster: tuple[ServeInstance, Targets, int]) -> None:
    """Negotiation failures are the engine's answers (kubelet texts), not ours."""
    s, _, _ = cluster
    path = "/api/v1/namespaces/default/pods/web-0/portforward"
    no_ports = _raw_upgrade(s, path, kind="v4.channel.k8s.io")
    assert no_ports.startswith(b"HTTP/1.1 400 "), no_ports
    bad_version = _raw_upgrade(s, path, extra="X-Stream-Protocol-Version: v9.nope\r\n")
    assert bad_version.split(b"\r\n")[0].split()[1] in (b"101", b"403"), bad_version


def test_sigterm_ends_kubectl_sessions(
    cluster: tuple[ServeInstance, Targets, int],
    kubectl_port_forward: Callable[..., KubectlPortForward],
) -> None:
    s, t, _ = cluster
    spdy = kubectl_port_forward("1.33", s.kubeconfig, "pod/web-0", f":{t.echo}", env=_env("false"))
    ws = kubectl_port_forward("1.33", s.kubeconfig, "pod/web-0", f":{t.echo}")
    assert (
        _echo(spdy.local_port(t.echo), b"a") == b"a" and _echo(ws.local_port(t.echo), b"b") == b"b"
    )
    assert s.stop() == 0
    assert spdy.wait_exit(15) == 1 and ws.wait_exit(15) == 1
    assert (
        "error: lost connection to pod" in spdy.stderr
        and "error: lost connection to pod" in ws.stderr
    )
    assert "Traceback" not in s.stderr_text()


def test_idle_timeout_reaches_engine(
    serve_factory: Callable[..., ServeInstance],
    targets_factory: Callable[[str], Targets],
    kubectl_port_forward: Callable[..., KubectlPortForward],
) -> None:
    """--idle-timeout 1: a SPDY session without traffic (kubectl pings every 5 s) is closed."""
    t = targets_factory(POD_HOST)
    s = serve_factory(
        "--idle-timeout",
        "1",
        manifest=MANIFEST.format(
            host=POD_HOST, sink=t.sink, source=t.source, echo=t.echo, refused=free_port(POD_HOST)
        ),
    )
    pf = kubectl_port_forward("1.29", s.kubeconfig, "pod/web-0", f":{t.echo}")
    assert pf.wait_exit(20) == 1
    assert "error: lost connection to pod" in pf.stderr


# kubectl <= 1.31 stops reading a data stream once it sent FIN on it, and its spdystream
# worker then blocks the whole session; the server bounds what it relays after that FIN
# (containerd-like linger, fastpf.transport.kubelet), which this test holds it to.
def test_aborted_download_does_not_stall_kubectl_129_session(
    cluster: tuple[ServeInstance, Targets, int],
    kubectl_port_forward: Callable[..., KubectlPortForward],
) -> None:
    s, t, _ = cluster
    pf = kubectl_port_forward("1.29", s.kubeconfig, "pod/web-0", f":{t.source}", f":{t.echo}")
    with socket.create_connection(("127.0.0.1", pf.local_port(t.source)), timeout=10) as sock:
        sock.sendall(f"{256 << 20}\n".encode())
        got = 0
        while got < 4 << 20:  # read a little of a big download, then hang up with data unread
            chunk = sock.recv(1 << 20)
            assert chunk
            got += len(chunk)
    time.sleep(1.5)
    with socket.create_connection(("127.0.0.1", pf.local_port(t.echo)), timeout=8) as sock:
        sock.settimeout(8)
        sock.sendall(b"next")
        assert sock.recv(10) == b"next"
