"""The Python API (`fastpf.forward`: `async with` and `with`) and the pytest plugin's fixture,
against `fastpf serve`."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

import fastpf
from tests.support.patterns import echo_once
from tests.support.processes import REPO, subprocess_env
from tests.support.serve_process import ServeInstance
from tests.support.targets import Targets, manifest

pytest_plugins = ["pytester"]


@pytest.fixture
def cluster(serve_factory: Callable[..., ServeInstance], targets: Targets) -> ServeInstance:
    srv: ServeInstance = serve_factory(manifest=manifest(targets))
    return srv


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_async_with(cluster: ServeInstance, targets: Targets) -> None:
    events: list[dict[str, Any]] = []

    async def main() -> tuple[int, list[dict[str, Any]]]:
        async with fastpf.forward(
            "web-1", f"0:{targets.echo}", kubeconfig=str(cluster.kubeconfig), on_event=events.append
        ) as fwd:
            assert fwd.remote_ports == [targets.echo] and fwd.pod == "web-1"
            assert fwd.namespace == "default" and fwd.address == "127.0.0.1"
            reader, writer = await asyncio.open_connection("127.0.0.1", fwd.local_port)
            writer.write(b"x" * 300)
            assert await reader.readexactly(300) == b"x" * 300
            writer.close()
            await writer.wait_closed()
            for _ in range(200):  # bounded: until the forward saw the connection end
                if fwd.stats()[0]["active"] == 0:
                    break
                await asyncio.sleep(0.02)
            return fwd.local_port, fwd.stats()

    port, stats = asyncio.run(main())
    assert stats == [
        {
            "local_port": port,
            "remote_port": targets.echo,
            "active": 0,
            "connections": 1,
            "bytes_to_pod": 300,
            "bytes_from_pod": 300,
            "errors": 0,
            "last_error": "",
            "reconnects": 0,
        }
    ]
    assert _refused(port)  # stopped with the block
    names = [e["event"] for e in events]
    assert names[:3] == ["listening", "listening", "ready"]
    assert names[3:] == ["connection_opened", "connection_closed"]
    assert all(
        e["namespace"] == "default" and e["pod"] == "web-1" for e in events if e["event"] != "ready"
    )


def test_with_from_plain_code(cluster: ServeInstance, targets: Targets) -> None:
    before = threading.active_count()
    with fastpf.forward(
        "svc/web",
        [":http", ":up"],
        kubeconfig=str(cluster.kubeconfig),
        address="127.0.0.1",
        protocol="spdy",
    ) as fwd:
        assert fwd.remote_ports == [targets.echo, targets.sink]  # the service's target ports
        assert echo_once(fwd.local_port, b"sync") == b"sync"
        assert fwd.url("/x") == f"http://127.0.0.1:{fwd.local_port}/x"
        assert fwd.url(port_index=1).endswith(f":{fwd.local_ports[1]}/")
        assert threading.active_count() == before + 1  # the forward's loop thread
    assert _refused(fwd.local_ports[1])
    assert threading.active_count() == before
    assert fwd.stats()[0]["connections"] == 1  # the counts outlive the forward


def test_errors_raise_with_kubectls_message(cluster: ServeInstance) -> None:
    with (
        pytest.raises(fastpf.ClientError) as ei,
        fastpf.forward("nope", "80", kubeconfig=str(cluster.kubeconfig)),
    ):
        pass
    assert ei.value.line == 'Error from server (NotFound): pods "nope" not found'

    async def main() -> None:
        async with fastpf.forward("web-1", "70000", kubeconfig=str(cluster.kubeconfig)):
            pass

    with pytest.raises(fastpf.ClientError, match="error parsing local port '70000'"):
        asyncio.run(main())
    with pytest.raises(RuntimeError, match="not running"):
        _ = fastpf.forward("web-1", "80").local_port
    with (
        pytest.raises(TypeError, match="unknown option 'bogus'"),
        fastpf.forward("web-1", "80", kubeconfig=str(cluster.kubeconfig), bogus=1),
    ):
        pass


def test_api_is_typed(tmp_path: Path) -> None:
    """mypy accepts typical use and rejects a misuse (the package ships py.typed)."""
    good = tmp_path / "good.py"
    good.write_text(
        textwrap.dedent("""
        import asyncio
        import fastpf

        async def main() -> int:
            async with fastpf.forward("svc/db", "0:5432", namespace="prod", context="c") as fwd:
                port: int = fwd.local_port
                return port

        def sync() -> str:
            with fastpf.forward("deploy/web", ["8080:80"]) as fwd:
                return fwd.url("/")
    """)
    )
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import fastpf\n\ndef f() -> str:\n    with fastpf.forward('x', '1') as fwd:\n"
        "        return fwd.local_port\n"
    )
    cmd = [sys.executable, "-m", "mypy", "--no-incremental", "--strict", "--follow-imports=silent"]
    ok = subprocess.run(
        [*cmd, str(good)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
        env=subprocess_env(),
    )
    assert ok.returncode == 0, ok.stdout
    ko = subprocess.run(
        [*cmd, str(bad)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
        env=subprocess_env(),
    )
    assert (
        ko.returncode == 1
        and 'Incompatible return value type (got "int", expected "str")' in ko.stdout
    )


def test_pytest_plugin_entry_point_and_fixture(
    pytester: pytest.Pytester, cluster: ServeInstance, targets: Targets
) -> None:
    plugin = [e for e in entry_points(group="pytest11") if e.name == "fastpf"]
    assert [e.value for e in plugin] == ["fastpf.pytest_plugin"]  # registered when installed
    pytester.makepyfile(
        test_uses_fixture=f"""
        import socket

        def test_echo(fastpf_forward):
            fwd = fastpf_forward("web-1", ":{targets.echo}")
            with socket.create_connection(("127.0.0.1", fwd.local_port), timeout=20) as s:
                s.sendall(b"fixture")
                assert s.recv(100) == b"fixture"
            assert fwd.namespace == "default"

        def test_two_forwards_and_ini_namespace(fastpf_forward):
            a = fastpf_forward("web-1", ":{targets.echo}")
            b = fastpf_forward("svc/web", "0:http")
            assert a.local_port != b.local_port
    """
    )
    pytester.makeini("[pytest]\nfastpf_namespace = default\n")
    result = pytester.runpytest_subprocess(
        "--fastpf-kubeconfig", str(cluster.kubeconfig), "-p", "no:cacheprovider", "-q"
    )
    result.assert_outcomes(passed=2)
    assert targets.connections >= 1
