"""Parity with real kubectl 1.33 through the same `fastpf serve`: stdout lines, error lines and
exit codes must match where kubectl behaves well; where it does not (one refused connection
ends its session) fastpf must do better."""

from __future__ import annotations

import base64
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

import pytest
import yaml

from tests.support.kubectl import run_kubectl
from tests.support.patterns import echo_once
from tests.support.processes import KubectlPortForward, subprocess_env
from tests.support.serve_process import ServeInstance
from tests.support.targets import Targets, free_port, manifest

KUBECTL = "1.33"


def run_fastpf(
    kubeconfig: Path, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastpf", "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(),
        stdin=subprocess.DEVNULL,
    )


def first_error(stderr: str) -> str:
    """The decisive stderr lines: kubectl may print klog E-lines (discovery retries) first;
    the usage hint names the program, so it differs by design."""
    lines = [
        ln
        for ln in stderr.splitlines()
        if ln and not re.match(r"^[EWI]\d{4} ", ln) and not ln.startswith("See '")
    ]
    return "\n".join(lines)


def start_pf(cmd: list[str]) -> KubectlPortForward:
    return KubectlPortForward(cmd, subprocess_env())


def finish(pf: KubectlPortForward, sig: int = signal.SIGINT) -> int:
    if pf.proc.poll() is None:
        os.kill(pf.proc.pid, sig)
    return pf.wait_exit(20)


Completed = subprocess.CompletedProcess[str]
# (serve, targets, both(*args, kubeconfig=None) -> (kubectl's run, fastpf's run),
#  cmds(*args) -> (kubectl's command line, fastpf's), tmp dir)
World = tuple[
    ServeInstance,
    Targets,
    Callable[..., tuple[Completed, Completed]],
    Callable[..., tuple[list[str], list[str]]],
    Path,
]


@pytest.fixture
def world(
    serve_factory: Callable[..., ServeInstance],
    targets: Targets,
    tmp_path: Path,
    kubectl_bin: Callable[[str], str],
    kubectl_cache_dir: Path,
) -> World:
    srv: ServeInstance = serve_factory(manifest=manifest(targets))
    kubectl = kubectl_bin(KUBECTL)

    def both(
        *args: str, kubeconfig: Path | None = None
    ) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
        kc = kubeconfig or srv.kubeconfig
        k = run_kubectl(kubectl, kc, kubectl_cache_dir, "port-forward", *args, timeout=60)
        f = run_fastpf(kc, *args)
        return k, f

    def cmds(*args: str) -> tuple[list[str], list[str]]:
        k = [
            kubectl,
            "--kubeconfig",
            str(srv.kubeconfig),
            "--cache-dir",
            str(kubectl_cache_dir),
            "port-forward",
            *args,
        ]
        f = [sys.executable, "-m", "fastpf", "--kubeconfig", str(srv.kubeconfig), *args]
        return k, f

    return srv, targets, both, cmds, tmp_path


def _variant_kubeconfig(
    srv: ServeInstance, tmp: Path, name: str, mutate: Callable[[dict[str, Any]], None]
) -> Path:
    cfg = yaml.safe_load(srv.kubeconfig.read_text())
    mutate(cfg)
    path = tmp / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_error_table_matches_kubectl(world: World) -> None:
    srv, t, both, _, tmp = world
    from tests.support.pki import make_pki

    bad_token = _variant_kubeconfig(
        srv, tmp, "kc-401", lambda c: c["users"][0]["user"].update(token="wrong")
    )
    other_ca = base64.b64encode(make_pki().other_ca_pem).decode()
    bad_ca = _variant_kubeconfig(
        srv,
        tmp,
        "kc-ca",
        lambda c: c["clusters"][0]["cluster"].update({"certificate-authority-data": other_ca}),
    )
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    busy6 = socket.socket(socket.AF_INET6)
    busy6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    busy_port = busy.getsockname()[1]
    busy6.bind(("::1", busy_port))
    busy6.listen(1)
    cases: list[tuple[tuple[str, ...], Path | None]] = [
        (("web-1", "abc"), None),
        (("web-1", "70000"), None),
        (("web-1", "0"), None),
        (("web-1", "5000:0"), None),
        (("web-1", "a:80"), None),
        (("web-1", ":"), None),
        (("web-1", "nosuch"), None),
        (("web-1", "dns"), None),
        (("web-1",), None),
        (("web-1", "80", "--bogus"), None),
        (("--address", "foo", "web-1", "80"), None),
        (("--address", "127.0.0.1,nope", "web-1", "80"), None),
        (("--address=", "web-1", "80"), None),
        (("--pod-running-timeout=abc", "web-1", "80"), None),
        (("-n",), None),
        (("pend", "80"), None),
        (("nope", "80"), None),
        (("svc/nope", "80"), None),
        (("svc/web", "99"), None),
        (("svc/web", "zzz"), None),
        (("foo/x", "80"), None),
        (("web-1", f"{busy_port}:{t.echo}"), None),
        (("web-1", "80"), bad_token),
        (("web-1", "80"), bad_ca),
    ]
    mismatches: list[tuple[object, ...]] = []
    rows: list[tuple[object, ...]] = []
    try:
        for args, kc in cases:
            k, f = both(*args, kubeconfig=kc)
            row = (args, k.returncode, first_error(k.stderr), f.returncode, first_error(f.stderr))
            rows.append(row)
            if k.returncode != f.returncode or first_error(k.stderr) != first_error(f.stderr):
                mismatches.append(row)
            if k.stdout != f.stdout:
                mismatches.append((args, "stdout", k.stdout, f.stdout))
    finally:
        busy.close()
        busy6.close()
    assert mismatches == [], "\n".join(map(repr, mismatches))


def _forwards(pf: KubectlPortForward) -> list[str]:
    return [ln for ln in pf.stdout if ln.startswith("Forwarding from")]


def _normalise(line: str, randoms: set[str]) -> str:
    return re.sub(
        r":(\d+) ->", lambda m: ":RANDOM ->" if m.group(1) in randoms else m.group(0), line
    )


def test_forwarding_lines_and_exit_codes(world: World) -> None:
    srv, t, _, cmds, _ = world
    fixed = free_port()
    specs = (f"{fixed}:{t.echo}", f":{t.echo}", f"0:{t.sink}")
    outputs = []
    for cmd in cmds("web-1", *specs):
        pf = start_pf(cmd)
        pf.wait_forwarding(3)
        deadline = time.monotonic() + 10  # the [::1] line of the last port may still come
        while len(_forwards(pf)) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        # the random ports differ per run: normalise them
        randoms = {str(local) for _, local, _ in pf.forwards if local != fixed}
        norm = [_normalise(ln, randoms) for ln in _forwards(pf)]
        assert echo_once(fixed, b"hi") == b"hi"
        deadline = time.monotonic() + 10
        while (
            not any(ln.startswith("Handling") for ln in pf.stdout) and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        handling = [ln for ln in pf.stdout if ln.startswith("Handling")]
        rc = finish(pf)
        outputs.append((norm, handling, rc))
    assert outputs[0] == outputs[1]
    assert outputs[0][2] == 0 and outputs[0][1] == [f"Handling connection for {fixed}"]


def test_duplicate_and_half_busy_ports(world: World) -> None:
    srv, t, _, cmds, _ = world
    port = free_port()
    results = []
    for cmd in cmds("web-1", f"{port}:{t.echo}", f"{port}:{t.sink}"):
        pf = start_pf(cmd)
        pf.wait_forwarding(1)
        deadline = time.monotonic() + 10
        while (
            not any("Unable to listen" in ln for ln in pf.stderr) or len(_forwards(pf)) < 2
        ) and time.monotonic() < deadline:
            time.sleep(0.05)
        results.append(
            (_forwards(pf), [ln for ln in pf.stderr if "Unable to listen" in ln], finish(pf))
        )
    assert results[0] == results[1]
    # localhost with 127.0.0.1 taken: both serve on ::1 only (fastpf adds a warning on stderr)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        results2: list[tuple[list[str], int]] = []
        for cmd in cmds("web-1", f"{busy.getsockname()[1]}:{t.echo}"):
            pf = start_pf(cmd)
            deadline = time.monotonic() + 20
            while not _forwards(pf) and time.monotonic() < deadline and pf.proc.poll() is None:
                time.sleep(0.05)
            results2.append((_forwards(pf), finish(pf)))
        assert results2[0] == results2[1]
        assert results2[0][0] == [f"Forwarding from [::1]:{busy.getsockname()[1]} -> {t.echo}"]
    finally:
        busy.close()


@pytest.mark.parametrize("ws_env", ["true", "false"])
def test_refused_port_kubectl_dies_fastpf_survives(world: World, ws_env: str) -> None:
    srv, t, _, cmds, _ = world
    closed = free_port()
    env_args = {"KUBECTL_PORT_FORWARD_WEBSOCKETS": ws_env}
    outcome = {}
    for name, cmd in zip(
        ("kubectl", "fastpf"), cmds("web-1", f":{closed}", f":{t.echo}"), strict=True
    ):
        pf = KubectlPortForward(cmd, subprocess_env(env_args))
        pf.wait_forwarding(2)
        with socket.create_connection(("127.0.0.1", pf.local_port(closed)), timeout=20) as s:
            s.settimeout(20)
            assert s.recv(10) == b""
        deadline = time.monotonic() + 10
        while pf.proc.poll() is None and time.monotonic() < deadline and name == "kubectl":
            time.sleep(0.05)
        alive = pf.proc.poll() is None
        works = alive and echo_once(pf.local_port(t.echo), b"still") == b"still"
        rc = finish(pf)
        outcome[name] = (alive, works, rc, pf.stderr[-1] if pf.stderr else "")
    assert outcome["kubectl"][:3] == (False, False, 1)
    assert outcome["kubectl"][3] == "error: lost connection to pod"
    assert outcome["fastpf"][:3] == (True, True, 0)
    assert "an error occurred forwarding" in outcome["fastpf"][3]


def test_auth_conflicts_and_global_flags_match_kubectl(world: World) -> None:
    """kubectl's clientcmd validation (one problem: `error: ...`; several: `Error in
    configuration:` and a list) and its global-flag errors, side by side with kubectl 1.33."""
    srv, _, both, _, tmp = world
    token = srv.token
    basic = _variant_kubeconfig(
        srv,
        tmp,
        "kc-basic",
        lambda c: c["users"][0].update(user={"username": "u", "password": "p"}),
    )
    token_file = tmp / "token"
    token_file.write_text(token)
    token_file_user = _variant_kubeconfig(
        srv,
        tmp,
        "kc-tf",
        lambda c: c["users"][0].update(user={"tokenFile": str(token_file), "username": "u"}),
    )
    exec_v1 = _variant_kubeconfig(
        srv,
        tmp,
        "kc-exec",
        lambda c: c["users"][0].update(
            user={
                "token": token,
                "exec": {"command": "true", "apiVersion": "client.authentication.k8s.io/v1"},
            }
        ),
    )
    cases: list[tuple[tuple[str, ...], Path | None]] = [
        (("--username=u", "web-1", "80"), None),
        (("--password=p", "web-1", "80"), None),
        (("--username=u", "--as-group=g", "web-1", "80"), None),
        (("--as-uid=1", "web-1", "80"), None),
        (("--as-group=g", "web-1", "80"), None),
        (("--client-certificate=/nonexistent/c.crt", "web-1", "80"), None),
        (("--token=x", "web-1", "80"), basic),
        (("web-1", "80"), token_file_user),
        (("web-1", "80"), exec_v1),
        (("--username=v", "web-1", "80"), exec_v1),
        (("--profile=bogus", "web-1", "80"), None),
        (("--log-flush-frequency=5", "web-1", "80"), None),
        (("--vmodule=abc", "web-1", "80"), None),
        (("--warnings-as-errors=maybe", "web-1", "80"), None),
    ]
    mismatches = []
    for args, kc in cases:
        k, f = both(*args, kubeconfig=kc)
        if (k.returncode, first_error(k.stderr), k.stdout) != (
            f.returncode,
            first_error(f.stderr),
            f.stdout,
        ):
            mismatches.append((args, kc, k.returncode, k.stderr, f.returncode, f.stderr))
        assert k.returncode == 1, (args, k.stderr)
    assert mismatches == [], "\n".join(map(repr, mismatches))


def test_accepted_global_flags_forward_like_kubectl(world: World) -> None:
    """kubectl's global flags that do not change a port-forward: both forward the same."""
    srv, t, _, cmds, tmp = world
    flags = (
        "--cache-dir",
        str(tmp / "cache"),
        "--disable-compression",
        "--warnings-as-errors",
        "--log-flush-frequency=3s",
        "--vmodule=a=1",
        "--profile=none",
        "--profile-output",
        str(tmp / "p.pprof"),
        "--match-server-version=false",
    )
    port = free_port()
    outputs = []
    for cmd in cmds(*flags, "web-1", f"{port}:{t.echo}"):
        pf = start_pf(cmd)
        pf.wait_forwarding(1)
        assert echo_once(port, b"flags") == b"flags"
        outputs.append((_forwards(pf)[:1], finish(pf)))
    assert outputs[0] == outputs[1] == ([f"Forwarding from 127.0.0.1:{port} -> {t.echo}"], 0)


def _impersonation_lines(srv: ServeInstance) -> set[str]:
    """What serve recorded (`impersonation: METHOD PATH header=value ...`), as "upgrade ..." for
    the port-forward request and "rest ..." for the others."""
    out = set()
    for line in srv.stderr_text().splitlines():
        if line.startswith("impersonation: "):
            _method, path, *headers = line[len("impersonation: ") :].split(" ")
            kind = "upgrade" if path.endswith("/portforward") else "rest"
            out.add(f"{kind} {' '.join(sorted(headers))}")
    return out


def test_impersonation_headers_as_kubectl(
    serve_factory: Callable[..., ServeInstance],
    targets: Targets,
    kubectl_bin: Callable[[str], str],
    kubectl_cache_dir: Path,
) -> None:
    """--as/--as-group/--as-uid reach the server as kubectl sends them (serve records them), on
    the pod lookup and on the upgrade; without --as nothing is sent."""
    recorded = []
    flags = ("--as=bob", "--as-group=dev", "--as-group=ops", "--as-uid=42")
    for name in ("kubectl", "fastpf"):
        srv = serve_factory(manifest=manifest(targets))
        kc = srv.kubeconfig
        if name == "kubectl":
            cmd = [
                kubectl_bin(KUBECTL),
                "--kubeconfig",
                str(kc),
                "--cache-dir",
                str(kubectl_cache_dir),
                "port-forward",
                *flags,
                "web-1",
                f":{targets.echo}",
            ]
        else:
            cmd = [
                sys.executable,
                "-m",
                "fastpf",
                "--kubeconfig",
                str(kc),
                *flags,
                "web-1",
                f":{targets.echo}",
            ]
        pf = start_pf(cmd)
        pf.wait_forwarding(1)
        assert echo_once(pf.local_port(targets.echo), b"as") == b"as"
        assert finish(pf) == 0
        recorded.append(_impersonation_lines(srv))
    want = "impersonate-group=dev impersonate-group=ops impersonate-uid=42 impersonate-user=bob"
    assert recorded[1] == {f"rest {want}", f"upgrade {want}"}
    assert recorded[1] <= recorded[0]  # kubectl also sends them on its discovery requests
    # no --as: nothing recorded
    srv = serve_factory(manifest=manifest(targets))
    pf = start_pf(
        [
            sys.executable,
            "-m",
            "fastpf",
            "--kubeconfig",
            str(srv.kubeconfig),
            "web-1",
            f":{targets.echo}",
        ]
    )
    pf.wait_forwarding(1)
    assert finish(pf) == 0
    assert _impersonation_lines(srv) == set()
