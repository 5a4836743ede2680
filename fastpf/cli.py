"""Entry point of `fastpf` and `kubectl-fastpf`.

`fastpf serve ...` runs the local Kubernetes-compatible endpoint; anything else is the
port-forward client (a pod literally named "serve" is reached as `pod/serve`).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "serve":
        from fastpf.serve.main import main as serve_main

        return serve_main(args[1:])
    from fastpf.client.main import main as client_main

    return client_main(args)
