"""fastpf client: kubectl port-forward compatible CLI and library. See docs/ARCHITECTURE.md.

`forward` is imported lazily so `import fastpf.client` stays cheap and free of the engine.
"""

from __future__ import annotations

from typing import Any


def forward(*args: Any, **kwargs: Any) -> Any:
    """`async with fastpf.client.forward(target, ports, ...) as fwd:` (see client/forward.py)."""
    from fastpf.client.forward import forward as _forward

    return _forward(*args, **kwargs)


__all__ = ["forward"]
