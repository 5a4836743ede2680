"""Forwards that stay up (issue 12), end to end against `fastpf serve`: serve killed and
restarted, serve frozen longer than the ping timeout, giving up after --pod-running-timeout,
pods behind a service replaced, credentials rotated while disconnected, --reconnect=false.

Each test prints its measured time to recover (pytest -s shows them; the report quotes them).
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.patterns import Download, echo_once
from tests.support.processes import Fastpf
from tests.support.serve_process import TOKEN, RestartableServe, ServeInstance
from tests.support.targets import Targets
from tests.support.waits import time_until, wait_line

PROTOCOLS = ["spdy", "websocket", "ws-channel"]
FAST_PINGS = ("--ping-interval", "300ms", "--ping-timeout", "2s")


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[Callable[..., RestartableServe]]:
    made: list[RestartableServe] = []

    def make(*args: str, **kw: Any) -> RestartableServe:
        srv = RestartableServe(tmp_path / f"r{len(made)}", *args, **kw)
        made.append(srv)
        return srv

    yield make
    for srv in made:
        srv.close()


def _report(name: str, **numbers: float) -> None:
    text = ", ".join(f"{k}={v:.3f}s" for k, v in numbers.items())
    print(f"\n[recovery] {name}: {text}", file=sys.stderr)


def _echo_ok(port: int, payload: bytes = b"alive", timeout: float = 3.0) -> bool:
    return echo_once(port, payload, timeout=timeout) == payload


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_serve_killed_midtransfer_and_restarted(
    protocol: str,
    restartable: Callable[..., RestartableServe],
    targets: Targets,
    fastpf: Callable[..., Fastpf],
) -> None:  # noqa: F811
    srv = restartable()
    pf = fastpf(
        srv.kubeconfig,
        "--protocol",
        protocol,
        "mypod",
        f":{targets.source}",
        f":{targets.echo}",
        wait=2,
    )
    src, echo = pf.local_port(targets.source), pf.local_port(targets.echo)
    assert _echo_ok(echo)
    # A transfer in flight when serve dies: every byte it got is right, and it ends with a
    # reset (never a clean EOF that could pass for a complete transfer).
    dl = Download(src, 1 << 40, timeout=30)
    th = threading.Thread(target=dl.run, daemon=True)
    th.start()
    time_until(lambda: dl.got >= 4 << 20, 20)
    srv.kill(signal.SIGKILL)
    killed = time.monotonic()
    th.join(20)
    assert dl.outcome == "reset", (dl.outcome, dl.got)
    assert dl.corrupt_at is None and dl.got > 4 << 20
    # The listener stays: a connection made while serve is down is accepted and waits.
    waiting: dict[str, Any] = {}

    def wait_echo() -> None:
        waiting["reply"] = echo_once(echo, b"waited", timeout=30)
        waiting["at"] = time.monotonic()

    waiter = threading.Thread(target=wait_echo, daemon=True)
    waiter.start()
    time.sleep(0.8)
    assert pf.proc.poll() is None, pf.output()
    restarted = srv.restart()
    recover = time_until(_echo_ok_fn(echo), 10)
    waiter.join(30)
    assert waiting.get("reply") == b"waited", waiting
    _report(
        f"serve SIGKILL + restart ({protocol})",
        new_connection_after_restart=recover,
        waiting_connection_after_restart=waiting["at"] - restarted,
        restart_after_kill=restarted - killed,
    )
    assert recover < 2.0
    assert pf.proc.poll() is None
    assert pf.interrupt() == 0
    err = "\n".join(pf.stderr)
    assert "Traceback" not in err
    if protocol != "ws-channel":
        assert "lost connection to pod mypod" in err and "reconnected to pod mypod" in err, err


def _echo_ok_fn(port: int) -> Callable[[], bool]:
    return lambda: _echo_ok(port)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_serve_frozen_longer_than_ping_timeout(
    protocol: str, serve: ServeInstance, targets: Targets, fastpf: Callable[..., Fastpf]
) -> None:  # noqa: F811
    pf = fastpf(
        serve.kubeconfig, "--protocol", protocol, *FAST_PINGS, "mypod", f":{targets.echo}", wait=1
    )
    echo = pf.local_port(targets.echo)
    assert _echo_ok(echo)
    held = socket.create_connection(("127.0.0.1", echo), timeout=20)
    try:
        held.sendall(b"x")
        assert held.recv(1) == b"x"
        serve.process.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            # The held connection is reset once the peer is declared dead.
            with pytest.raises(ConnectionResetError):
                held.settimeout(15)
                held.recv(1)
            detected = time.monotonic() - stopped
            needle = (
                "no reply to WebSocket ping" if protocol == "ws-channel" else "no reply to PING"
            )
            wait_line(pf, needle, 5)
            time.sleep(max(0.0, 4.0 - (time.monotonic() - stopped)))
        finally:
            serve.process.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        recover = time_until(_echo_ok_fn(echo), 15)
    finally:
        held.close()
    _report(
        f"serve SIGSTOP 4s ({protocol}, ping 300ms / timeout 2s)",
        detected=detected,
        new_connection_after_sigcont=recover,
        frozen=resumed - stopped,
    )
    assert detected < 2.0 + 0.3 + 0.5  # timeout + one check period + scheduling slack
    assert pf.proc.poll() is None
    assert pf.interrupt() == 0
    assert "Traceback" not in "\n".join(pf.stderr)


def test_gives_up_after_pod_running_timeout(
    restartable: Callable[..., RestartableServe], targets: Targets, fastpf: Callable[..., Fastpf]
) -> None:  # noqa: F811
    srv = restartable()
    pf = fastpf(
        srv.kubeconfig,
        "--protocol",
        "spdy",
        "--pod-running-timeout",
        "2s",
        "mypod",
        f":{targets.echo}",
        wait=1,
    )
    srv.kill(signal.SIGKILL)
    killed = time.monotonic()
    assert pf.wait_exit(20) == 1
    took = time.monotonic() - killed
    last = pf.stderr[-1]
    assert last.startswith(
        "error: lost connection to pod mypod and could not reconnect within "
        "2s (--pod-running-timeout): "
    ), pf.stderr
    assert "refused" in last
    _report("give up (serve gone, --pod-running-timeout 2s)", exit_after_kill=took)


def test_interrupt_while_reconnecting(
    restartable: Callable[..., RestartableServe], targets: Targets, fastpf: Callable[..., Fastpf]
) -> None:  # noqa: F811
    """SIGINT during an outage ends fastpf at once with exit 0, like any SIGINT; a local
    connection waiting for the reconnect is closed."""
    srv = restartable()
    pf = fastpf(srv.kubeconfig, "--protocol", "spdy", "mypod", f":{targets.echo}", wait=1)
    echo = pf.local_port(targets.echo)
    srv.kill(signal.SIGKILL)
    wait_line(pf, "lost connection to pod mypod", 10)
    waiting = socket.create_connection(("127.0.0.1", echo), timeout=20)
    try:
        waiting.sendall(b"x")
        time.sleep(0.3)
        t0 = time.monotonic()
        assert pf.interrupt(10) == 0
        took = time.monotonic() - t0
        waiting.settimeout(10)
        with pytest.raises(OSError):
            if waiting.recv(1) == b"":
                raise ConnectionResetError("closed")
    finally:
        waiting.close()
    assert took < 5.0
    assert "Traceback" not in pf.output()


def test_pod_not_running_after_restart_gives_up(
    restartable: Callable[..., RestartableServe], targets: Targets, fastpf: Callable[..., Fastpf]
) -> None:  # noqa: F811
    running = _pods_manifest([("web-1", "127.0.0.1", targets, None)])
    pending = _pods_manifest([("web-1", "127.0.0.1", targets, "Pending")])
    srv = restartable(manifest=running)
    pf = fastpf(
        srv.kubeconfig, "--pod-running-timeout", "3s", "pod/web-1", f":{targets.echo}", wait=1
    )
    srv.kill(signal.SIGKILL)
    srv.restart(manifest=pending)
    assert pf.wait_exit(20) == 1
    assert pf.stderr[-1].endswith(
        "unable to forward port because pod is not running. Current status=Pending"
    ), pf.stderr


def test_reconnect_false_exits_like_kubectl(
    serve: ServeInstance, targets: Targets, fastpf: Callable[..., Fastpf]
) -> None:  # noqa: F811
    pf = fastpf(
        serve.kubeconfig,
        "--reconnect=false",
        "--protocol",
        "websocket",
        "mypod",
        f":{targets.echo}",
        wait=1,
    )
    serve.stop(signal.SIGKILL)
    assert pf.wait_exit(20) == 1
    assert pf.stderr == ["error: lost connection to pod"]


def _pods_manifest(pods: list[tuple[str, str, Targets, str | None]], service: bool = True) -> str:
    docs: list[dict[str, Any]] = []
    for name, address, t, phase in pods:
        doc: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": {"app": "web"},
                "annotations": {"fastpf.io/address": address},
            },
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "ports": [
                            {"name": "echo", "containerPort": t.echo},
                            {"name": "source", "containerPort": t.source},
                        ],
                    }
                ]
            },
        }
        if phase:
            doc["status"] = {"phase": phase}
        docs.append(doc)
    if service:
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web"},
                "spec": {
                    "selector": {"app": "web"},
                    "ports": [{"name": "http", "port": 80, "targetPort": "echo"}],
                },
            }
        )
    return yaml.safe_dump_all(docs)


@pytest.mark.parametrize("protocol", ["spdy", "ws-channel"])
def test_service_pod_replaced_across_restart(
    protocol: str,
    restartable: Callable[..., RestartableServe],
    targets_factory: Callable[[str], Targets],
    fastpf: Callable[..., Fastpf],
) -> None:  # noqa: F811
    """svc/web's pod web-1 is gone after the restart and web-2 (another address, another
    container port behind the same named targetPort) serves: new connections reach web-2."""
    t1 = targets_factory("127.0.0.1")
    t2 = targets_factory("127.0.0.2")
    srv = restartable(manifest=_pods_manifest([("web-1", "127.0.0.1", t1, None)]))
    pf = fastpf(srv.kubeconfig, "--protocol", protocol, "svc/web", ":80", wait=1)
    (local,) = {lp for _, lp, _ in pf.forwards}
    assert _echo_ok(local)
    before = t1.connections
    srv.kill(signal.SIGKILL)
    restarted = srv.restart(manifest=_pods_manifest([("web-2", "127.0.0.2", t2, None)]))
    recover = time_until(_echo_ok_fn(local), 10)
    _report(
        f"svc pod replaced across restart ({protocol})",
        new_pod_reached=recover,
        since_restart=time.monotonic() - restarted,
    )
    assert t2.connections >= 1 and t1.connections == before
    assert pf.proc.poll() is None
    assert pf.interrupt() == 0
    err = "\n".join(pf.stderr)
    assert "new connections go to pod web-2" in err, err


def _exec_token_plugin(tmp: Path, token_file: Path, lifetime: float | None) -> str:
    script = tmp / "plugin.py"
    runs = tmp / "runs"
    expiry = (
        f"time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(time.time() + {lifetime}))"
        if lifetime is not None
        else "'2999-01-01T00:00:00Z'"
    )
    script.write_text(f"""#!{sys.executable}
import json, os, time
runs = {str(runs)!r}
n = int(open(runs).read()) if os.path.exists(runs) else 0
open(runs, "w").write(str(n + 1))
print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                   "status": {{"token": open({str(token_file)!r}).read().strip(),
                               "expirationTimestamp": {expiry}}}}}))
""")
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize("how", ["token-file", "exec", "exec-expiring", "kubeconfig-token"])
def test_credentials_reread_on_reconnect(
    how: str,
    tmp_path: Path,
    restartable: Callable[..., RestartableServe],
    targets: Targets,
    fastpf: Callable[..., Fastpf],
) -> None:  # noqa: F811
    """Serve comes back with another token; the rotated credential is picked up (a 401 drops
    the cached one), no crash loop, forwarding resumes."""
    srv = restartable()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    cfg = yaml.safe_load(srv.kubeconfig.read_text())
    if how == "token-file":
        cfg["users"][0]["user"] = {"tokenFile": str(token_file)}
    elif how == "kubeconfig-token":
        cfg["users"][0]["user"] = {"token": TOKEN}
    else:
        cfg["users"][0]["user"] = {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "interactiveMode": "Never",
                "command": _exec_token_plugin(
                    tmp_path, token_file, 2.0 if how == "exec-expiring" else None
                ),
            }
        }
    kc = tmp_path / "kc"
    kc.write_text(yaml.safe_dump(cfg))
    pf = fastpf(kc, "--protocol", "spdy", "mypod", f":{targets.echo}", wait=1)
    echo = pf.local_port(targets.echo)
    assert _echo_ok(echo)
    srv.kill(signal.SIGKILL)
    token_file.write_text("rotated-token-77aa")
    if how == "kubeconfig-token":  # the user edits the kubeconfig: read again after the 401
        cfg["users"][0]["user"] = {"token": "rotated-token-77aa"}
        kc.write_text(yaml.safe_dump(cfg))
    if how == "exec-expiring":
        time.sleep(2.2)  # the cached credential expires meanwhile
    restarted = srv.restart(token="rotated-token-77aa")
    recover = time_until(_echo_ok_fn(echo), 15)
    _report(
        f"credentials rotated ({how})",
        new_connection_after_restart=recover,
        since_restart=time.monotonic() - restarted,
    )
    assert pf.proc.poll() is None
    assert pf.interrupt() == 0
    if how.startswith("exec"):
        runs = int((tmp_path / "runs").read_text())
        assert 2 <= runs <= 4, runs  # re-run for the new token, not in a loop


def test_library_api_reconnects(
    restartable: Callable[..., RestartableServe], targets: Targets
) -> None:
    """The library's forward() keeps its ports across a restart too."""
    import asyncio

    from fastpf.client import forward
    from fastpf.loop import run

    srv = restartable()

    async def go() -> tuple[bytes, bytes]:
        async with forward(
            "mypod",
            [f":{targets.echo}"],
            kubeconfig=str(srv.kubeconfig),
            protocol="spdy",
            connections=2,
        ) as fwd:
            (port,) = fwd.bound_ports

            async def echo(payload: bytes) -> bytes:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(payload)
                got = await asyncio.wait_for(reader.readexactly(len(payload)), 20)
                writer.close()
                return got

            first = await echo(b"one")
            srv.kill(signal.SIGKILL)
            await asyncio.get_running_loop().run_in_executor(None, srv.restart)
            second = await echo(b"two")  # waits for the reconnect, then flows
            return first, second

    assert run(go()) == (b"one", b"two")


def test_observer_hooks_see_reconnect_events(
    restartable: Callable[..., RestartableServe], targets: Targets
) -> None:
    """Forwarder.observer (e.g. --stats / JSON events) gets every reconnect event, besides
    the console's lines."""
    import asyncio
    import io

    from fastpf.client.args import Options
    from fastpf.client.console import Console
    from fastpf.client.forward import prepare
    from fastpf.loop import run

    srv = restartable()
    events: list[tuple[Any, ...]] = []

    class Recorder:
        def lost(self, *args: Any) -> None:
            events.append(("lost", *args))

        def reconnecting(self, *args: Any) -> None:
            events.append(("reconnecting", *args))

        def reconnected(self, *args: Any) -> None:
            events.append(("reconnected", *args))

    err = io.StringIO()

    async def go() -> None:
        opts = Options(
            target="mypod",
            ports=[f":{targets.echo}"],
            kubeconfig=str(srv.kubeconfig),
            protocol="spdy",
            connections=1,
        )
        fwd = await prepare(opts.forward_spec(), Console(io.StringIO(), err))
        fwd.observer = Recorder()
        await fwd.start()
        try:
            srv.kill(signal.SIGKILL)
            await asyncio.get_running_loop().run_in_executor(None, srv.restart)
            for _ in range(400):  # bounded: 20 s
                if events and events[-1][0] == "reconnected":
                    break
                await asyncio.sleep(0.05)
        finally:
            await fwd.stop()

    run(go())
    names = [e[0] for e in events]
    assert names[0] == "lost" and names[-1] == "reconnected", events
    assert events[0][1] == "mypod" and events[0][3:] == (1, 1), events  # pod, 1 of 1 lost
    assert "lost connection to pod mypod" in err.getvalue()
    assert "reconnected to pod mypod" in err.getvalue()


# ---- pods that move under a running forward (serve's pod admin verbs) -------------------------


def _pod_doc(name: str, address: str, t: Targets) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"app": "web"},
            "annotations": {"fastpf.io/address": address},
        },
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "ports": [
                        {"name": "echo", "containerPort": t.echo},
                        {"name": "source", "containerPort": t.source},
                    ],
                }
            ]
        },
    }


def _admin(
    srv: ServeInstance,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = "application/json",
) -> tuple[int, bytes]:
    import json as _json

    conn = srv.connection()
    try:
        headers = {"Authorization": f"Bearer {srv.token}", "Content-Type": content_type}
        conn.request(
            method, path, body=_json.dumps(body) if body is not None else None, headers=headers
        )
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


PODS = "/api/v1/namespaces/default/pods"


@pytest.mark.parametrize("how", ["deleted", "failed"])
@pytest.mark.parametrize("protocol", ["spdy", "ws-channel"])
def test_pod_behind_service_moves(
    how: str,
    protocol: str,
    serve_factory: Callable[..., ServeInstance],
    targets_factory: Callable[[str], Targets],
    fastpf: Callable[..., Fastpf],
) -> None:  # noqa: F811
    """svc/web's pod web-1 is deleted (or leaves Running) while serve runs and web-2 appears:
    new connections reach web-2; with `failed` the established connection to web-1 (whose pod
    still exists) keeps going; nothing is corrupted."""
    t1 = targets_factory("127.0.0.1")
    t2 = targets_factory("127.0.0.2")
    srv = serve_factory(manifest=_pods_manifest([("web-1", "127.0.0.1", t1, None)]))
    if _admin(srv, "DELETE", f"{PODS}/no-such-pod")[0] == 405:
        pytest.skip("fastpf serve has no pod admin verbs yet (serve-fidelity branch)")
    pf = fastpf(srv.kubeconfig, "--protocol", protocol, "svc/web", ":80", wait=1)
    (local,) = {lp for _, lp, _ in pf.forwards}
    assert _echo_ok(local) and t1.connections >= 1
    held = socket.create_connection(("127.0.0.1", local), timeout=20)
    try:
        held.sendall(b"held")
        assert held.recv(4) == b"held"
        assert _admin(srv, "POST", PODS, _pod_doc("web-2", "127.0.0.2", t2))[0] in (200, 201)
        moved = time.monotonic()
        if how == "deleted":
            assert _admin(srv, "DELETE", f"{PODS}/web-1")[0] in (200, 202)
        else:
            assert (
                _admin(
                    srv,
                    "PATCH",
                    f"{PODS}/web-1/status",
                    {"status": {"phase": "Failed"}},
                    "application/merge-patch+json",
                )[0]
                == 200
            )
        before = t2.connections
        recover = time_until(lambda: _echo_ok(local) and t2.connections > before, 15)
        if how == "failed":  # its pod still exists: the established connection goes on
            held.sendall(b"still")
            assert held.recv(5) == b"still"
    finally:
        held.close()
    _report(
        f"pod behind svc {how} while serving ({protocol})",
        new_connections_reach_new_pod=recover,
        since_move=time.monotonic() - moved,
    )
    assert pf.proc.poll() is None
    assert pf.interrupt() == 0
    err = "\n".join(pf.stderr)
    assert "new connections go to pod web-2" in err, err
