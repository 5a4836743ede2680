"""`fastpf serve` as a process: workloads with pods, and changing the cluster under running
forwards (issue 12's test hooks) with real kubectl, plain HTTP/1.1 and HTTP/2 watches, SIGHUP
reloads, and the fastpf client."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
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

from tests.support.kubectl import run_kubectl
from tests.support.processes import KubectlPortForward, stop_process, subprocess_env
from tests.support.serve_process import ServeInstance
from tests.support.targets import Targets

POD_HOST = "127.0.0.2"
SAFE = "[bcdfghjklmnpqrstvwxz2456789]"


def manifest(t: Targets) -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: main, ports: [{{name: echo, containerPort: {t.echo}}}]}}]}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: db}}}}
  template: {{metadata: {{labels: {{app: db}}}}}}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {{name: solo}}
spec:
  selector: {{matchLabels: {{app: solo}}}}
  template: {{metadata: {{labels: {{app: solo}}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec: {{selector: {{app: web}}, ports: [{{name: echo, port: 80, targetPort: echo}}]}}
"""


@pytest.fixture
def world(
    serve_factory: Callable[..., ServeInstance], targets_factory: Callable[[str], Targets]
) -> tuple[ServeInstance, Targets]:
    t = targets_factory(POD_HOST)
    return serve_factory("--pod-address", POD_HOST, manifest=manifest(t)), t


def _kubectl(
    binary: str, s: ServeInstance, cache: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    return run_kubectl(binary, s.kubeconfig, cache, *args, timeout=60)


def _request(
    s: ServeInstance,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = "application/json",
) -> tuple[int, Any]:
    conn = s.connection()
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(
            method,
            path,
            body=data,
            headers={"Authorization": f"Bearer {s.token}", "Content-Type": content_type},
        )
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def _echo_through(port: int, payload: bytes = b"ping\n") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
        return got


# ---- kubectl sees a cluster ------------------------------------------------------------------------
def test_kubectl_lists_workload_pods_and_changes_them(
    world: tuple[ServeInstance, Targets], kubectl_bin: Callable[[str], str], tmp_path: Path
) -> None:
    s, _ = world
    k = kubectl_bin("1.33")
    r = _kubectl(k, s, tmp_path, "get", "pods", "-l", "app=web", "-o", "name")
    assert r.returncode == 0, r.stderr
    names = [line.removeprefix("pod/") for line in r.stdout.split()]
    assert len(names) == 2 and all(
        re.fullmatch(f"web-{SAFE}{{10}}-{SAFE}{{5}}", n) for n in names
    ), names
    r = _kubectl(k, s, tmp_path, "get", "pods", "-l", "app=db", "-o", "name")
    assert r.stdout.split() == ["pod/db-0", "pod/db-1"], r.stderr
    r = _kubectl(
        k, s, tmp_path, "get", "pod", names[0], "-o", "jsonpath={.metadata.ownerReferences[0].kind}"
    )
    assert r.stdout == "ReplicaSet", r.stderr
    # delete: a new pod under a new name; scale; status patch; create.
    r = _kubectl(k, s, tmp_path, "delete", "pod", names[0])
    assert r.returncode == 0 and f'pod "{names[0]}" deleted' in r.stdout, r.stderr
    after = _kubectl(k, s, tmp_path, "get", "pods", "-l", "app=web", "-o", "name").stdout.split()
    assert len(after) == 2 and f"pod/{names[0]}" not in after and f"pod/{names[1]}" in after
    r = _kubectl(k, s, tmp_path, "scale", "deploy/web", "--replicas=4")
    assert r.returncode == 0 and "scaled" in r.stdout, r.stderr
    assert (
        len(_kubectl(k, s, tmp_path, "get", "pods", "-l", "app=web", "-o", "name").stdout.split())
        == 4
    )
    r = _kubectl(
        k,
        s,
        tmp_path,
        "patch",
        "pod",
        "db-1",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"phase":"Pending"}}',
    )
    assert r.returncode == 0, r.stderr
    assert (
        _kubectl(k, s, tmp_path, "get", "pod", "db-1", "-o", "jsonpath={.status.phase}").stdout
        == "Pending"
    )
    pod = tmp_path / "pod.yaml"
    pod.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: extra, labels: {app: web}}\n")
    # kubectl's default --validate=strict reads OpenAPI v3 (1.29+); 1.27/1.28 need --validate=false.
    r = _kubectl(k, s, tmp_path, "create", "-f", str(pod))
    assert r.returncode == 0 and "pod/extra created" in r.stdout, r.stderr
    r = _kubectl(k, s, tmp_path, "create", "-f", str(pod))
    assert r.returncode == 1 and 'pods "extra" already exists' in r.stderr
    pod.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: extra, labels: {app: web, tier: changed}}\n"
    )
    r = _kubectl(k, s, tmp_path, "apply", "-f", str(pod))
    assert r.returncode == 0 and "pod/extra configured" in r.stdout, r.stderr
    assert (
        _kubectl(
            k, s, tmp_path, "get", "pod", "extra", "-o", "jsonpath={.metadata.labels.tier}"
        ).stdout
        == "changed"
    )
    r = _kubectl(k, s, tmp_path, "delete", "pod", "extra", "--grace-period=1")
    assert r.returncode == 0, r.stderr
    r = _kubectl(k, s, tmp_path, "rollout", "status", "deploy/web", "--timeout=10s")
    assert r.returncode == 0 and "successfully rolled out" in r.stdout, r.stderr


@pytest.mark.parametrize("target", ["svc/web", "deploy/web", "rs/solo", "sts/db", "pod/db-1"])
def test_workload_targets_forward_with_kubectl_and_fastpf(
    world: tuple[ServeInstance, Targets], target: str, kubectl_port_forward: Callable[..., Any]
) -> None:
    s, t = world
    remote = "80" if target == "svc/web" else str(t.echo)
    pf = kubectl_port_forward("1.33", s.kubeconfig, target, f":{remote}")
    assert (
        _echo_through(pf.local_port(t.echo)) == b"ping\n"
    )  # a service port is shown as its targetPort
    pf.stop()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastpf", "--kubeconfig", str(s.kubeconfig), target, f":{remote}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=subprocess_env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        m = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)", line)
        assert m and m.group(2) == str(t.echo), (
            line,
            proc.stderr.read() if proc.stderr and proc.poll() is not None else "",
        )
        assert _echo_through(int(m.group(1)), b"hello fastpf\n") == b"hello fastpf\n"
    finally:
        stop_process(proc)


# ---- live watch events -------------------------------------------------------------------------------
def _read_events(resp: Any, count: int) -> list[tuple[str, str]]:
    events = []
    for _ in range(count):
        line = resp.readline()
        if not line:
            break
        doc = json.loads(line)
        events.append((doc["type"], doc["object"]["metadata"]["name"]))
    return events


def test_http1_watch_streams_changes(world: tuple[ServeInstance, Targets]) -> None:
    s, _ = world
    status, pods = _request(s, "GET", "/api/v1/namespaces/default/pods?labelSelector=app%3Ddb")
    rv = pods["metadata"]["resourceVersion"]
    conn = s.connection(timeout=10)
    try:
        conn.request(
            "GET",
            f"/api/v1/namespaces/default/pods?watch=true&labelSelector=app%3Ddb&resourceVersion={rv}"
            "&timeoutSeconds=20",
            headers={"Authorization": f"Bearer {s.token}"},
        )
        resp = conn.getresponse()
        assert resp.status == 200
        assert (
            _request(
                s,
                "PATCH",
                "/api/v1/namespaces/default/pods/db-0/status",
                {"status": {"phase": "Failed"}},
                "application/merge-patch+json",
            )[0]
            == 200
        )
        assert _request(s, "DELETE", "/api/v1/namespaces/default/pods/db-1")[0] == 200
        assert _read_events(resp, 3) == [
            ("MODIFIED", "db-0"),
            ("DELETED", "db-1"),
            ("ADDED", "db-1"),
        ]
    finally:
        conn.close()


def test_http2_watch_streams_changes(world: tuple[ServeInstance, Targets]) -> None:
    s, _ = world
    ctx = s.ssl_context(alpn=["h2"])
    assert ctx is not None
    with (
        socket.create_connection(("127.0.0.1", s.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(
            1,
            [
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", f"127.0.0.1:{s.port}"),
                (
                    ":path",
                    "/api/v1/namespaces/default/pods?watch=1&fieldSelector=metadata.name%3Ddb-0",
                ),
                ("authorization", f"Bearer {s.token}"),
            ],
            end_stream=True,
        )
        tls.sendall(conn.data_to_send())
        body = b""
        deleted = False
        deadline = time.monotonic() + 15
        while body.count(b"\n") < 3 and time.monotonic() < deadline:
            if body.count(b"\n") == 1 and not deleted:
                deleted = _request(s, "DELETE", "/api/v1/namespaces/default/pods/db-0")[0] == 200
            tls.settimeout(max(0.1, deadline - time.monotonic()))
            data = tls.recv(65536)
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            tls.sendall(conn.data_to_send())
    events = [json.loads(line)["type"] for line in body.splitlines()]
    assert events == ["ADDED", "DELETED", "ADDED"], body[:500]


# ---- SIGHUP --------------------------------------------------------------------------------------------
def test_sighup_reloads_manifests(serve_factory: Callable[..., ServeInstance]) -> None:
    s = serve_factory(manifest="apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n")
    path = s.kubeconfig.parent / "manifest.yaml"
    assert _request(s, "GET", "/api/v1/namespaces/default/pods/a")[0] == 200
    path.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: b}\n")
    os.kill(s.process.pid, signal.SIGHUP)
    for _ in range(100):  # bounded: the reload runs in a worker thread
        if _request(s, "GET", "/api/v1/namespaces/default/pods/b")[0] == 200:
            break
        time.sleep(0.05)
    assert _request(s, "GET", "/api/v1/namespaces/default/pods/b")[0] == 200
    assert _request(s, "GET", "/api/v1/namespaces/default/pods/a")[0] == 404
    path.write_text("apiVersion: v1\nkind: Pod\nmetadata: {}\n")
    os.kill(s.process.pid, signal.SIGHUP)
    for _ in range(100):
        if "reload failed" in s.stderr_text():
            break
        time.sleep(0.05)
    assert (
        "reload failed, objects unchanged" in s.stderr_text()
        and "has no metadata.name" in s.stderr_text()
    )
    assert _request(s, "GET", "/api/v1/namespaces/default/pods/b")[0] == 200
    assert s.process.poll() is None and "Traceback" not in s.stderr_text()
    assert "reloaded" in s.stderr_text() and "1 added, 0 changed, 1 deleted" in s.stderr_text()


# ---- pods that go away end their sessions ---------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["websocket", "spdy", "ws-channel"])
def test_deleting_a_pod_ends_its_sessions(
    world: tuple[ServeInstance, Targets], protocol: str
) -> None:
    s, t = world
    # --reconnect=false: the session's end is what this test looks at (fastpf would reconnect,
    # tests/client/test_reconnect.py).
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fastpf",
            "--kubeconfig",
            str(s.kubeconfig),
            "--protocol",
            protocol,
            "--reconnect=false",
            "pod/db-0",
            f":{t.echo}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=subprocess_env(),
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        m = re.match(r"Forwarding from 127\.0\.0\.1:(\d+)", proc.stdout.readline().decode())
        assert m
        local = int(m.group(1))
        with socket.create_connection(("127.0.0.1", local), timeout=10) as live:
            live.sendall(b"before\n")
            assert live.recv(100) == b"before\n"
            assert _request(s, "DELETE", "/api/v1/namespaces/default/pods/db-0")[0] == 200
            if protocol == "ws-channel":
                # One session per connection: that connection ends.
                live.settimeout(10)
                assert live.recv(100) == b""
            else:
                # Without reconnect the client ends on the GOAWAY, as kubectl does.
                assert proc.wait(15) == 1
                assert "lost connection to pod" in proc.stderr.read().decode()
        for _ in range(100):  # bounded: the session end reaches serve's log
            if "Port-forward session ended" in s.stderr_text():
                break
            time.sleep(0.05)
        log = s.stderr_text()
        assert 'Pod deleted: ending its port-forward session" pod="default/db-0"' in log
        assert 'Port-forward session ended" pod="default/db-0"' in log
    finally:
        stop_process(proc)


# ---- kubectl get prints what a cluster prints ------------------------------------------------------------
def _table(text: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in text.strip().splitlines()]


@pytest.mark.parametrize("version", ["1.27", "1.33", "1.37"])
def test_kubectl_get_shows_server_side_columns(
    world: tuple[ServeInstance, Targets],
    version: str,
    kubectl_bin: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """kubectl asks for `as=Table`; before, serve sent plain lists and kubectl printed NAME AGE."""
    s, _ = world
    k = kubectl_bin(version)
    assert (
        _request(
            s,
            "PATCH",
            "/api/v1/namespaces/default/pods/db-1/status",
            {"status": {"phase": "Pending"}},
            "application/merge-patch+json",
        )[0]
        == 200
    )
    r = _kubectl(k, s, tmp_path, "get", "pods", "-l", "app=db")
    assert r.returncode == 0, r.stderr
    rows = _table(r.stdout)
    assert rows[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert rows[1][:4] == ["db-0", "1/1", "Running", "0"] and re.fullmatch(r"\d+s", rows[1][4])
    assert rows[2][:4] == ["db-1", "0/1", "ContainerCreating", "0"]
    r = _kubectl(k, s, tmp_path, "get", "pods", "db-0", "-o", "wide", "--show-labels")
    rows = _table(r.stdout)
    assert rows[0] == [
        "NAME",
        "READY",
        "STATUS",
        "RESTARTS",
        "AGE",
        "IP",
        "NODE",
        "NOMINATED NODE",
        "READINESS GATES",
        "LABELS",
    ], r.stdout
    assert (
        rows[1][5:7] == [POD_HOST, "fastpf"]
        and "statefulset.kubernetes.io/pod-name=db-0" in rows[1][9]
    )
    expected = {
        "svc": (
            ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"],
            ["web", "ClusterIP"],
            4,
            "80/TCP",
        ),
        "deploy": (
            ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
            ["web", "2/2", "2", "2"],
            None,
            None,
        ),
        "rs": (["NAME", "DESIRED", "CURRENT", "READY", "AGE"], ["solo", "1", "1", "1"], None, None),
        "sts": (["NAME", "READY", "AGE"], ["db", "1/2"], None, None),
    }
    for kind, (header, first, column, value) in expected.items():
        r = _kubectl(k, s, tmp_path, "get", kind, *(["solo"] if kind == "rs" else []))
        rows = _table(r.stdout)
        assert rows[0] == header, (kind, r.stdout, r.stderr)
        assert rows[1][: len(first)] == first, (kind, r.stdout)
        if column is not None:
            assert rows[1][column] == value
    r = _kubectl(k, s, tmp_path, "get", "ns", "default")
    assert _table(r.stdout)[0] == ["NAME", "STATUS", "AGE"] and _table(r.stdout)[1][:2] == [
        "default",
        "Active",
    ]


# ---- serve's log -------------------------------------------------------------------------------------------
def test_default_log_has_sessions_and_failed_dials_not_requests(
    serve_factory: Callable[..., ServeInstance],
    kubectl_port_forward: Callable[..., Any],
    targets: Targets,
) -> None:
    """Before, serve logged its first line only, even after hundreds of sessions and failed dials."""
    s = serve_factory()
    pf = kubectl_port_forward("1.33", s.kubeconfig, "pod/mypod", f":{targets.echo}")
    assert _echo_through(pf.local_port(targets.echo)) == b"ping\n"
    pf.stop()
    closed = _free_port()
    pf = kubectl_port_forward("1.33", s.kubeconfig, "pod/other", f":{closed}")
    with socket.create_connection(("127.0.0.1", pf.local_port(closed)), timeout=10) as sock:
        sock.settimeout(10)
        assert sock.recv(10) == b""
    pf.wait_exit(20)  # kubectl ends its session on error text
    for _ in range(100):  # bounded: the end line follows the close
        if s.stderr_text().count("Port-forward session ended") >= 2:
            break
        time.sleep(0.05)
    log = s.stderr_text()
    lines = log.splitlines()
    started = [line for line in lines if '"Port-forward session started"' in line]
    assert (
        len(started) == 2
        and 'pod="default/mypod"' in started[0]
        and 'protocol="websocket"' in started[0]
    )
    assert re.match(r"^I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ sessions\.py:\d+\] ", started[0]), started[
        0
    ]
    assert 'peer="127.0.0.1:' in started[0] and 'userAgent="kubectl' in started[0]
    ended = [line for line in lines if '"Port-forward session ended"' in line]
    assert len(ended) == 2 and re.search(r'duration="\d+\.\d{3}s"', ended[0])
    assert [
        line
        for line in lines
        if f"dial tcp4 127.0.0.1:{closed}: connect: connection refused" in line
    ]
    assert "HTTP verb=" not in log


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_verbose_log_never_shows_the_token(
    serve_factory: Callable[..., ServeInstance],
    kubectl_bin: Callable[[str], str],
    targets: Targets,
    tmp_path: Path,
) -> None:
    token = "tok-3f9a1c77e5d24b08a6-secret"
    s = serve_factory("--token", token, "-v", "10", manifest=manifest(targets))
    k = kubectl_bin("1.33")
    assert _kubectl(k, s, tmp_path, "get", "pods", "-v", "9").returncode == 0
    assert _kubectl(k, s, tmp_path, "delete", "pod", "db-0").returncode == 0
    assert s.get(f"/api/v1/namespaces/default/pods?access_token={token}&watch=0")[0] == 200
    assert s.get("/api", token=f"{token}x")[0] == 401
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fastpf",
            "--kubeconfig",
            str(s.kubeconfig),
            "-v",
            "9",
            "pod/db-1",
            f":{targets.echo}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=subprocess_env(),
    )
    try:
        assert proc.stdout is not None
        m = re.match(r"Forwarding from 127\.0\.0\.1:(\d+)", proc.stdout.readline().decode())
        assert m and _echo_through(int(m.group(1))) == b"ping\n"
    finally:
        stop_process(proc)
    s.stop()
    out = s.stdout_text() + s.stderr_text()
    assert 'HTTP verb="GET" URI="/api/v1/namespaces/default/pods' in out  # -v 4 request lines
    assert "Request Header: authorization: <masked>" in out  # -v 8 headers
    assert "access_token=<masked>" in out and "deleted Pod default/db-0" in out
    assert token not in out and token[:12] not in out


def test_ws_channel_failed_dial_is_logged(serve_factory: Callable[..., ServeInstance]) -> None:
    """A v4.channel session's refused pod port is logged like a SPDY one (kubelet's words)."""
    s = serve_factory()
    closed = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "fastpf",
        "--kubeconfig",
        str(s.kubeconfig),
        "--protocol",
        "ws-channel",
        "pod/mypod",
        f":{closed}",
    ]
    pf = KubectlPortForward(cmd, subprocess_env())
    try:
        pf.wait_forwarding(1)
        with socket.create_connection(("127.0.0.1", pf.local_port(closed)), timeout=10) as sock:
            sock.settimeout(10)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(10) == b""
        want = f"dial tcp4 127.0.0.1:{closed}: connect: connection refused"
        for _ in range(100):  # bounded: the line follows the failed dial
            if want in s.stderr_text():
                break
            time.sleep(0.05)
        assert want in s.stderr_text(), s.stderr_text()
    finally:
        pf.stop()
