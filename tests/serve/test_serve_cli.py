"""`fastpf serve` as a process: kubeconfig, TLS + ALPN (h2 and HTTP/1.1), auth, REST, watch,
bad input, signals. Real kubectl is used for REST here; port-forward interop is in
tests/interop/test_serve_interop.py."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
import yaml

from tests.support.kubectl import run_kubectl
from tests.support.processes import fd_count, rss_kib, stop_process, subprocess_env
from tests.support.serve_process import ServeInstance, start_serve
from tests.support.targets import Targets, free_port

MANIFEST = """
apiVersion: v1
kind: Pod
metadata: {name: web-1, labels: {app: web}}
spec: {containers: [{name: main, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}]}
"""


def _serve_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fastpf", "serve", *args]


def _run_serve(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _serve_cmd(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(),
        stdin=subprocess.DEVNULL,
    )


def _one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


# ---- start-up, kubeconfig ----------------------------------------------------------------------
def test_kubeconfig_and_serving_line(serve: ServeInstance) -> None:
    cfg = serve.config
    assert cfg["current-context"] == "fastpf"
    ctx = {c["name"]: c["context"] for c in cfg["contexts"]}[cfg["current-context"]]
    assert ctx["namespace"] == "default"
    assert serve.url == f"https://127.0.0.1:{serve.port}" and serve.port != 0
    assert serve.ca_file is not None and len(serve.token) >= 32
    assert stat.S_IMODE(os.stat(serve.kubeconfig).st_mode) == 0o600
    assert not [p for p in serve.kubeconfig.parent.iterdir() if p.name.endswith(".tmp")]
    out = serve.stdout_text()
    assert out.strip() == f"Serving Kubernetes API on {serve.url} (kubeconfig: {serve.kubeconfig})"
    assert serve.token not in out + serve.stderr_text()
    # The CA in the kubeconfig verifies the server for 127.0.0.1 (hostname check on).
    status, body = serve.get_json("/api")
    assert status == 200 and body["kind"] == "APIVersions"


def test_localhost_name_verifies(serve: ServeInstance) -> None:
    ctx = serve.ssl_context()
    assert ctx is not None
    with (
        socket.create_connection(("127.0.0.1", serve.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_generated_tokens_differ(serve_factory: Callable[..., ServeInstance]) -> None:
    a, b = serve_factory(), serve_factory()
    assert a.token != b.token and a.port != b.port


def test_given_token_and_no_tls(serve_factory: Callable[..., ServeInstance]) -> None:
    s = serve_factory("--token", "s3cret-token", tls=False)
    assert s.url.startswith("http://") and s.ca_file is None and s.token == "s3cret-token"
    assert "certificate-authority-data" not in s.config["clusters"][0]["cluster"]
    assert s.get("/api")[0] == 200
    assert s.get("/api", token="other")[0] == 401
    assert "s3cret-token" not in s.stdout_text() + s.stderr_text()


def test_default_kubeconfig_is_temporary(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        _serve_cmd("--listen", "127.0.0.1:0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=subprocess_env(),
        stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith("Serving Kubernetes API on https://127.0.0.1:"), line
        path = Path(line.rsplit("(kubeconfig: ", 1)[1].rstrip(")\n"))
        assert path.is_file()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(15) == 0
    assert not path.exists()


# ---- auth --------------------------------------------------------------------------------------
@pytest.mark.parametrize("token", [None, "wrong"])
def test_401_without_valid_token(serve: ServeInstance, token: str | None) -> None:
    for path in (
        "/api",
        "/api/v1/namespaces/default/pods/x",
        "/api/v1/namespaces/default/pods/x/portforward",
        "/portForward/default/x",
        "/version",
    ):
        status, headers, body = serve.get(path, token=token)
        assert status == 401, path
        assert headers["content-type"] == "application/json"
        doc = json.loads(body)
        assert doc["kind"] == "Status" and doc["reason"] == "Unauthorized" and doc["code"] == 401


# ---- REST --------------------------------------------------------------------------------------
def test_rest_json_whatever_accept(serve_factory: Callable[..., ServeInstance]) -> None:
    s = serve_factory(manifest=MANIFEST)
    accept = "application/vnd.kubernetes.protobuf,application/json"
    status, headers, body = s.get(
        "/api/v1/namespaces/default/pods/web-1", headers={"Accept": accept}
    )
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body)["metadata"]["name"] == "web-1"
    aggregated = (
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    )
    status, body_json = s.get_json("/apis", headers={"Accept": aggregated})
    assert status == 200 and body_json["kind"] == "APIGroupList"
    status, body_json = s.get_json("/api/v1/namespaces/default/pods/nosuch")
    assert status == 404 and body_json["message"] == 'pods "nosuch" not found'
    status, body_json = s.get_json("/api/v1/namespaces/default/pods/web-1/portforward-typo")
    assert status == 404
    status, body_json = s.get_json(
        "/api/v1/namespaces/default/pods/nosuch/portforward",
        method="POST",
        headers={
            "Connection": "Upgrade",
            "Upgrade": "SPDY/3.1",
            "X-Stream-Protocol-Version": "portforward.k8s.io",
        },
    )
    assert status == 404 and body_json["message"] == 'pods "nosuch" not found'


def test_watch_streams_added_events_then_ends(serve_factory: Callable[..., ServeInstance]) -> None:
    s = serve_factory(manifest=MANIFEST)
    conn = s.connection()
    try:
        started = time.monotonic()
        conn.request(
            "GET",
            "/api/v1/namespaces/default/pods?watch=true&labelSelector=app%3Dweb&timeoutSeconds=1",
            headers={"Authorization": f"Bearer {s.token}"},
        )
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Transfer-Encoding") == "chunked"
        first = json.loads(resp.readline())
        assert first["type"] == "ADDED" and first["object"]["metadata"]["name"] == "web-1"
        assert resp.read() == b""  # ends at timeoutSeconds
        assert time.monotonic() - started >= 0.9
        # keep-alive: the same connection serves the next request
        conn.request("GET", "/version", headers={"Authorization": f"Bearer {s.token}"})
        assert conn.getresponse().status == 200
    finally:
        conn.close()


@pytest.mark.parametrize("version", ["1.27", "1.33", "1.37"])
def test_kubectl_rest(
    serve_factory: Callable[..., ServeInstance],
    kubectl_bin: Callable[[str], str],
    tmp_path: Path,
    version: str,
) -> None:
    """kubectl does discovery over HTTP/2 (ALPN) and reads our objects."""
    binary = kubectl_bin(version)
    s = serve_factory(manifest=MANIFEST)
    r = run_kubectl(binary, s.kubeconfig, tmp_path, "get", "pod", "web-1", "-o", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"]["phase"] == "Running"
    r = run_kubectl(
        binary,
        s.kubeconfig,
        tmp_path,
        "get",
        "svc/web",
        "-o",
        "jsonpath={.spec.ports[0].targetPort}",
    )
    assert r.returncode == 0 and r.stdout == "http", r.stderr
    r = run_kubectl(binary, s.kubeconfig, tmp_path, "get", "pod", "nosuch")
    assert r.returncode == 1 and 'pods "nosuch" not found' in r.stderr
    r = run_kubectl(binary, s.kubeconfig, tmp_path, "get", "deploy", "nosuch")
    assert r.returncode == 1 and 'deployments.apps "nosuch" not found' in r.stderr
    r = run_kubectl(binary, s.kubeconfig, tmp_path, "get", "--raw", "/version")
    assert r.returncode == 0 and json.loads(r.stdout)["major"] == "1"


# ---- HTTP/2 ------------------------------------------------------------------------------------
def _h2_get(
    sock: Any, paths: list[str], token: str, authority: str
) -> dict[int, tuple[int, bytes]]:
    """GET each path on its own stream; returns stream id -> (status, body)."""
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    streams: dict[int, tuple[int, bytes]] = {}
    for path in paths:
        sid = conn.get_next_available_stream_id()
        conn.send_headers(
            sid,
            [
                (":method", "GET"),
                (":path", path),
                (":scheme", "https"),
                (":authority", authority),
                ("authorization", f"Bearer {token}"),
            ],
            end_stream=True,
        )
        streams[sid] = (0, b"")
    sock.sendall(conn.data_to_send())
    done: set[int] = set()
    deadline = time.monotonic() + 10
    while len(done) < len(paths) and time.monotonic() < deadline:
        data = sock.recv(65536)
        if not data:
            break
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                status = int(dict(ev.headers)[b":status"])
                streams[ev.stream_id] = (status, b"")
            elif isinstance(ev, h2.events.DataReceived):
                status, body = streams[ev.stream_id]
                streams[ev.stream_id] = (status, body + ev.data)
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                done.add(ev.stream_id)
        sock.sendall(conn.data_to_send())
    assert len(done) == len(paths), streams
    return streams


def test_h2_via_alpn(serve: ServeInstance) -> None:
    ctx = serve.ssl_context(alpn=["h2", "http/1.1"])
    assert ctx is not None
    with (
        socket.create_connection(("127.0.0.1", serve.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2"
        paths = [
            "/api",
            "/apis/apps/v1",
            "/api/v1/namespaces/default/pods/x",
            "/api/v1/namespaces/default/pods/x/portforward",
        ]
        replies = list(_h2_get(tls, paths, serve.token, f"127.0.0.1:{serve.port}").values())
    assert replies[0][0] == 200 and json.loads(replies[0][1])["kind"] == "APIVersions"
    assert json.loads(replies[1][1])["groupVersion"] == "apps/v1"
    assert json.loads(replies[2][1])["metadata"]["name"] == "x"
    assert replies[3][0] == 400  # HTTP/2 cannot upgrade


def test_http11_via_alpn(serve: ServeInstance) -> None:
    ctx = serve.ssl_context(alpn=["http/1.1"])
    assert ctx is not None
    with (
        socket.create_connection(("127.0.0.1", serve.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.selected_alpn_protocol() == "http/1.1"
        tls.sendall(
            f"GET /version HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {serve.token}\r\n\r\n".encode()
        )
        assert tls.recv(100).startswith(b"HTTP/1.1 200 ")


def test_h2c_prior_knowledge_on_no_tls(serve_factory: Callable[..., ServeInstance]) -> None:
    s = serve_factory(tls=False)
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
        [(status, body)] = _h2_get(sock, ["/api/v1"], s.token, f"127.0.0.1:{s.port}").values()
    assert status == 200 and json.loads(body)["kind"] == "APIResourceList"


def test_malformed_http_gets_400_and_server_lives(serve: ServeInstance) -> None:
    ctx = serve.ssl_context()
    assert ctx is not None
    with (
        socket.create_connection(("127.0.0.1", serve.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"GARBAGE\x00\x01 nonsense\r\n\r\n")
        assert tls.recv(100).startswith(b"HTTP/1.1 400 ")
    with socket.create_connection(("127.0.0.1", serve.port), timeout=10) as raw:
        raw.sendall(b"\x16\x03\x01\x00\x05hello")  # broken TLS record
        raw.recv(100)
    assert serve.get("/api")[0] == 200
    assert serve.process.poll() is None


# ---- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("kind: Pod\nmetadata: {name: [x\n", "invalid YAML"),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x, annotations: {fastpf.io/address: 8.8.8.8}}\n",
            "not a loopback address",
        ),
        ("apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n", "unsupported kind 'Secret'"),
        # issue 9: each of these used to be accepted silently (serve started) or named None
        ("", "no objects in the manifest (it is empty)"),
        ("# nothing but a comment\n---\n---\n", "no objects in the manifest (it is empty)"),
        ("kind: Pod\nmetadata: {name: x}\n", "document 1: Pod has no apiVersion (want 'v1')"),
        ("apiVersion: v1\nmetadata: {name: x}\n", "document 1: missing 'kind'"),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {labels: {app: x}}\n",
            "document 1: Pod has no metadata.name",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [\n"
            "  {name: a, ports: [{name: http, containerPort: 80}]},\n"
            "  {name: b, ports: [{name: http, containerPort: 81}]}]}\n",
            "(Pod x): spec.containers[1].ports[0].name 'http' is already used by spec.containers[0].ports[0]",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: a, ports: [\n"
            "  {name: web, containerPort: 80}, {name: web, containerPort: 81}]}]}\n",
            "'web' is already used",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: a}, {name: a}]}\n",
            "spec.containers[1].name 'a' is already used by containers[0]",
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {selector: {matchLabels: {app: a}},"
            " template: {metadata: {labels: {app: b}}}}\n",
            "spec.selector does not match the template's labels",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: !!binary aGVsbG8=\n",
            "cannot be served as JSON",
        ),
        ("[" * 100 + "]" * 100, "nested deeper than 64 levels"),
    ],
)
def test_malformed_manifest_exits_with_one_line(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    out = tmp_path / "kc"
    result = _run_serve(
        "--listen", "127.0.0.1:0", "--kubeconfig-out", str(out), "-f", str(path), timeout=15
    )
    _one_line_error(result, str(path), needle)
    assert result.returncode == 1 and not out.exists()


def _billion_laughs(levels: int = 9) -> str:
    """The classic ~1 KB alias bomb (9 ** levels strings once expanded), inside a pod."""
    lines = [
        "apiVersion: v1",
        "kind: Pod",
        "metadata: {name: lol}",
        "x0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]",
    ]
    lines += [f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 9)}]" for i in range(1, levels)]
    lines.append(f"spec: {{containers: [{{name: c}}], bomb: *x{levels - 1}}}")
    return "\n".join(lines) + "\n"


def test_yaml_alias_bomb_is_refused_fast_with_bounded_memory(tmp_path: Path) -> None:
    """Before: the bomb loaded (aliases stay shared), serve started, and a GET of the pod
    expanded 9**9 strings on the event loop (3.8 GiB). Now start-up refuses it at once."""
    bomb = _billion_laughs()
    assert len(bomb) < 1200
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb)
    probe = tmp_path / "maxrss"
    # VmHWM (peak RSS of this process image): ru_maxrss would carry the forking pytest's over exec.
    code = (
        "import sys\n"
        "from fastpf.serve.main import main\n"
        "rc = main(sys.argv[1:])\n"
        "peak = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
        f"open({str(probe)!r}, 'w').write(peak)\n"
        "sys.exit(rc)\n"
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", code, "--listen", "127.0.0.1:0", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=subprocess_env(),
        stdin=subprocess.DEVNULL,
    )
    elapsed = time.monotonic() - started
    _one_line_error(result, str(path), "once aliases are expanded", "refusing to expand it")
    assert elapsed < 10, elapsed  # ~0.3 s here: the expansion is counted, never built
    assert int(probe.read_text()) < 200 * 1024, (
        probe.read_text()
    )  # KiB: the interpreter alone, no bomb


def test_sighup_with_alias_bomb_changes_nothing(
    serve_factory: Callable[..., ServeInstance],
) -> None:
    s = serve_factory(manifest="apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n")
    (s.kubeconfig.parent / "manifest.yaml").write_text(_billion_laughs())
    os.kill(s.process.pid, signal.SIGHUP)
    for _ in range(200):  # bounded
        if "reload failed" in s.stderr_text():
            break
        time.sleep(0.05)
    assert (
        "reload failed, objects unchanged" in s.stderr_text()
        and "refusing to expand it" in s.stderr_text()
    )
    assert s.get("/api/v1/namespaces/default/pods/a")[0] == 200 and s.process.poll() is None


def test_big_manifest_reload_keeps_serving(serve_factory: Callable[..., ServeInstance]) -> None:
    """SIGHUP with a 4,000-pod manifest: parsed in a worker thread, applied 100 objects per loop
    turn, so requests meanwhile are answered (before: no reload at all)."""
    s = serve_factory(manifest="apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n")
    big = "---\n".join(
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, labels: {{app: big}}}}\n"
        f"spec: {{containers: [{{name: main, ports: [{{name: http, containerPort: 8080}}]}}]}}\n"
        for i in range(4000)
    )
    (s.kubeconfig.parent / "manifest.yaml").write_text(big)
    conn = s.connection()
    try:
        os.kill(s.process.pid, signal.SIGHUP)
        worst = 0.0
        requests = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # bounded: the reload takes a few seconds
            started = time.monotonic()
            requests += 1
            conn.request("GET", "/version", headers={"Authorization": f"Bearer {s.token}"})
            assert conn.getresponse().read()
            worst = max(worst, time.monotonic() - started)
            if "reloaded" in s.stderr_text():
                break
        assert "4000 added, 0 changed, 1 deleted" in s.stderr_text(), s.stderr_text()[-500:]
        assert requests > 20  # answered all along
        # The whole reload takes seconds of CPU; no single request waited for it.
        assert worst < 1.0, worst
    finally:
        conn.close()
    status, body = s.get_json("/api/v1/namespaces/default/pods?labelSelector=app%3Dbig&limit=5")
    assert status == 200 and len(body["items"]) == 4000


@pytest.mark.parametrize(
    ("listen", "needle"),
    [
        ("nonsense", "expected HOST:PORT"),
        ("127.0.0.1:99999", "port must be a number"),
        ("127.0.0.1:http", "port must be a number"),
        ("[::1:0", "bad IPv6 address"),
    ],
)
def test_bad_listen(listen: str, needle: str) -> None:
    _one_line_error(_run_serve("--listen", listen), needle)


def test_non_loopback_without_token_refused() -> None:
    result = _run_serve("--listen", "0.0.0.0:0")
    _one_line_error(result, "refusing to serve on non-loopback address 0.0.0.0 without --token")
    assert result.returncode == 1


def test_busy_port(serve: ServeInstance, tmp_path: Path) -> None:
    result = _run_serve(
        "--listen", f"127.0.0.1:{serve.port}", "--kubeconfig-out", str(tmp_path / "kc")
    )
    _one_line_error(result, f"cannot listen on 127.0.0.1:{serve.port}", "address already in use")


def test_unknown_flag() -> None:
    _one_line_error(_run_serve("--bogus"), "unrecognized arguments: --bogus")


# ---- signals -----------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_zero(tmp_path: Path, sig: int) -> None:
    s = start_serve(tmp_path, manifest=MANIFEST)
    try:
        conn = s.connection()  # an open watch must not hold up the exit
        conn.request("GET", "/api/v1/pods?watch=1", headers={"Authorization": f"Bearer {s.token}"})
        assert conn.getresponse().status == 200
        started = time.monotonic()
        assert s.stop(sig) == 0
        assert time.monotonic() - started < 8
        conn.close()
    finally:
        s.stop(signal.SIGKILL)
    assert "Traceback" not in s.stderr_text()


def test_ssl_context_rejects_unknown_ca(serve: ServeInstance) -> None:
    ctx = ssl.create_default_context()
    with (
        socket.create_connection(("127.0.0.1", serve.port), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        ctx.wrap_socket(raw, server_hostname="127.0.0.1")


@pytest.mark.parametrize("version", ["1.33", "1.37"])
def test_kubectl_wait_uses_watch(
    serve_factory: Callable[..., ServeInstance],
    kubectl_bin: Callable[[str], str],
    tmp_path: Path,
    version: str,
) -> None:
    """`kubectl wait` lists + watches (1.37: WatchList with sendInitialEvents + bookmark)."""
    binary = kubectl_bin(version)
    s = serve_factory(manifest=MANIFEST)
    r = run_kubectl(
        binary,
        s.kubeconfig,
        tmp_path,
        "wait",
        "--for=condition=Ready",
        "pod",
        "-l",
        "app=web",
        "--timeout=20s",
    )
    assert r.returncode == 0 and "pod/web-1 condition met" in r.stdout, r.stderr


def test_kubectl_waits_for_pods_of_empty_service(
    serve_factory: Callable[..., ServeInstance], kubectl_bin: Callable[[str], str], tmp_path: Path
) -> None:
    """No pod matches: kubectl watches (our watch stays open) until --pod-running-timeout."""
    s = serve_factory(
        manifest=MANIFEST + "---\napiVersion: v1\nkind: Service\nmetadata: {name: empty}\n"
        "spec: {selector: {app: nothing}, ports: [{port: 80}]}\n"
    )
    started = time.monotonic()
    r = run_kubectl(
        kubectl_bin("1.33"),
        s.kubeconfig,
        tmp_path,
        "port-forward",
        "svc/empty",
        "80",
        "--pod-running-timeout=2s",
    )
    assert r.returncode == 1 and "error: timed out waiting for the condition" in r.stderr, r.stderr
    assert time.monotonic() - started >= 1.9


def test_no_tls_on_loopback_lets_kubectl_in(
    serve_factory: Callable[..., ServeInstance], kubectl_bin: Callable[[str], str], tmp_path: Path
) -> None:
    """client-go attaches credentials only to TLS transports, so `serve --no-tls` on loopback
    without --token admits requests that carry no Authorization header; a wrong token is still
    refused, and the Python client (which does send the token) works too."""
    s = serve_factory(tls=False)
    r = run_kubectl(kubectl_bin("1.33"), s.kubeconfig, tmp_path, "get", "--raw", "/api")
    assert r.returncode == 0 and '"versions"' in r.stdout, r.stderr
    assert s.get("/api", token="wrong")[0] == 401
    kubernetes = pytest.importorskip("kubernetes")
    api_client = kubernetes.config.new_client_from_config(config_file=str(s.kubeconfig))
    try:
        pod = kubernetes.client.CoreV1Api(api_client).read_namespaced_pod("x", "default")
        assert pod.status.phase == "Running"
    finally:
        api_client.close()


def test_no_tls_with_token_lets_kubectl_and_fastpf_in(
    serve_factory: Callable[..., ServeInstance],
    kubectl_bin: Callable[[str], str],
    targets: Targets,
    tmp_path: Path,
) -> None:
    """client-go and fastpf send no credentials over http://, so with --no-tls (loopback only)
    serve admits requests without a token even when --token is given, says so once at start,
    and still refuses a wrong token. Before, serve's own kubeconfig got 401 from both."""
    s = serve_factory("--token", "s3cret-token", tls=False)
    r = run_kubectl(kubectl_bin("1.33"), s.kubeconfig, tmp_path, "get", "--raw", "/api")
    assert r.returncode == 0 and '"versions"' in r.stdout, r.stderr
    assert s.get("/api", token="wrong")[0] == 401
    assert s.get("/api", token=None)[0] == 200 and s.get("/api")[0] == 200
    assert "requests without a token are admitted on this loopback address" in s.stderr_text()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fastpf",
            "--kubeconfig",
            str(s.kubeconfig),
            "pod/x",
            f":{targets.echo}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=subprocess_env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith("Forwarding from 127.0.0.1:"), (
            line,
            proc.stderr.read() if proc.stderr else "",
        )
        local = int(line.split(":")[1].split()[0])
        with socket.create_connection(("127.0.0.1", local), timeout=10) as sock:
            sock.sendall(b"over http\n")
            assert sock.recv(100) == b"over http\n"
    finally:
        stop_process(proc)
    assert "s3cret-token" not in s.stdout_text() + s.stderr_text()


def test_no_tls_off_loopback_refused() -> None:
    result = _run_serve("--listen", "0.0.0.0:0", "--no-tls", "--token", "s3cret-token")
    _one_line_error(
        result,
        "refusing --no-tls on non-loopback address 0.0.0.0",
        "kubectl and fastpf send no credentials over http://",
    )
    assert "s3cret-token" not in result.stdout + result.stderr


# ---- the README's first example against a bare `fastpf serve` ----------------------------------
def _bare_serve(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """`fastpf serve` with its own defaults (the fixtures pin --pod-address 127.0.0.1)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    kubeconfig = tmp_path / "kc"
    err = tmp_path / "serve.err"
    with open(err, "wb") as sink:
        proc = subprocess.Popen(
            _serve_cmd("--listen", "127.0.0.1:0", "--kubeconfig-out", str(kubeconfig), *args),
            stdout=subprocess.DEVNULL,
            stderr=sink,
            stdin=subprocess.DEVNULL,
            env=subprocess_env(),
        )
    for _ in range(600):  # bounded: 30 s
        if kubeconfig.exists() or proc.poll() is not None:
            break
        time.sleep(0.05)
    assert kubeconfig.exists(), err.read_text()
    return proc, kubeconfig, err


def test_first_example_does_not_forward_into_itself(tmp_path: Path) -> None:
    """`fastpf serve` + `fastpf mypod 5000`: pods used to dial 127.0.0.1:5000, the client's own
    listener, so one connection made 9,000 in 5 s (serve 44 -> 140 MB). Pods now live on
    127.0.0.2: the connection is refused with kubelet's text, serve stays flat, and a program
    on the pod address is reached with the very same command."""
    serve, kubeconfig, serve_err = _bare_serve(tmp_path)
    port = free_port()
    client = subprocess.Popen(
        [sys.executable, "-m", "fastpf", "--kubeconfig", str(kubeconfig), "mypod", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=subprocess_env(),
    )
    echo = None
    try:
        assert client.stdout is not None
        assert (
            client.stdout.readline().decode().strip()
            == f"Forwarding from 127.0.0.1:{port} -> {port}"
        )
        fds, rss = fd_count(serve.pid), rss_kib(serve.pid)
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.settimeout(10)  # a loop never answers: recv would time out
                with contextlib.suppress(ConnectionResetError):
                    assert sock.recv(100) == b""
        time.sleep(0.5)
        assert fd_count(serve.pid) < fds + 20, "serve holds connections that should be gone"
        assert rss_kib(serve.pid) < rss + 20 * 1024
        log = serve_err.read_text()
        # One session per upgraded connection of the client's pool (fastpf --connections).
        from fastpf.client.args import DEFAULT_CONNECTIONS

        started = '"Port-forward session started" pod="default/mypod" address="127.0.0.2"'
        assert log.count(started) == DEFAULT_CONNECTIONS
        assert f"dial tcp4 127.0.0.1:{port}: connect: connection refused" in log  # kubelet's words
        # The same command reaches a program listening on the pod address.
        echo = socket.create_server(("127.0.0.2", port))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"hi\n")
            peer, _ = echo.accept()
            with peer:
                assert peer.recv(10) == b"hi\n"
                peer.sendall(b"back\n")
            assert sock.recv(10) == b"back\n"
    finally:
        if echo is not None:
            echo.close()
        stop_process(client)
        assert stop_process(serve) == 0
    assert client.stderr is not None
    errors = client.stderr.read().decode()
    assert (
        "connection refused" in errors and errors.count("\n") >= 20
    )  # one line per refused connection


def test_pod_address_flag(tmp_path: Path) -> None:
    result = _run_serve("--listen", "127.0.0.1:0", "--pod-address", "10.1.2.3")
    _one_line_error(result, "--pod-address '10.1.2.3': must be a loopback address")


def test_tls_dir_keeps_the_ca_across_restarts(tmp_path: Path) -> None:
    """A test hook for reconnect tests (issue 12): serve killed and started again on the same
    port with the same --token and --tls-dir is trusted by the first run's kubeconfig."""
    tls_dir = tmp_path / "tls"
    first, kubeconfig, _ = _bare_serve(tmp_path / "a", "--token", "t0k", "--tls-dir", str(tls_dir))
    config = yaml.safe_load(kubeconfig.read_text())
    url = config["clusters"][0]["cluster"]["server"]
    port = int(url.rsplit(":", 1)[1])
    ca = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])
    assert (tls_dir / "ca.crt").read_bytes() == ca
    assert stat.S_IMODE((tls_dir / "ca.key").stat().st_mode) == 0o600
    stop_process(first, signal.SIGKILL)
    second, kubeconfig2, _ = _bare_serve(
        tmp_path / "b", "--listen", f"127.0.0.1:{port}", "--token", "t0k", "--tls-dir", str(tls_dir)
    )
    try:
        assert kubeconfig2.read_text() == kubeconfig.read_text()
        ctx = ssl.create_default_context(cadata=ca.decode())
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(
                b"GET /version HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0k\r\nConnection: close\r\n\r\n"
            )
            assert tls.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        assert stop_process(second) == 0
    (tls_dir / "ca.key").write_text("not a key")
    result = _run_serve("--listen", "127.0.0.1:0", "--tls-dir", str(tls_dir))
    _one_line_error(result, f"--tls-dir {tls_dir}: cannot read the CA")
