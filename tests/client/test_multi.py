"""`fastpf -f forwards.yaml`: two contexts against two `fastpf serve` instances in one process,
events and stats for all, port clashes reported before anything is bound, file errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from fastpf.client.args import Options
from fastpf.client.config_file import find_clashes, load_forwards
from fastpf.errors import UsageError
from tests.support.patterns import echo_once
from tests.support.processes import KubectlPortForward, subprocess_env
from tests.support.serve_process import ServeInstance
from tests.support.targets import Targets


def _pod(name: str, t: Targets) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "containers": [{"name": "c", "ports": [{"name": "echo", "containerPort": t.echo}]}]
            },
        }
    )


def _merged_kubeconfig(path: Path, **serves: ServeInstance) -> Path:
    """One kubeconfig with a context (and cluster and user) per serve instance."""
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [],
        "users": [],
        "contexts": [],
        "current-context": next(iter(serves)),
    }
    for name, srv in serves.items():
        doc["clusters"].append({"name": name, "cluster": srv.config["clusters"][0]["cluster"]})
        doc["users"].append({"name": name, "user": srv.config["users"][0]["user"]})
        doc["contexts"].append(
            {"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}
        )
    path.write_text(yaml.safe_dump(doc))
    return path


# (merged kubeconfig with contexts a and b, targets of a, targets of b, tmp dir)
TwoClusters = tuple[Path, Targets, Targets, Path]


@pytest.fixture
def two_clusters(
    serve_factory: Callable[..., ServeInstance],
    targets_factory: Callable[[str], Targets],
    tmp_path: Path,
) -> TwoClusters:
    ta, tb = targets_factory("127.0.0.1"), targets_factory("127.0.0.1")
    a = serve_factory(manifest=_pod("alpha", ta))  # only cluster a has pod alpha
    b = serve_factory(manifest=_pod("beta", tb))  # only cluster b has pod beta
    return _merged_kubeconfig(tmp_path / "kubeconfig", a=a, b=b), ta, tb, tmp_path


def _fastpf(kubeconfig: Path, *args: str) -> KubectlPortForward:
    cmd = [sys.executable, "-m", "fastpf", "--kubeconfig", str(kubeconfig), *args]
    return KubectlPortForward(cmd, subprocess_env())


def test_two_contexts_two_serves_one_process(two_clusters: TwoClusters) -> None:
    kubeconfig, ta, tb, tmp = two_clusters
    forwards = tmp / "forwards.yaml"
    forwards.write_text(
        yaml.safe_dump(
            {
                "forwards": [
                    {"target": "pod/alpha", "ports": [":echo"], "context": "a"},
                    {"target": "beta", "ports": ":echo", "context": "b", "name": "b-echo"},
                ]
            }
        )
    )
    ready = tmp / "ready.json"
    pf = _fastpf(
        kubeconfig,
        "-f",
        str(forwards),
        "-o",
        "json",
        "--ready-file",
        str(ready),
        "--stats",
        "--stats-interval",
        "100ms",
        "--address",
        "127.0.0.1",
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline and pf.proc.poll() is None:
            time.sleep(0.05)
        assert ready.exists(), (pf.stdout, pf.stderr)
        doc = json.loads(ready.read_text())
        by_ctx = {f["context"]: f for f in doc["forwards"]}
        assert set(by_ctx) == {"a", "b"} and by_ctx["a"]["pod"] == "alpha"
        assert (by_ctx["a"]["remote_port"], by_ctx["b"]["remote_port"]) == (ta.echo, tb.echo)
        assert by_ctx["b"]["name"] == "b-echo"
        for f in doc["forwards"]:
            assert (
                echo_once(f["local_port"], f["context"].encode() * 10) == f["context"].encode() * 10
            )
        assert (ta.connections, tb.connections) == (1, 1)  # each reached its own cluster's pod
        deadline = time.monotonic() + 20
        while (
            time.monotonic() < deadline and sum('"connection_closed"' in ln for ln in pf.stdout) < 2
        ):
            time.sleep(0.05)
        os.kill(pf.proc.pid, signal.SIGINT)
        assert pf.wait_exit(20) == 0
    finally:
        pf.stop()
    events = [json.loads(ln) for ln in pf.stdout]
    closed = {e["context"]: e for e in events if e["event"] == "connection_closed"}
    assert closed["a"]["bytes_to_pod"] == closed["b"]["bytes_to_pod"] == 10
    assert [e["event"] for e in events].count("ready") == 1
    summary = [ln for ln in pf.stderr if ln.startswith("[summary]")]
    assert len(summary) == 2 and any(
        ln.startswith("[summary] pod/alpha (context a, namespace default)") for ln in summary
    )
    assert any(
        ln.startswith("[summary] b-echo (context b,") and "1 connection," in ln for ln in summary
    )
    assert not ready.exists()


def test_kubectl_lines_name_the_forward(two_clusters: TwoClusters) -> None:
    kubeconfig, ta, tb, tmp = two_clusters
    forwards = tmp / "forwards.yaml"
    forwards.write_text(
        yaml.safe_dump(
            [
                {"target": "alpha", "ports": ["0:echo"], "context": "a"},
                {"target": "beta", "ports": ["0:echo"], "context": "b"},
            ]
        )
    )
    pf = _fastpf(kubeconfig, "-f", str(forwards), "--address", "127.0.0.1")
    try:
        deadline = time.monotonic() + 30
        while len(pf.stdout) < 2 and time.monotonic() < deadline and pf.proc.poll() is None:
            time.sleep(0.05)
        lines = list(pf.stdout)  # the two forwards start concurrently: either order
        assert len(lines) == 2 and all(ln.startswith("Forwarding from 127.0.0.1:") for ln in lines)
        assert {ln.split(" -> ", 1)[1] for ln in lines} == {
            f"{ta.echo} (alpha, context a)",
            f"{tb.echo} (beta, context b)",
        }
    finally:
        pf.stop()


def test_clash_after_resolving_named_ports(two_clusters: TwoClusters) -> None:
    """`echo` binds local = the pod's port: only known once resolved; nothing is bound."""
    kubeconfig, ta, _tb, tmp = two_clusters
    forwards = tmp / "forwards.yaml"
    forwards.write_text(
        yaml.safe_dump(
            {
                "forwards": [
                    {"target": "alpha", "ports": "echo", "context": "a"},
                    {"target": "beta", "ports": f"{ta.echo}:echo", "context": "b"},
                ]
            }
        )
    )
    r = subprocess.run(
        [sys.executable, "-m", "fastpf", "--kubeconfig", str(kubeconfig), "-f", str(forwards)],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == (
        f"error: {forwards}: local port {ta.echo} is claimed twice: by alpha, "
        f"context a and by beta, context b\n"
    )


def test_one_target_failing_at_start_ends_all(two_clusters: TwoClusters) -> None:
    kubeconfig, _ta, _tb, tmp = two_clusters
    forwards = tmp / "forwards.yaml"
    forwards.write_text(
        yaml.safe_dump(
            {
                "context": "a",
                "forwards": [
                    {"target": "alpha", "ports": ":echo"},
                    {"target": "beta", "ports": ":echo"},  # beta exists in b only
                ],
            }
        )
    )
    r = subprocess.run(
        [sys.executable, "-m", "fastpf", "--kubeconfig", str(kubeconfig), "-f", str(forwards)],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == ('beta, context a: Error from server (NotFound): pods "beta" not found\n')


def _load(tmp: Path, text: str, base: Options | None = None) -> Any:
    path = tmp / "f.yaml"
    path.write_text(text)
    return load_forwards(str(path), base or Options())


@pytest.mark.parametrize(
    "text,message",
    [
        ("forwards: []", "no forwards: give a list of {target, ports}"),
        ("- {ports: 80}", "forward 1: target is required (e.g. svc/db, pod/x, deploy/web)"),
        ("- {target: x}", "forward 1: ports are required"),
        ("- {target: x, ports: 80, prots: 1}", 'forward 1: unknown key "prots"'),
        (
            "contxt: a\nforwards: [{target: x, ports: 80}]",
            'unknown key "contxt" (expected forwards, '
            "address, cluster, context, kubeconfig, namespace, pod-running-timeout, protocol, server, user)",
        ),
        (
            "- {target: x, ports: 80, protocol: h3}",
            "forward 1: protocol must be one of auto, spdy, websocket, ws-channel",
        ),
        ("- {target: x, ports: 80, address: nope}", "forward 1: address: nope is not a valid IP"),
        (
            "- {target: x, ports: 80, pod-running-timeout: 0s}",
            "forward 1: pod-running-timeout must be higher than zero",
        ),
        (
            "- {target: x, ports: [{a: 1}]}",
            "forward 1: ports must be a port spec or a list of them "
            '(e.g. 5432, "8080:80", ":http")',
        ),
        ("forwards: [", "yaml: line 1: expected the node content, but found '<stream end>'"),
        ("42", 'expected a list of forwards, or a mapping with "forwards"'),
        (
            "- {target: a, ports: [5000]}\n- {target: b, ports: ['5000:80'], address: 127.0.0.1}",
            "local port 5000 is claimed twice: by a and by b",
        ),
    ],
)
def test_file_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UsageError) as ei:
        _load(tmp_path, text)
    assert ei.value.line == f"error: {tmp_path / 'f.yaml'}: {message}"


def test_file_precedence(tmp_path: Path) -> None:
    base = Options(kubeconfig="/k", namespace="cli", context="cli-ctx")
    entries = _load(
        tmp_path,
        "namespace: top\nforwards:\n- {target: a, ports: 1}\n"
        "- {target: b, ports: [2, '3:4'], namespace: own, context: c}\n",
        base,
    )
    a, b = (e.opts for e in entries)
    assert (a.namespace, a.context, a.kubeconfig) == ("top", "cli-ctx", "/k")
    assert (b.namespace, b.context, b.ports) == ("own", "c", ["2", "3:4"])
    assert [e.label for e in entries] == [
        "a, context cli-ctx, namespace top",
        "b, context c, namespace own",
    ]


def test_clash_rules() -> None:
    from fastpf.client.args import PortPair

    def one(addr: list[str], port: int, label: str) -> tuple[str, list[str], list[PortPair]]:
        return (label, addr, [PortPair(port, 1)])

    assert find_clashes([one(["127.0.0.1"], 80, "a"), one(["127.0.0.2"], 80, "b")]) == []
    assert find_clashes([one(["localhost"], 80, "a"), one(["::1"], 80, "b")]) != []
    assert find_clashes([one(["0.0.0.0"], 80, "a"), one(["127.0.0.1"], 80, "b")]) != []
    assert find_clashes([one(["0.0.0.0"], 80, "a"), one(["::1"], 80, "b")]) == []  # v6only
    assert find_clashes([one(["localhost"], 0, "a"), one(["localhost"], 0, "b")]) == []
