"""`fastpf serve`: a local Kubernetes-compatible API endpoint whose pods forward to loopback.

    fastpf serve [--listen HOST:PORT] [--kubeconfig-out PATH] [-f MANIFESTS.yaml ...]
                 [--no-tls] [--token TOKEN] [--idle-timeout SECONDS] [--silent-errors]

Defaults: listen on 127.0.0.1:6443, TLS with a certificate generated at start, a random bearer
token. Once accepting, the kubeconfig (server URL, CA, token, context with namespace
`default`) is written atomically to --kubeconfig-out (without it: a private temporary file,
removed at exit) and one line says where it serves. SIGINT/SIGTERM close every session; exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from fastpf.serve import certs, kubeconfig
from fastpf.serve.api import Api
from fastpf.serve.cluster import Cluster, ManifestError
from fastpf.serve.server import Server, quiet_exception_handler
from fastpf.types import ServerOptions

DEFAULT_LISTEN = "127.0.0.1:6443"


class UsageError(Exception):
    """Bad command line; str() is the one-line message."""


@dataclass
class Config:
    host: str
    port: int
    kubeconfig_out: Path | None = None
    manifests: list[str] = field(default_factory=list)
    tls: bool = True
    token: str | None = None
    idle_timeout: float = 4 * 3600.0
    silent_errors: bool = False


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + message
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fastpf serve", description="Local Kubernetes-compatible port-forward endpoint.")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"address to serve on (default {DEFAULT_LISTEN}; port 0 picks a free port)")
    p.add_argument("--kubeconfig-out", metavar="PATH", help="write a kubeconfig for this server here")
    p.add_argument("-f", "--filename", dest="manifests", action="append", default=[], metavar="MANIFESTS.yaml",
                   help="Pods/Services/Deployments/ReplicaSets/StatefulSets that exist (repeatable); "
                        "without it every pod name exists and forwards to 127.0.0.1")
    p.add_argument("--no-tls", action="store_true", help="plain HTTP instead of TLS")
    p.add_argument("--token", help="bearer token clients must send (required off loopback)")
    p.add_argument("--idle-timeout", type=float, default=4 * 3600.0, metavar="SECONDS",
                   help="close a port-forward session idle this long (default 14400, kubelet's 4 h)")
    p.add_argument("--silent-errors", action="store_true",
                   help="on a failed pod dial reset the streams without error text "
                        "(kubectl then keeps its session)")
    return p


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise UsageError(f"--listen {text!r}: expected HOST:PORT (e.g. {DEFAULT_LISTEN})")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UsageError(f"--listen {text!r}: port must be a number 0..65535")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UsageError(f"--listen {text!r}: bad IPv6 address (write [ADDR]:PORT)") from None
    return host, int(port_text)


def is_loopback_host(host: str) -> bool:
    """True when every address `host` names is a loopback address."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UsageError(f"--listen: cannot resolve host {host!r}: {exc.strerror or exc}") from None
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def parse_args(argv: list[str]) -> Config:
    args = _parser().parse_args(argv)
    host, port = parse_listen(args.listen)
    if args.token is not None:
        token = args.token.strip()
        if not token or any(ch.isspace() or ord(ch) < 0x21 or ord(ch) > 0x7E for ch in token):
            raise UsageError("--token must be non-empty printable ASCII without spaces")
    if not is_loopback_host(host) and not args.token:
        raise UsageError(f"refusing to serve on non-loopback address {host} without --token")
    if args.idle_timeout <= 0:
        raise UsageError("--idle-timeout must be > 0")
    return Config(
        host=host,
        port=port,
        kubeconfig_out=Path(args.kubeconfig_out) if args.kubeconfig_out else None,
        manifests=list(args.manifests),
        tls=not args.no_tls,
        token=args.token,
        idle_timeout=args.idle_timeout,
        silent_errors=args.silent_errors,
    )


def _url_host(address: str) -> str:
    """The address clients should dial: wildcard binds are reached on loopback."""
    if address in ("0.0.0.0", ""):
        return "127.0.0.1"
    if address == "::":
        return "[::1]"
    return f"[{address}]" if ":" in address else address


async def serve(config: Config, cluster: Cluster) -> int:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(quiet_exception_handler)
    # Signals first: once the serving line is out, a SIGTERM must mean a clean exit 0.
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Windows has no add_signal_handler: KeyboardInterrupt still ends the run there.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    token = config.token or secrets.token_urlsafe(32)
    material = certs.generate([config.host]) if config.tls else None
    ssl_context = certs.server_context(material) if material else None
    anonymous = not config.tls and config.token is None and is_loopback_host(config.host)
    api = Api(cluster, token, allow_anonymous=anonymous)
    options = ServerOptions(idle_timeout=config.idle_timeout, silent_errors=config.silent_errors)
    server = Server(api, ssl_context, options)
    try:
        bound = await server.start(config.host, config.port)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(f"error: cannot listen on {config.host}:{config.port}: {reason.lower()}", file=sys.stderr)
        return 1
    address, port = bound[0]
    url = f"{'https' if config.tls else 'http'}://{_url_host(address)}:{port}"
    api.server_address = f"{_url_host(address)}:{port}"

    temp_dir: str | None = None
    path = config.kubeconfig_out
    if path is None:
        temp_dir = tempfile.mkdtemp(prefix="fastpf-serve-")
        path = Path(temp_dir) / "kubeconfig"
    try:
        kubeconfig.write_atomic(path, kubeconfig.render(url, token, material.ca_pem if material else None))
    except OSError as exc:
        print(f"error: cannot write kubeconfig {path}: {exc.strerror or exc}", file=sys.stderr)
        await server.shutdown()
        return 1
    print(f"Serving Kubernetes API on {url} (kubeconfig: {path})", flush=True)
    if not config.tls and not anonymous:
        # client-go only attaches user credentials to TLS transports: say so before a user
        # wonders why kubectl gets 401 here.
        print("fastpf serve: note: kubectl sends no bearer token over plain http://, so it gets 401 with "
              "--no-tls --token (fastpf and the Python kubernetes client do send it)",
              file=sys.stderr, flush=True)

    try:
        await stop.wait()
    finally:
        await server.shutdown()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        _parser().print_help()
        return 0
    try:
        config = parse_args(argv)
        cluster = Cluster.from_files(config.manifests) if config.manifests else Cluster()
    except (UsageError, ManifestError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from fastpf.limits import raise_nofile_limit
    from fastpf.loop import run

    raise_nofile_limit()  # as Go servers do: thousands of connections, not 1024
    try:
        return run(serve(config, cluster))
    except KeyboardInterrupt:  # signal arrived before the handlers were installed
        return 0
    except Exception as exc:  # last resort: one line, never a traceback
        print(f"error: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        sys.stdout.flush()
