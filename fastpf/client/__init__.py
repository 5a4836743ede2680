"""fastpf client: kubectl port-forward compatible CLI and library. See docs/ARCHITECTURE.md.

`fastpf.client.forward(target, ports, ...)` is the library entry (an async context manager).
It is bound here after the submodule of the same name is imported: importing a submodule sets
the package attribute to the module, so a lazy import inside a wrapper would replace the
function with the module the first time it ran.
"""

from __future__ import annotations

from fastpf.client.forward import forward

__all__ = ["forward"]
