"""`fastpf version` and `fastpf --version`: the client's version and, where a cluster is
reachable, the server's (GET /version), in kubectl's words and layout.

`version` behaves as `kubectl version`: an unreachable or refusing server prints the client
version, then kubectl's error line, exit 1; `--client` skips the server; `-o json|yaml`.
`--version` is the quick form for humans: the same lines, the server only if it answers within
a couple of seconds, and always exit 0.
"""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import dataclass
from typing import Any

from fastpf import __version__
from fastpf.client.args import Options, parse_flags
from fastpf.client.console import Console
from fastpf.errors import ClientError, FastpfError, UsageError

QUICK_TIMEOUT = 2.0  # --version waits this long for a server at most


@dataclass
class VersionOptions(Options):
    client: bool = False
    version_output: str = ""


_LONGS = {"client": ("client", "bool"), "output": ("version_output", "choice:json,yaml")}


def client_info() -> dict[str, str]:
    """The client's version object, with kubectl's keys where they mean something here."""
    major, minor = (__version__.split(".") + ["0", "0"])[:2]
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return {
        "major": major,
        "minor": minor,
        "gitVersion": f"v{__version__}",
        "pythonVersion": platform.python_version(),
        "platform": f"{sys.platform}/{machine}",
    }


async def server_info(opts: Options, timeout: float | None = None) -> dict[str, Any]:
    """GET /version with the kubeconfig and flags of `opts`. Raises ClientError."""
    from fastpf.client.api import ApiClient
    from fastpf.client.kubeconfig import load_config

    cfg = load_config(opts.config_overrides())
    api = ApiClient(cfg, request_timeout=timeout or opts.request_timeout)
    try:
        info = await api.get("/version")
    finally:
        await api.close()
    if not isinstance(info, dict) or "gitVersion" not in info:
        raise ClientError("the server's /version answer has no gitVersion")
    return info


def _render(client: dict[str, str], server: dict[str, Any] | None, output: str) -> str:
    if output == "json":
        doc: dict[str, Any] = {"clientVersion": client}
        if server is not None:
            doc["serverVersion"] = server
        return json.dumps(doc, indent=2)
    if output == "yaml":
        import yaml

        doc = {"clientVersion": client}
        if server is not None:
            doc["serverVersion"] = server
        return yaml.safe_dump(doc, sort_keys=False).rstrip("\n")
    lines = [f"Client Version: {client['gitVersion']}"]
    if server is not None:
        lines.append(f"Server Version: {server.get('gitVersion', '')}")
    return "\n".join(lines)


def main(argv: list[str], console: Console, *, quick: bool = False) -> int:
    """`fastpf version [flags]` (quick=False) or `fastpf --version` (quick=True)."""
    from fastpf.loop import run

    opts = VersionOptions()
    try:
        positionals = parse_flags(argv, opts, _LONGS)
    except UsageError as exc:
        console.error(exc.line)
        return exc.exit_code
    if positionals and not quick:
        console.error(f'error: unknown command "{positionals[0]}" for "fastpf version"')
        return 1
    client = client_info()
    server: dict[str, Any] | None = None
    failure: str | None = None
    if not opts.client:
        try:
            server = run(server_info(opts, QUICK_TIMEOUT if quick else None))
        except ClientError as exc:
            failure = exc.line
        except (FastpfError, OSError) as exc:
            failure = f"error: {exc}"
    output = "" if quick else opts.version_output
    console.usage(_render(client, server, output))
    if failure is not None and not quick:
        console.error(failure)
        return 1
    return 0
