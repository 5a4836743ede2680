"""pytest plugin (registered through the `pytest11` entry point when fastpf is installed): a
fixture that forwards ports of a cluster for the duration of one test.

    def test_api(fastpf_forward):
        db = fastpf_forward("svc/db", "0:5432", namespace="prod")
        conn = psycopg.connect(host="127.0.0.1", port=db.local_port)

The cluster is the usual kubeconfig ($KUBECONFIG, ~/.kube/config), or `--fastpf-kubeconfig`,
`--fastpf-context`, `--fastpf-namespace` on the pytest command line (or the same names, with
underscores, as ini options). Every forward a test started is stopped at its teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # pragma: no cover
    from fastpf.api import PortForward

_SETTINGS = ("kubeconfig", "context", "namespace")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fastpf", "fastpf port-forwards (fastpf_forward fixture)")
    for name in _SETTINGS:
        group.addoption(
            f"--fastpf-{name}",
            default=None,
            metavar=name.upper(),
            help=f"default {name} of fastpf_forward",
        )
        parser.addini(f"fastpf_{name}", f"default {name} of fastpf_forward", default=None)


def _default(config: pytest.Config, name: str) -> str | None:
    value = config.getoption(f"--fastpf-{name}") or config.getini(f"fastpf_{name}")
    return str(value) if value else None


@pytest.fixture
def fastpf_forward(request: pytest.FixtureRequest) -> Iterator[Callable[..., PortForward]]:
    """`fastpf_forward(target, ports, **options) -> PortForward`, started (its `local_port`
    is ready to connect to) and stopped when the test ends. Options as `fastpf.forward`."""
    from fastpf.api import forward

    started: list[PortForward] = []

    def start(target: str, ports: str | int | Sequence[str | int], **options: Any) -> PortForward:
        for name in _SETTINGS:
            if options.get(name) is None:
                options[name] = _default(request.config, name)
        fwd = forward(target, ports, **options)
        fwd.__enter__()
        started.append(fwd)
        return fwd

    yield start
    for fwd in reversed(started):
        fwd.__exit__(None, None, None)
