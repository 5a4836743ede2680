"""Command line of the client: kubectl port-forward's flags, parsed the way pflag does.

A small pflag-compatible parser rather than argparse: kubectl users script against its exact
error lines (`error: unknown flag: --x`, `flag needs an argument: 'n' in -n`), accept flags
interleaved with positionals, and `--flag=value` / `-nvalue` forms; argparse differs on all three.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fastpf.errors import UsageError
from fastpf.goparity import parse_bool, parse_duration, parse_int, parse_uint16
from fastpf.types import ConfigOverrides, ForwardSpec

PROTOCOLS = ("auto", "spdy", "websocket", "ws-channel")
OUTPUTS = ("text", "json")  # -o / --events: kubectl's lines, or one JSON object per event
PROFILES = ("none", "cpu", "heap", "goroutine", "threadcreate", "block", "mutex")
DEFAULT_POD_RUNNING_TIMEOUT = 60.0
# Reconnect / dead-peer / pool flags (issue 12; defaults explained in fastpf.client.reconnect
# and the README's "Forwards that stay up" section).
DEFAULT_PING_INTERVAL = 5.0
DEFAULT_PING_TIMEOUT = 30.0
DEFAULT_CONNECTIONS = 4
MAX_CONNECTIONS = 64


@dataclass
class Options:
    target: str = ""
    ports: list[str] = field(default_factory=list)
    namespace: str | None = None
    addresses: str = "localhost"
    pod_running_timeout: float = DEFAULT_POD_RUNNING_TIMEOUT
    kubeconfig: str | None = None
    context: str | None = None
    cluster: str | None = None
    user: str | None = None
    server: str | None = None
    token: str | None = None
    certificate_authority: str | None = None
    client_certificate: str | None = None
    client_key: str | None = None
    insecure_skip_tls_verify: bool | None = None
    tls_server_name: str | None = None
    username: str | None = None
    password: str | None = None
    request_timeout: float = 0.0  # 0: none, like kubectl's default "0"
    verbosity: int = 0
    protocol: str = "auto"
    quiet: bool = False
    raw_path: str | None = None
    help: bool = False
    reconnect: bool = True
    ping_interval: float = DEFAULT_PING_INTERVAL
    ping_timeout: float = DEFAULT_PING_TIMEOUT
    connections: int = DEFAULT_CONNECTIONS
    # Impersonation (Impersonate-User / -Group / -Uid / -Extra-KEY headers, over TLS only).
    impersonate: str | None = None
    impersonate_groups: list[str] = field(default_factory=list)
    impersonate_uid: str | None = None
    impersonate_extra: list[str] = field(default_factory=list)  # "key=value" (kubectl 1.34+)
    proxy_url: str | None = None  # kubectl 1.34+: overrides the cluster's proxy-url
    # kubectl flags accepted for parity; no effect on a port-forward (README "Flag parity").
    cache_dir: str | None = None
    disable_compression: bool = False
    warnings_as_errors: bool = False
    match_server_version: bool = False
    profile: str = "none"
    profile_output: str = "profile.pprof"
    log_flush_frequency: float = 5.0
    vmodule: str = ""
    kuberc: str | None = None
    # fastpf's own (never changing kubectl's output unless given)
    version: bool = False
    output: str = "text"
    stats: bool = False
    stats_interval: float = 0.0  # 0: 1 s on a terminal, 10 s otherwise
    ready_file: str | None = None
    config_file: str | None = None

    def forward_spec(self) -> ForwardSpec:
        """The forward these flags describe, for `forward.prepare`."""
        return ForwardSpec(
            target=self.target,
            ports=tuple(self.ports),
            addresses=self.addresses,
            protocol=self.protocol,
            overrides=self.config_overrides(),
            raw_path=self.raw_path,
            request_timeout=self.request_timeout,
            pod_running_timeout=self.pod_running_timeout,
            reconnect=self.reconnect,
            connections=self.connections,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
        )

    def config_overrides(self) -> ConfigOverrides:
        """The flags that override the kubeconfig, for `kubeconfig.load_config`."""
        return ConfigOverrides(
            kubeconfig=self.kubeconfig,
            context=self.context,
            cluster=self.cluster,
            user=self.user,
            namespace=self.namespace,
            server=self.server,
            token=self.token,
            username=self.username,
            password=self.password,
            certificate_authority=self.certificate_authority,
            client_certificate=self.client_certificate,
            client_key=self.client_key,
            insecure_skip_tls_verify=self.insecure_skip_tls_verify,
            tls_server_name=self.tls_server_name,
            proxy_url=self.proxy_url,
            impersonate=self.impersonate,
            impersonate_groups=tuple(self.impersonate_groups),
            impersonate_uid=self.impersonate_uid,
            impersonate_extra=tuple(self.impersonate_extra),
        )


# name -> (attribute, kind). kind: str, bool, duration, timeout, int, protocol, list (repeatable,
# pflag's stringArray), goduration (Go's flag package: "parse error"), vmodule, output
_LONG: dict[str, tuple[str, str]] = {
    "namespace": ("namespace", "str"),
    "address": ("addresses", "str"),
    "pod-running-timeout": ("pod_running_timeout", "duration"),
    "kubeconfig": ("kubeconfig", "str"),
    "context": ("context", "str"),
    "cluster": ("cluster", "str"),
    "user": ("user", "str"),
    "server": ("server", "str"),
    "token": ("token", "str"),
    "certificate-authority": ("certificate_authority", "str"),
    "client-certificate": ("client_certificate", "str"),
    "client-key": ("client_key", "str"),
    "insecure-skip-tls-verify": ("insecure_skip_tls_verify", "bool"),
    "tls-server-name": ("tls_server_name", "str"),
    "username": ("username", "str"),
    "password": ("password", "str"),
    "request-timeout": ("request_timeout", "timeout"),
    "v": ("verbosity", "int"),
    "protocol": ("protocol", "protocol"),
    "quiet": ("quiet", "bool"),
    "raw-path": ("raw_path", "str"),
    "help": ("help", "bool"),
    "reconnect": ("reconnect", "bool"),
    "ping-interval": ("ping_interval", "duration"),
    "ping-timeout": ("ping_timeout", "duration"),
    "connections": ("connections", "int"),
    "as": ("impersonate", "str"),
    "as-group": ("impersonate_groups", "list"),
    "as-uid": ("impersonate_uid", "str"),
    "as-user-extra": ("impersonate_extra", "list"),
    "proxy-url": ("proxy_url", "str"),
    "cache-dir": ("cache_dir", "str"),
    "disable-compression": ("disable_compression", "bool"),
    "warnings-as-errors": ("warnings_as_errors", "bool"),
    "match-server-version": ("match_server_version", "bool"),
    "profile": ("profile", "str"),
    "profile-output": ("profile_output", "str"),
    "log-flush-frequency": ("log_flush_frequency", "goduration"),
    "vmodule": ("vmodule", "vmodule"),
    "kuberc": ("kuberc", "str"),
    "version": ("version", "bool"),
    "output": ("output", "output"),
    "events": ("output", "output"),
    "stats": ("stats", "bool"),
    "stats-interval": ("stats_interval", "duration"),
    "ready-file": ("ready_file", "str"),
    "config": ("config_file", "str"),
}
_SHORT = {
    "n": "namespace",
    "s": "server",
    "v": "v",
    "q": "quiet",
    "h": "help",
    "o": "output",
    "f": "config",
}

USAGE = """Forward one or more local ports to a pod (a drop-in for kubectl port-forward).

Usage:
  {prog} [flags] TYPE/NAME|NAME [LOCAL_PORT:]REMOTE_PORT [...[LOCAL_PORT_N:]REMOTE_PORT_N]
  {prog} [flags] -f FORWARDS.yaml      many targets, contexts and namespaces in one process
  {prog} version | completion bash|zsh|fish | serve ...

Examples:
  {prog} mypod 5000 6000          # local 5000 -> pod 5000, local 6000 -> pod 6000
  {prog} deploy/web 8888:5000     # local 8888 -> port 5000 of a pod of the deployment
  {prog} svc/web :http            # random local port -> the service port named http
  {prog} --address 0.0.0.0 pod/p 8080
  {prog} -o json --ready-file /tmp/ready svc/db :5432   # JSON events for scripts

kubectl's flags:
  -n, --namespace NS              namespace (default: from the kubeconfig context)
      --address LIST              addresses to listen on, comma separated (default localhost)
      --pod-running-timeout DUR   time to wait for a pod of a selector (default 1m0s)
      --kubeconfig, --context, --cluster, --user, -s/--server, --token,
      --certificate-authority, --client-certificate, --client-key,
      --insecure-skip-tls-verify, --tls-server-name, --username, --password,
      --request-timeout, --proxy-url  as kubectl
      --as USER, --as-group GROUP (repeatable), --as-uid UID, --as-user-extra KEY=VALUE
                                  impersonate (Impersonate-* headers), as kubectl
      --cache-dir, --disable-compression, --warnings-as-errors, --match-server-version,
      --profile, --profile-output, --log-flush-frequency, --vmodule, --kuberc
                                  accepted as kubectl; no effect on a port-forward
  -v, --v N                       log verbosity

fastpf's own:
      --protocol P                auto|spdy|websocket|ws-channel (default auto: WebSocket tunnel,
                                  SPDY on refusal; KUBECTL_PORT_FORWARD_WEBSOCKETS=false -> SPDY)
  -q, --quiet                     do not print "Handling connection for" lines
      --raw-path PATH             upgrade on this server path (e.g. /portForward/{{ns}}/{{pod}});
                                  no pod lookup
      --reconnect=false           exit 1 when the upgraded connection is lost, as kubectl (default:
                                  keep the listeners, re-resolve the target and reconnect)
      --ping-interval DUR         PING (WebSocket ping for ws-channel) interval (default 5s; 0: off)
      --ping-timeout DUR          declare the connection dead after this long without a reply
                                  or progress (default 30s; 0: never)
      --connections N             upgraded connections to spread local connections over
                                  (default 4; spdy/websocket)
  -o, --output json               one JSON object per event on stdout instead of kubectl's lines
                                  (--events json is the same; schema: docs/EVENTS.md)
      --ready-file PATH           written (JSON) once every listener is bound; removed at exit
      --stats                     live view on stderr: one line per port (refreshed in place on
                                  a terminal, periodic lines otherwise); a summary at exit
      --stats-interval DUR        refresh period of --stats (default 1s on a terminal, else 10s)
  -f, --config FILE               forwards from a YAML file (README "Many forwards")
      --version                   print the client (and reachable server) version
"""


def parse_request_timeout(text: str) -> float:
    """kubectl's --request-timeout: integer seconds, or a duration with a unit."""
    msg = (
        "Invalid timeout value. Timeout must be a single integer in seconds, or an integer "
        "followed by a corresponding time unit (e.g. 1s | 2m | 3h)"
    )
    if text.isdigit():
        return float(text)
    try:
        value = parse_duration(text)
    except ValueError:
        raise UsageError(msg, show_usage=False) from None
    if value < 0:
        raise UsageError(msg, show_usage=False)
    return value


def _flag_title(name: str) -> str:
    # pflag names a flag that has a shorthand "-v, --v" in its messages
    shorts = [s for s, long in _SHORT.items() if long == name]
    return f"-{shorts[0]}, --{name}" if shorts else f"--{name}"


def _parse_vmodule(text: str) -> str:
    """klog's --vmodule syntax: comma-separated pattern=N (N a non-negative int32)."""
    for pat in text.split(","):
        if not pat:
            continue
        parts = pat.split("=")
        if (
            len(parts) != 2
            or not parts[0]
            or not parts[1]
            or not re.fullmatch(r"[+-]?\d+", parts[1])
        ):
            raise ValueError("syntax error: expect comma-separated list of filename=N")
        if int(parts[1]) < 0:
            raise ValueError("negative value for vmodule level")
    return text


def _set(opts: Any, name: str, raw: str, table: dict[str, tuple[str, str]] | None = None) -> None:
    attr, kind = (table or _LONG)[name]
    try:
        value: object
        if kind == "str":
            value = raw
        elif kind == "bool":
            value = parse_bool(raw)
        elif kind == "int":
            value = parse_int(raw, 32)
        elif kind == "duration":
            value = parse_duration(raw)
        elif kind == "timeout":
            value = parse_request_timeout(raw)
        elif kind == "protocol":
            if raw not in PROTOCOLS:
                raise ValueError(f"must be one of {', '.join(PROTOCOLS)}")
            value = raw
        elif kind == "output":
            if raw not in OUTPUTS:
                raise ValueError(f"must be one of {', '.join(OUTPUTS)}")
            value = raw
        elif kind.startswith("choice:"):  # a subcommand's own closed set, e.g. "choice:json,yaml"
            choices = kind[len("choice:") :].split(",")
            if raw not in choices:
                raise ValueError(f"must be one of {', '.join(choices)}")
            value = raw
        elif kind == "list":
            value = [*getattr(opts, attr), raw]
        elif kind == "goduration":
            try:
                value = parse_duration(raw)
            except ValueError:
                raise ValueError("parse error") from None  # Go's flag package says only this
        elif kind == "vmodule":
            value = _parse_vmodule(raw)
        else:  # pragma: no cover - table is static
            raise AssertionError(kind)
    except ValueError as exc:
        raise UsageError(
            f'invalid argument "{raw}" for "{_flag_title(name)}" flag: {exc}', show_usage=True
        ) from None
    setattr(opts, attr, value)


def parse_flags(
    argv: list[str],
    opts: Any,
    longs: dict[str, tuple[str, str]] | None = None,
    shorts: dict[str, str] | None = None,
) -> list[str]:
    """pflag's parse of `argv` into `opts` (kubectl port-forward's flags, plus `longs` /
    `shorts` for a subcommand's own). Returns the positional arguments."""
    table = {**_LONG, **(longs or {})}
    short_table = {**_SHORT, **(shorts or {})}
    positionals: list[str] = []
    i = 0
    n = len(argv)
    while i < n:  # bounded: i strictly increases
        arg = argv[i]
        i += 1
        if arg == "--":
            positionals.extend(argv[i:])
            break
        if arg.startswith("--") and len(arg) > 2:
            body = arg[2:]
            name, eq, raw = body.partition("=")
            if name not in table:
                raise UsageError(f"unknown flag: --{name}", show_usage=True)
            if eq:
                _set(opts, name, raw, table)
            elif table[name][1] == "bool":
                _set(opts, name, "true", table)
            elif i < n:
                _set(opts, name, argv[i], table)
                i += 1
            else:
                raise UsageError(f"flag needs an argument: --{name}", show_usage=True)
            continue
        if arg.startswith("-") and len(arg) > 1:
            chars = arg[1:]
            j = 0
            while j < len(chars):  # bounded by len(chars)
                c = chars[j]
                j += 1
                if c not in short_table:
                    raise UsageError(f"unknown shorthand flag: '{c}' in {arg}", show_usage=True)
                name = short_table[c]
                if table[name][1] == "bool":
                    if chars[j : j + 1] == "=":
                        _set(opts, name, chars[j + 1 :], table)
                        break
                    _set(opts, name, "true", table)
                    continue
                rest = chars[j:]
                if rest.startswith("="):
                    rest = rest[1:]
                if rest:
                    _set(opts, name, rest, table)
                elif i < n:
                    _set(opts, name, argv[i], table)
                    i += 1
                else:
                    raise UsageError(f"flag needs an argument: '{c}' in -{c}", show_usage=True)
                break
            continue
        positionals.append(arg)
    return positionals


def takes_value(word: str) -> bool:
    """`word` is one of our flags whose value is the next word (`-n`, `--namespace`)."""
    if not word.startswith("-") or "=" in word or word == "-":
        return False
    if not word.startswith("--") and len(word) != 2:
        return False  # -nfoo: the value is attached
    name = word[2:] if word.startswith("--") else _SHORT.get(word[1:2], "")
    return name in _LONG and _LONG[name][1] != "bool"


def positionals_of(argv: list[str]) -> list[str]:
    """The words of `argv` that are not flags or flag values (never raises)."""
    out: list[str] = []
    i = 0
    while i < len(argv):  # bounded: i strictly increases
        word = argv[i]
        i += 1
        if word == "--":
            return out + argv[i:]
        if word.startswith("-") and word != "-":
            i += 1 if takes_value(word) else 0
            continue
        out.append(word)
    return out


def parse_args(argv: list[str]) -> Options:
    """Parse argv (without the program name). Raises UsageError with kubectl's message."""
    opts = Options()
    positionals = parse_flags(argv, opts)
    if opts.help or opts.version:
        return opts
    if opts.profile not in PROFILES:  # kubectl checks it before the arguments, without usage
        raise UsageError(f"unknown profile '{opts.profile}'")
    for flag, value in (
        ("--ping-interval", opts.ping_interval),
        ("--ping-timeout", opts.ping_timeout),
    ):
        if value < 0:
            raise UsageError(f"{flag} must not be negative", show_usage=True, help_hint=True)
    if not 1 <= opts.connections <= MAX_CONNECTIONS:
        raise UsageError(
            f"--connections must be between 1 and {MAX_CONNECTIONS}",
            show_usage=True,
            help_hint=True,
        )
    if opts.config_file is not None:
        if positionals:
            raise UsageError(
                "-f/--config takes no TYPE/NAME or ports: they come from the file",
                show_usage=True,
                help_hint=True,
            )
        if opts.pod_running_timeout <= 0:
            raise UsageError(
                "--pod-running-timeout must be higher than zero", show_usage=True, help_hint=True
            )
        return opts
    if len(positionals) < 2:
        raise UsageError(
            "TYPE/NAME and list of ports are required for port-forward",
            show_usage=True,
            help_hint=True,
        )
    if opts.pod_running_timeout <= 0:
        raise UsageError(
            "--pod-running-timeout must be higher than zero", show_usage=True, help_hint=True
        )
    opts.target = positionals[0]
    opts.ports = positionals[1:]
    return opts


# ---- port specifications (kubectl's splitPort / parsePorts) ------------------------------------


def split_port(spec: str) -> tuple[str, str]:
    """kubectl's splitPort: `L:R` -> (L, R); anything else -> (first part, first part)."""
    parts = spec.split(":")
    if len(parts) == 2:
        return parts[0], parts[1]
    return parts[0], parts[0]


@dataclass(frozen=True)
class PortPair:
    local: int  # 0 = pick one
    remote: int


def parse_ports(specs: list[str]) -> list[PortPair]:
    """kubectl's portforward.parsePorts on already name-translated specs."""
    result: list[PortPair] = []
    for spec in specs:
        parts = spec.split(":")
        if len(parts) == 1:
            local_s = remote_s = parts[0]
        elif len(parts) == 2:
            local_s = parts[0] or "0"
            remote_s = parts[1]
        else:
            raise UsageError(f"invalid port format '{spec}'")
        try:
            local = parse_uint16(local_s)
        except ValueError as exc:
            raise UsageError(f"error parsing local port '{local_s}': {exc}") from None
        try:
            remote = parse_uint16(remote_s)
        except ValueError as exc:
            raise UsageError(f"error parsing remote port '{remote_s}': {exc}") from None
        if remote == 0:
            raise UsageError("remote port must be > 0")
        result.append(PortPair(local, remote))
    return result


def parse_addresses(text: str) -> list[str]:
    """kubectl's parseAddresses: `localhost` or IP literals, comma separated, de-duplicated."""
    import ipaddress

    parts = [p for p in text.split(",") if p != ""] if text else []
    if not parts:
        raise UsageError("you must specify at least 1 address")
    result: list[str] = []
    for part in parts:
        if part != "localhost":
            try:
                ipaddress.ip_address(part)
            except ValueError:
                raise UsageError(f"{part} is not a valid IP") from None
        if part not in result:
            result.append(part)
    return result
