"""Command line of the client: kubectl port-forward's flags, parsed the way pflag does.

A small pflag-compatible parser rather than argparse: kubectl users script against its exact
error lines (`error: unknown flag: --x`, `flag needs an argument: 'n' in -n`), accept flags
interleaved with positionals, and `--flag=value` / `-nvalue` forms; argparse differs on all three.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fastpf.client.errors import UsageError

PROTOCOLS = ("auto", "spdy", "websocket", "ws-channel")
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


# name -> (attribute, kind). kind: str, bool, duration, timeout, int, protocol
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
}
_SHORT = {"n": "namespace", "s": "server", "v": "v", "q": "quiet", "h": "help"}

USAGE = """Forward one or more local ports to a pod (a drop-in for kubectl port-forward).

Usage:
  fastpf [flags] TYPE/NAME|NAME [LOCAL_PORT:]REMOTE_PORT [...[LOCAL_PORT_N:]REMOTE_PORT_N]
  fastpf serve [--listen HOST:PORT] ...   (local Kubernetes-compatible endpoint)

Examples:
  fastpf mypod 5000 6000          # local 5000 -> pod 5000, local 6000 -> pod 6000
  fastpf deploy/web 8888:5000     # local 8888 -> port 5000 of a pod of the deployment
  fastpf svc/web :http            # random local port -> the service port named http
  fastpf --address 0.0.0.0 pod/p 8080

Flags:
  -n, --namespace NS              namespace (default: from the kubeconfig context)
      --address LIST              addresses to listen on, comma separated (default localhost)
      --pod-running-timeout DUR   time to wait for a pod of a selector (default 1m0s)
      --kubeconfig, --context, --cluster, --user, -s/--server, --token,
      --certificate-authority, --client-certificate, --client-key,
      --insecure-skip-tls-verify, --tls-server-name, --username, --password,
      --request-timeout           as kubectl
  -v, --v N                       log verbosity
      --protocol P                auto|spdy|websocket|ws-channel (default auto: WebSocket tunnel,
                                  SPDY on refusal; KUBECTL_PORT_FORWARD_WEBSOCKETS=false -> SPDY)
  -q, --quiet                     do not print "Handling connection for" lines
      --raw-path PATH             upgrade on this server path (e.g. /portForward/{ns}/{pod});
                                  no pod lookup
      --reconnect=false           exit 1 when the upgraded connection is lost, as kubectl (default:
                                  keep the listeners, re-resolve the target and reconnect)
      --ping-interval DUR         PING (WebSocket ping for ws-channel) interval (default 5s; 0: off)
      --ping-timeout DUR          declare the connection dead after this long without a reply
                                  or progress (default 30s; 0: never)
      --connections N             upgraded connections to spread local connections over
                                  (default 4; spdy/websocket)
"""

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Go's time.ParseDuration, in seconds. Raises ValueError with Go's message."""
    orig = text
    if text in ("0", "+0", "-0"):
        return 0.0
    sign = 1.0
    if text[:1] in "+-" and text:
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if not text:
        raise ValueError(f'time: invalid duration "{orig}"')
    total = 0.0
    pos = 0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            if re.match(r"(\d+(?:\.\d*)?|\.\d+)$", text[pos:]):
                raise ValueError(f'time: missing unit in duration "{orig}"')
            um = re.match(r"(\d+(?:\.\d*)?|\.\d+)([^\d.]+)", text[pos:])
            if um:
                raise ValueError(f'time: unknown unit "{um.group(2)}" in duration "{orig}"')
            raise ValueError(f'time: invalid duration "{orig}"')
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def parse_request_timeout(text: str) -> float:
    """kubectl's --request-timeout: integer seconds, or a duration with a unit."""
    msg = (
        "Invalid timeout value. Timeout must be a single integer in seconds, or an integer "
        "followed by a corresponding time unit (e.g. 1s | 2m | 3h)"
    )
    if text.isdigit():
        return float(text)
    try:
        value = parse_go_duration(text)
    except ValueError:
        raise UsageError(msg, show_usage=False) from None
    if value < 0:
        raise UsageError(msg, show_usage=False)
    return value


def _parse_go_bool(text: str) -> bool:
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{text}": invalid syntax')


def _parse_go_int(text: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", text):
        raise ValueError(f'strconv.ParseInt: parsing "{text}": invalid syntax')
    return int(text)


def _flag_title(name: str) -> str:
    # pflag names a flag with a shorthand as "-v, --v" in its messages
    shorts = [s for s, long in _SHORT.items() if long == name]
    return f"-{shorts[0]}, --{name}" if shorts and name == "v" else f"--{name}"


def _set(opts: Options, name: str, raw: str) -> None:
    attr, kind = _LONG[name]
    try:
        value: object
        if kind == "str":
            value = raw
        elif kind == "bool":
            value = _parse_go_bool(raw)
        elif kind == "int":
            value = _parse_go_int(raw)
        elif kind == "duration":
            value = parse_go_duration(raw)
        elif kind == "timeout":
            value = parse_request_timeout(raw)
        elif kind == "protocol":
            if raw not in PROTOCOLS:
                raise ValueError(f"must be one of {', '.join(PROTOCOLS)}")
            value = raw
        else:  # pragma: no cover - table is static
            raise AssertionError(kind)
    except ValueError as exc:
        raise UsageError(
            f'invalid argument "{raw}" for "{_flag_title(name)}" flag: {exc}', show_usage=True
        ) from None
    setattr(opts, attr, value)


def parse_args(argv: list[str]) -> Options:
    """Parse argv (without the program name). Raises UsageError with kubectl's message."""
    opts = Options()
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
            if name not in _LONG:
                raise UsageError(f"unknown flag: --{name}", show_usage=True)
            if eq:
                _set(opts, name, raw)
            elif _LONG[name][1] == "bool":
                _set(opts, name, "true")
            elif i < n:
                _set(opts, name, argv[i])
                i += 1
            else:
                raise UsageError(f"flag needs an argument: --{name}", show_usage=True)
            continue
        if arg.startswith("-") and len(arg) > 1:
            shorts = arg[1:]
            j = 0
            while j < len(shorts):  # bounded by len(shorts)
                c = shorts[j]
                j += 1
                if c not in _SHORT:
                    raise UsageError(f"unknown shorthand flag: '{c}' in {arg}", show_usage=True)
                name = _SHORT[c]
                if _LONG[name][1] == "bool":
                    if shorts[j : j + 1] == "=":
                        _set(opts, name, shorts[j + 1 :])
                        break
                    _set(opts, name, "true")
                    continue
                rest = shorts[j:]
                if rest.startswith("="):
                    rest = rest[1:]
                if rest:
                    _set(opts, name, rest)
                elif i < n:
                    _set(opts, name, argv[i])
                    i += 1
                else:
                    raise UsageError(f"flag needs an argument: '{c}' in -{c}", show_usage=True)
                break
            continue
        positionals.append(arg)
    if opts.help:
        return opts
    if len(positionals) < 2:
        raise UsageError(
            "TYPE/NAME and list of ports are required for port-forward", show_usage=True, help_hint=True
        )
    if opts.pod_running_timeout <= 0:
        raise UsageError(
            "--pod-running-timeout must be higher than zero", show_usage=True, help_hint=True
        )
    for flag, value in (("--ping-interval", opts.ping_interval),
                        ("--ping-timeout", opts.ping_timeout)):
        if value < 0:
            raise UsageError(f"{flag} must not be negative", show_usage=True, help_hint=True)
    if not 1 <= opts.connections <= MAX_CONNECTIONS:
        raise UsageError(f"--connections must be between 1 and {MAX_CONNECTIONS}",
                         show_usage=True, help_hint=True)
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


def go_atoi(text: str) -> int | None:
    """strconv.Atoi: optional sign and decimal digits (None when it is a name)."""
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    return None


def _parse_uint16(text: str) -> int:
    if not re.fullmatch(r"\d+", text):
        raise ValueError(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    value = int(text)
    if value > 0xFFFF:
        raise ValueError(f'strconv.ParseUint: parsing "{text}": value out of range')
    return value


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
            local = _parse_uint16(local_s)
        except ValueError as exc:
            raise UsageError(f"error parsing local port '{local_s}': {exc}") from None
        try:
            remote = _parse_uint16(remote_s)
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
