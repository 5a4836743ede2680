"""Entry point of `fastpf` and `kubectl-fastpf`.

`fastpf serve ...` runs the local Kubernetes-compatible endpoint; `version`, `completion` and
cobra's hidden `__complete` are subcommands as in kubectl; anything else is the port-forward
client (a pod literally named "serve", "version" or "completion" is reached as `pod/NAME`).
"""

from __future__ import annotations

import os
import sys


def program_name(argv0: str | None = None) -> str:
    """What the user typed: `kubectl fastpf` when run as kubectl's plugin (kubectl-fastpf)."""
    base = os.path.basename(argv0 if argv0 is not None else sys.argv[0])
    return (
        "kubectl fastpf"
        if base.startswith(("kubectl-fastpf", "kubectl_complete-fastpf"))
        else "fastpf"
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    prog = program_name()
    if args and args[0] == "serve":
        if "--version" in args[1:]:
            from fastpf.serve.version import print_version

            return print_version()
        from fastpf.serve.main import main as serve_main

        return serve_main(args[1:])
    if args and args[0] in ("version", "completion", "__complete", "__completeNoDesc"):
        from fastpf.client.console import Console

        if args[0] == "version":
            from fastpf.client import version

            return version.main(args[1:], Console())
        from fastpf.client import completion

        return completion.main(args, Console(), prog)
    from fastpf.client.args import positionals_of

    if positionals_of(args) == ["version"]:  # `fastpf --kubeconfig K version`, as kubectl takes it
        from fastpf.client import version
        from fastpf.client.console import Console

        rest = list(args)
        rest.remove("version")
        return version.main(rest, Console())
    from fastpf.client.main import main as client_main

    return client_main(args, prog)
