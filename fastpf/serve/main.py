"""`fastpf serve`: a local Kubernetes-compatible API endpoint whose pods forward to loopback.

    fastpf serve [--listen HOST:PORT] [--kubeconfig-out PATH] [-f MANIFESTS.yaml ...]
                 [--pod-address ADDR] [--no-tls] [--token TOKEN] [--tls-dir DIR]
                 [--idle-timeout SECONDS] [--silent-errors] [-v N]

Defaults: listen on 127.0.0.1:6443, TLS with a certificate generated at start, a random bearer
token, pods on 127.0.0.2. Once accepting, the kubeconfig (server URL, CA, token, context with
namespace `default`) is written atomically to --kubeconfig-out (without it: a private temporary
file, removed at exit) and one line says where it serves. SIGINT/SIGTERM close every session;
exit 0. SIGHUP reads the -f manifests again (parsed off the event loop).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from fastpf.errors import CertError, LimitExceeded, ManifestError, ServeUsageError
from fastpf.serve import certs, kubeconfig, logs, manifests, sessions
from fastpf.serve.api import Api
from fastpf.serve.cluster import DEFAULT_POD_ADDRESS, Cluster
from fastpf.serve.objects import is_loopback_address
from fastpf.serve.server import Server, quiet_exception_handler
from fastpf.types import ServerOptions

DEFAULT_LISTEN = "127.0.0.1:6443"
log = logging.getLogger("fastpf.serve.main")


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
    pod_address: str = DEFAULT_POD_ADDRESS
    verbosity: int = 0
    tls_dir: Path | None = None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + message
        raise ServeUsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="fastpf serve", description="Local Kubernetes-compatible port-forward endpoint."
    )
    p.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"address to serve on (default {DEFAULT_LISTEN}; port 0 picks a free port)",
    )
    p.add_argument(
        "--kubeconfig-out", metavar="PATH", help="write a kubeconfig for this server here"
    )
    p.add_argument(
        "-f",
        "--filename",
        dest="manifests",
        action="append",
        default=[],
        metavar="MANIFESTS.yaml",
        help="Pods/Services/Deployments/ReplicaSets/StatefulSets that exist (repeatable); "
        "without it every pod name exists; SIGHUP reads them again",
    )
    p.add_argument(
        "--pod-address",
        default=DEFAULT_POD_ADDRESS,
        metavar="ADDR",
        help=f"loopback address pod ports are dialled on (default {DEFAULT_POD_ADDRESS}, not 127.0.0.1 "
        "where port-forward clients listen); the annotation fastpf.io/address overrides it per pod",
    )
    p.add_argument(
        "--no-tls",
        action="store_true",
        help="plain HTTP instead of TLS (loopback only; requests without credentials are admitted, "
        "as kubectl and fastpf send none over http://)",
    )
    p.add_argument("--token", help="bearer token clients must send (required off loopback)")
    p.add_argument(
        "--tls-dir",
        metavar="DIR",
        help="keep the CA in DIR (ca.crt, ca.key; made on first use) so a restarted serve is "
        "trusted by its previous kubeconfig; default: a new CA at every start",
    )
    p.add_argument(
        "-v",
        "--v",
        dest="verbosity",
        type=_verbosity,
        default=0,
        metavar="N",
        help="log verbosity: 0 sessions and failed pod dials, 2 changes made through the API, "
        "4 requests, 8 request headers (credentials masked)",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=4 * 3600.0,
        metavar="SECONDS",
        help="close a port-forward session idle this long (default 14400, kubelet's 4 h)",
    )
    p.add_argument(
        "--silent-errors",
        action="store_true",
        help="on a failed pod dial reset the streams without error text "
        "(kubectl then keeps its session)",
    )
    return p


def _verbosity(text: str) -> int:
    text = text.lstrip("=")  # kubectl's -v=4 form
    if not text.isdigit():
        raise argparse.ArgumentTypeError(
            f"invalid verbosity {text!r}: expected a number 0..{logs.MAX_VERBOSITY}"
        )
    return int(text)


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ServeUsageError(f"--listen {text!r}: expected HOST:PORT (e.g. {DEFAULT_LISTEN})")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ServeUsageError(f"--listen {text!r}: port must be a number 0..65535")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ServeUsageError(
                f"--listen {text!r}: bad IPv6 address (write [ADDR]:PORT)"
            ) from None
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
        raise ServeUsageError(
            f"--listen: cannot resolve host {host!r}: {exc.strerror or exc}"
        ) from None
    return bool(infos) and all(
        ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos
    )


def parse_args(argv: list[str]) -> Config:
    args = _parser().parse_args(argv)
    host, port = parse_listen(args.listen)
    if args.token is not None:
        token = args.token.strip()
        if not token or any(ch.isspace() or ord(ch) < 0x21 or ord(ch) > 0x7E for ch in token):
            raise ServeUsageError("--token must be non-empty printable ASCII without spaces")
    loopback = is_loopback_host(host)
    if not loopback and args.no_tls:
        # client-go (kubectl) and fastpf send no credentials over http://: off loopback that
        # would be an open API server, or a token nobody can send.
        raise ServeUsageError(
            f"refusing --no-tls on non-loopback address {host}: kubectl and fastpf send no "
            "credentials over http://, so nothing could be protected (use TLS, the default)"
        )
    if not loopback and not args.token:
        raise ServeUsageError(f"refusing to serve on non-loopback address {host} without --token")
    if not is_loopback_address(args.pod_address):
        raise ServeUsageError(
            f"--pod-address {args.pod_address!r}: must be a loopback address (e.g. 127.0.0.2)"
        )
    if args.idle_timeout <= 0:
        raise ServeUsageError("--idle-timeout must be > 0")
    return Config(
        host=host,
        port=port,
        kubeconfig_out=Path(args.kubeconfig_out) if args.kubeconfig_out else None,
        manifests=list(args.manifests),
        tls=not args.no_tls,
        token=args.token,
        idle_timeout=args.idle_timeout,
        silent_errors=args.silent_errors,
        pod_address=args.pod_address,
        verbosity=args.verbosity,
        tls_dir=Path(args.tls_dir) if args.tls_dir else None,
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
    reloader = Reloader(config.manifests, cluster)
    with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
        loop.add_signal_handler(signal.SIGHUP, reloader.trigger)
    cluster.subscribe(sessions.on_cluster_event)
    token = config.token or secrets.token_urlsafe(32)
    material = None
    if config.tls:
        try:
            ca = (
                certs.persistent_ca(config.tls_dir)
                if config.tls_dir is not None
                else certs.new_ca()
            )
        except CertError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        material = certs.issue(ca, [config.host])
    ssl_context = certs.server_context(material) if material else None
    anonymous = not config.tls  # loopback only (parse_args): client-go sends no token over http://
    api = Api(cluster, token, allow_anonymous=anonymous)
    options = ServerOptions(idle_timeout=config.idle_timeout, silent_errors=config.silent_errors)
    server = Server(api, ssl_context, options)
    try:
        bound = await server.start(config.host, config.port)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(
            f"error: cannot listen on {config.host}:{config.port}: {reason.lower()}",
            file=sys.stderr,
        )
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
        kubeconfig.write_atomic(
            path, kubeconfig.render(url, token, material.ca_pem if material else None)
        )
    except OSError as exc:
        print(f"error: cannot write kubeconfig {path}: {exc.strerror or exc}", file=sys.stderr)
        await server.shutdown()
        return 1
    print(f"Serving Kubernetes API on {url} (kubeconfig: {path})", flush=True)
    if not config.tls and config.token is not None:
        # client-go only attaches user credentials to TLS transports, and fastpf does the same.
        print(
            "fastpf serve: note: --no-tls: kubectl and fastpf send no credentials over http://, so requests "
            "without a token are admitted on this loopback address; a wrong token is still refused",
            file=sys.stderr,
            flush=True,
        )

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
        # Manifests are read before serving starts: a big one never holds up requests.
        cluster = (
            Cluster.from_files(config.manifests, config.pod_address)
            if config.manifests
            else Cluster(pod_address=config.pod_address)
        )
    except (ServeUsageError, ManifestError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    logs.setup(config.verbosity)
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


class Reloader:
    """SIGHUP: read the -f manifests again in a worker thread (a big file never blocks the
    loop), then apply the difference on the loop. A bad file changes nothing and says why."""

    def __init__(self, paths: list[str], cluster: Cluster) -> None:
        self.paths = paths
        self.cluster = cluster
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def trigger(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True  # one more pass after the running one: the file changed again
            return
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        for _ in range(8):  # bounded: signals arriving during a reload fold into one more pass
            self._again = False
            await self.reload()
            if not self._again:
                return

    async def reload(self) -> None:
        if not self.paths:
            log.info("SIGHUP: no -f manifests to reload")
            return
        loop = asyncio.get_running_loop()
        try:
            items = await loop.run_in_executor(None, manifests.load_files, self.paths)
            summary = await self.cluster.reload_async(items)
        except (ManifestError, LimitExceeded) as exc:
            log.error("reload failed, objects unchanged: %s", exc)
            return
        except Exception as exc:  # never a traceback, never the end of serving
            log.error("reload failed: %s: %s", exc.__class__.__name__, exc)
            return
        log.info("reloaded %s: %s", ", ".join(self.paths), summary)
