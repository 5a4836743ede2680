"""End to end: the `fastpf` client against `fastpf serve` for every protocol.

Port forms, several ports, 64 MiB each way with sha256, 100 concurrent connections, half-close
both ways, a refused pod port that must not end the session, svc/ and deploy/ targets with named
ports, exec credentials with re-run after 401, and proxy-url through an in-test CONNECT proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.patterns import download, echo_once, pattern_sha256, upload
from tests.support.processes import Fastpf
from tests.support.serve_process import ServeInstance
from tests.support.targets import Targets, free_port, manifest

PROTOCOLS = ["spdy", "websocket", "ws-channel"]
BULK = 64 << 20
CONCURRENT = 100


class HalfCloseTargets:
    """`eof`: reads to EOF, then answers "N sha256" and closes (local->remote half-close).
    `first`: sends b"hello", shuts its write side, reads to EOF and records what came
    (remote->local half-close)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.late: list[bytes] = []
        self.socks = []
        self.threads = []
        for handler in (self._eof, self._first):
            s = socket.socket()
            s.bind((host, 0))
            s.listen(64)
            s.settimeout(60)
            self.socks.append(s)
            t = threading.Thread(target=self._serve, args=(s, handler), daemon=True)
            t.start()
            self.threads.append(t)
        self.eof = self.socks[0].getsockname()[1]
        self.first = self.socks[1].getsockname()[1]

    def _serve(self, s: socket.socket, handler: Callable[[socket.socket], None]) -> None:
        for _ in range(64):
            try:
                c, _ = s.accept()
            except OSError:
                return
            c.settimeout(30)
            threading.Thread(target=self._guard, args=(handler, c), daemon=True).start()

    @staticmethod
    def _guard(handler: Callable[[socket.socket], None], c: socket.socket) -> None:
        with contextlib.suppress(OSError), c:
            handler(c)

    def _eof(self, c: socket.socket) -> None:
        h = hashlib.sha256()
        n = 0
        for _ in range(1 << 20):
            d = c.recv(1 << 16)
            if not d:
                break
            h.update(d)
            n += len(d)
        c.sendall(f"{n} {h.hexdigest()}\n".encode())

    def _first(self, c: socket.socket) -> None:
        c.sendall(b"hello")
        c.shutdown(socket.SHUT_WR)
        got = b""
        for _ in range(1000):
            d = c.recv(4096)
            if not d:
                break
            got += d
        self.late.append(got)

    def close(self) -> None:
        for s in self.socks:
            s.close()


async def _concurrent_echo(port: int, n: int) -> list[bool]:
    async def one(i: int) -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        payload = hashlib.sha256(str(i).encode()).digest() * 2048  # 64 KiB
        writer.write(payload)
        await writer.drain()
        got = await asyncio.wait_for(reader.readexactly(len(payload)), 60)
        writer.close()
        return got == payload

    return list(await asyncio.gather(*(one(i) for i in range(n))))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_forward_all_features(
    protocol: str,
    serve_factory: Callable[..., ServeInstance],
    targets: Targets,
    fastpf: Callable[..., Fastpf],
) -> None:
    half = HalfCloseTargets()
    try:
        srv = serve_factory(manifest=manifest(targets))
        fixed = free_port()
        closed = free_port()
        specs = [
            f"{fixed}:{targets.sink}",
            f":{targets.source}",
            f"0:{targets.echo}",
            f":{closed}",
            f":{half.eof}",
            f":{half.first}",
        ]
        pf = fastpf(srv.kubeconfig, "--protocol", protocol, "web-1", *specs, wait=len(specs))
        assert pf.local_port(targets.sink) == fixed
        # random local ports: both loopbacks share the first chosen port
        for remote in (targets.source, targets.echo):
            local = pf.local_port(remote)
            assert ("[::1]", local, remote) in pf.forwards
        # bulk both ways with sha256
        assert upload(fixed, BULK) == f"{BULK} {pattern_sha256(BULK)}"
        assert download(pf.local_port(targets.source), BULK) == (BULK, pattern_sha256(BULK))
        # many concurrent connections
        results = asyncio.run(_concurrent_echo(pf.local_port(targets.echo), CONCURRENT))
        assert all(results) and len(results) == CONCURRENT
        # a refused pod port is reported for that connection; the session survives
        with socket.create_connection(("127.0.0.1", pf.local_port(closed)), timeout=20) as s:
            assert s.recv(10) == b""
        assert echo_once(pf.local_port(targets.echo), b"after-refusal") == b"after-refusal"
        assert echo_once(pf.local_port(targets.echo), b"via-ipv6", host="::1") == b"via-ipv6"
        if protocol != "ws-channel":  # the channel protocol has no per-port half-close
            # local -> remote half-close: the target reads to EOF, then answers
            with socket.create_connection(("127.0.0.1", pf.local_port(half.eof)), timeout=20) as s:
                s.sendall(b"x" * 100000)
                s.shutdown(socket.SHUT_WR)
                reply = s.makefile("rb").readline().decode().strip()
            assert reply == f"100000 {hashlib.sha256(b'x' * 100000).hexdigest()}"
            # remote -> local half-close: we see EOF and can still send
            with socket.create_connection(
                ("127.0.0.1", pf.local_port(half.first)), timeout=20
            ) as s:
                got = b""
                for _ in range(100):
                    d = s.recv(100)
                    if not d:
                        break
                    got += d
                assert got == b"hello"
                s.sendall(b"late")
                s.shutdown(socket.SHUT_WR)
                s.settimeout(20)
                assert s.recv(10) == b""
            deadline = time.monotonic() + 10
            while not half.late and time.monotonic() < deadline:
                time.sleep(0.05)
            assert half.late == [b"late"]
        assert pf.proc.poll() is None, pf.output()
        assert pf.interrupt() == 0
        err = "\n".join(pf.stderr)
        assert f"an error occurred forwarding {pf.local_port(closed)} -> {closed}" in err, err
        assert "lost connection" not in err
        handling = [ln for ln in pf.stdout if ln.startswith("Handling connection for ")]
        assert len(handling) >= CONCURRENT + 4
    finally:
        half.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_targets_and_named_ports(
    protocol: str,
    serve_factory: Callable[..., ServeInstance],
    targets_factory: Callable[[str], Targets],
    fastpf: Callable[..., Fastpf],
) -> None:
    t1 = targets_factory("127.0.0.1")
    t2 = targets_factory("127.0.0.2")
    srv = serve_factory(manifest=manifest(t1, t2))
    proto = ("--protocol", protocol)
    # bare REMOTE forms (a name, a number) on a pod at another loopback address
    pf = fastpf(srv.kubeconfig, *proto, "pod/p2", "echo", str(t2.sink), wait=2)
    assert pf.forwards[0] == ("127.0.0.1", t2.echo, t2.echo)
    assert ("127.0.0.1", t2.sink, t2.sink) in pf.forwards
    assert echo_once(t2.echo, b"named") == b"named"
    assert upload(t2.sink, 1 << 20) == f"{1 << 20} {pattern_sha256(1 << 20)}"
    assert pf.interrupt() == 0
    # service: name -> targetPort name -> container port; local = service port number
    local = free_port()
    pf = fastpf(srv.kubeconfig, *proto, "svc/web", f"{local}:http", ":81", wait=2)
    assert pf.forwards[0] == ("127.0.0.1", local, t1.echo)
    assert echo_once(local, b"svc") == b"svc"
    assert upload(pf.local_port(t1.sink), 1 << 20) == f"{1 << 20} {pattern_sha256(1 << 20)}"
    assert pf.interrupt() == 0
    # deployment: selector -> pod; named port
    pf = fastpf(srv.kubeconfig, *proto, "deploy/web", ":echo", wait=1)
    assert echo_once(pf.local_port(t1.echo), b"deploy") == b"deploy"
    assert pf.interrupt() == 0


def _exec_plugin(tmp: Path, token_runs: list[str]) -> str:
    counter = tmp / "runs"
    script = tmp / "plugin.py"
    script.write_text(f"""#!{sys.executable}
import json, os
n = int(open({str(counter)!r}).read()) if os.path.exists({str(counter)!r}) else 0
open({str(counter)!r}, "w").write(str(n + 1))
tokens = {token_runs!r}
print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                   "status": {{"token": tokens[min(n, len(tokens) - 1)],
                               "expirationTimestamp": "2999-01-01T00:00:00Z"}}}}))
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_exec_plugin_rerun_after_401(
    tmp_path: Path,
    serve_factory: Callable[..., ServeInstance],
    targets: Targets,
    fastpf: Callable[..., Fastpf],
) -> None:
    srv = serve_factory("--token", "good-token")
    cfg = yaml.safe_load(srv.kubeconfig.read_text())
    cfg["users"][0]["user"] = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "interactiveMode": "Never",
            "command": _exec_plugin(tmp_path, ["stale-token", "good-token"]),
        }
    }
    kc = tmp_path / "kc-exec"
    kc.write_text(yaml.safe_dump(cfg))
    pf = fastpf(kc, "mypod", f":{targets.echo}", wait=1)
    assert echo_once(pf.local_port(targets.echo), b"exec") == b"exec"
    assert pf.interrupt() == 0
    # stale -> 401 -> re-run once; then cached for every later request and the upgrade
    assert (tmp_path / "runs").read_text() == "2"


def test_proxy_url_connect(
    tmp_path: Path, serve: ServeInstance, targets: Targets, fastpf: Callable[..., Fastpf]
) -> None:
    from tests.support.proxies import Proxy

    ready = threading.Event()
    box: dict[str, Any] = {}

    def run_proxy() -> None:
        loop = asyncio.new_event_loop()
        proxy = Proxy(kind="http")
        loop.run_until_complete(proxy.start())
        box["proxy"], box["loop"] = proxy, loop
        ready.set()
        loop.run_forever()
        loop.run_until_complete(proxy.stop())
        loop.close()

    th = threading.Thread(target=run_proxy, daemon=True)  # stopped in finally
    th.start()
    assert ready.wait(10)
    try:
        cfg = yaml.safe_load(serve.kubeconfig.read_text())
        cfg["clusters"][0]["cluster"]["proxy-url"] = f"http://127.0.0.1:{box['proxy'].port}"
        kc = tmp_path / "kc-proxy"
        kc.write_text(yaml.safe_dump(cfg))
        pf = fastpf(kc, "mypod", f":{targets.echo}", wait=1)
        assert echo_once(pf.local_port(targets.echo), b"proxied") == b"proxied"
        assert pf.interrupt() == 0
        # pod GETs and the upgrade all went through the proxy
        assert len(box["proxy"].targets) >= 2
        assert set(box["proxy"].targets) == {f"127.0.0.1:{serve.port}"}
    finally:
        box["loop"].call_soon_threadsafe(box["loop"].stop)
        th.join(10)


def test_library_api(serve: ServeInstance, targets: Targets) -> None:
    from fastpf.client import forward
    from fastpf.loop import run

    async def go() -> bytes:
        async with forward(
            "mypod", [f":{targets.echo}"], kubeconfig=str(serve.kubeconfig), protocol="spdy"
        ) as fwd:
            (port,) = fwd.bound_ports
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"lib")
            got = await asyncio.wait_for(reader.readexactly(3), 20)
            writer.close()
            return got

    assert run(go()) == b"lib"


def test_lost_connection_exits_1(
    serve: ServeInstance, targets: Targets, fastpf: Callable[..., Fastpf]
) -> None:
    # kubectl's behaviour is opt-in since fastpf reconnects (tests/client/test_reconnect.py).
    pf = fastpf(
        serve.kubeconfig,
        "--reconnect=false",
        "--protocol",
        "spdy",
        "mypod",
        f":{targets.echo}",
        wait=1,
    )
    serve.stop()
    assert pf.wait_exit(20) == 1
    assert pf.stderr[-1] == "error: lost connection to pod"


@pytest.mark.parametrize(
    "raw",
    ["/portForward/{ns}/{pod}", "/api/v1beta3/proxy/minions/node-1/portForward/default/mypod"],
)
def test_raw_path(
    raw: str, serve: ServeInstance, targets: Targets, fastpf: Callable[..., Fastpf]
) -> None:
    pf = fastpf(
        serve.kubeconfig,
        "--protocol",
        "spdy",
        "--raw-path",
        raw,
        "mypod",
        f":{targets.echo}",
        wait=1,
    )
    assert echo_once(pf.local_port(targets.echo), b"raw") == b"raw"
    assert pf.interrupt() == 0


@pytest.mark.parametrize("env,want", [("", "websocket"), ("false", "spdy"), ("FALSE", "spdy")])
def test_auto_protocol_env(
    env: str, want: str, serve: ServeInstance, targets: Targets, fastpf: Callable[..., Fastpf]
) -> None:
    pf = fastpf(
        serve.kubeconfig,
        "-v",
        "4",
        "mypod",
        f":{targets.echo}",
        wait=1,
        env={"KUBECTL_PORT_FORWARD_WEBSOCKETS": env},
    )
    assert echo_once(pf.local_port(targets.echo), b"auto") == b"auto"
    assert pf.interrupt() == 0
    assert any(ln.endswith(f"with protocol {want}") for ln in pf.stderr), pf.stderr
