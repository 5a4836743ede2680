"""fastpf: a high-throughput, drop-in replacement for `oc/kubectl port-forward`.

    async with fastpf.forward("svc/db", "0:5432", namespace="prod") as fwd:
        print(fwd.local_port)

`fastpf.forward`, `fastpf.PortForward` and `fastpf.ClientError` load on first use, so
`import fastpf` stays cheap for the command line and `fastpf serve`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from fastpf.api import PortForward, forward
    from fastpf.errors import ClientError

__all__ = ["ClientError", "PortForward", "__version__", "forward"]


def __getattr__(name: str) -> Any:
    # No submodule is named like these, so importing one never replaces them (see
    # fastpf.client.__init__ for what happens otherwise).
    if name in ("forward", "PortForward"):
        from fastpf import api

        return getattr(api, name)
    if name == "ClientError":
        from fastpf.errors import ClientError

        return ClientError
    raise AttributeError(f"module 'fastpf' has no attribute {name!r}")
