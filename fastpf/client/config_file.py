"""`fastpf -f FORWARDS.yaml`: many targets, across contexts and namespaces, in one process.

    # forwards.yaml
    context: staging            # optional: defaults for every forward below
    forwards:
      - target: svc/db
        ports: ["5432", "0:6379"]
        namespace: data
      - target: deploy/web
        ports: 8080:http
        context: prod
        address: 127.0.0.1
        name: web-prod          # optional: how lines and events name it

A bare list of forwards is fine too. Per-forward keys win over the top-level ones, which win over
the command line's flags (the command line gives defaults, e.g. `--kubeconfig`). Each forward
becomes the Options of one Forwarder. Port clashes are found here for numeric local ports,
before any cluster is asked, and again once named ports are resolved (`find_clashes`).
"""

from __future__ import annotations

import copy
import ipaddress
from dataclasses import dataclass
from typing import Any

import yaml

from fastpf.client.args import (
    PROTOCOLS,
    Options,
    PortPair,
    parse_addresses,
    split_port,
)
from fastpf.errors import UsageError
from fastpf.goparity import errno_text, parse_duration

MAX_FORWARDS = 256  # a file is read whole; bounded like everything else
MAX_FILE = 1 << 20

# key -> Options attribute (per forward, and as top-level defaults)
_SHARED = {
    "namespace": "namespace",
    "context": "context",
    "cluster": "cluster",
    "user": "user",
    "kubeconfig": "kubeconfig",
    "address": "addresses",
    "protocol": "protocol",
    "pod-running-timeout": "pod_running_timeout",
    "server": "server",
}
_PER_FORWARD = {"target", "ports", "name"}


@dataclass
class Entry:
    opts: Options
    label: str  # how lines and events name this forward
    index: int  # 1-based position in the file
    name: str = ""  # its `name:`, if given


def _fail(path: str, message: str) -> UsageError:
    return UsageError(f"{path}: {message}")


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def _apply(opts: Options, key: str, value: Any, where: str, path: str) -> None:
    attr = _SHARED[key]
    if not _scalar(value) or str(value) == "":
        raise _fail(path, f"{where}: {key} must be a non-empty string")
    text = str(value)
    if key == "protocol" and text not in PROTOCOLS:
        raise _fail(path, f"{where}: protocol must be one of {', '.join(PROTOCOLS)}")
    if key == "pod-running-timeout":
        try:
            seconds = parse_duration(text)
        except ValueError as exc:
            raise _fail(path, f"{where}: pod-running-timeout: {exc}") from None
        if seconds <= 0:
            raise _fail(path, f"{where}: pod-running-timeout must be higher than zero")
        setattr(opts, attr, seconds)
        return
    setattr(opts, attr, text)


def _ports(value: Any, where: str, path: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(_scalar(p) and str(p) != "" for p in items):
        raise _fail(
            path,
            f'{where}: ports must be a port spec or a list of them (e.g. 5432, "8080:80", ":http")',
        )
    return [str(p) for p in items]


def load_forwards(path: str, base: Options) -> list[Entry]:
    """Read and check the file; the Options of each forward start from `base` (the flags)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read(MAX_FILE + 1)
    except OSError as exc:
        raise _fail(path, errno_text(exc)) from None
    if len(text) > MAX_FILE:
        raise _fail(path, f"larger than {MAX_FILE} bytes")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        at = f"line {mark.line + 1}: " if mark is not None else ""
        raise _fail(path, f"yaml: {at}{problem}") from None
    top: dict[str, Any] = {}
    forwards: Any
    if isinstance(doc, list):
        forwards = doc
    elif isinstance(doc, dict):
        unknown = sorted(set(doc) - set(_SHARED) - {"forwards"})
        if unknown:
            raise _fail(
                path,
                f'unknown key "{unknown[0]}" (expected forwards, {", ".join(sorted(_SHARED))})',
            )
        forwards = doc.get("forwards")
        top = {k: v for k, v in doc.items() if k != "forwards"}
    else:
        raise _fail(path, 'expected a list of forwards, or a mapping with "forwards"')
    if not isinstance(forwards, list) or not forwards:
        raise _fail(path, "no forwards: give a list of {target, ports}")
    if len(forwards) > MAX_FORWARDS:
        raise _fail(path, f"more than {MAX_FORWARDS} forwards")
    defaults = copy.deepcopy(base)
    defaults.config_file = None
    for key, value in top.items():
        _apply(defaults, key, value, "top level", path)
    entries = []
    for i, item in enumerate(forwards, 1):
        where = f"forward {i}"
        if not isinstance(item, dict):
            raise _fail(path, f"{where}: expected a mapping with target and ports")
        unknown = sorted(set(item) - set(_SHARED) - _PER_FORWARD)
        if unknown:
            raise _fail(path, f'{where}: unknown key "{unknown[0]}"')
        if not _scalar(item.get("target")) or not str(item.get("target")):
            raise _fail(path, f"{where}: target is required (e.g. svc/db, pod/x, deploy/web)")
        if "ports" not in item:
            raise _fail(path, f"{where}: ports are required")
        opts = copy.deepcopy(defaults)
        opts.target = str(item["target"])
        opts.ports = _ports(item["ports"], where, path)
        for key, value in item.items():
            if key in _SHARED:
                _apply(opts, key, value, where, path)
        try:
            parse_addresses(opts.addresses)
        except UsageError as exc:
            raise _fail(path, f"{where}: address: {exc.message}") from None
        entries.append(Entry(opts, _label(item, opts), i, str(item.get("name") or "")))
    clashes = find_clashes(
        [(e.label, parse_addresses(e.opts.addresses), _static_pairs(e.opts)) for e in entries]
    )
    if clashes:
        raise _fail(path, clashes[0])
    return entries


def _label(item: dict[str, Any], opts: Options) -> str:
    if item.get("name"):
        return str(item["name"])
    where = [f"context {opts.context}"] if opts.context else []
    if opts.namespace:
        where.append(f"namespace {opts.namespace}")
    return f"{opts.target}, {', '.join(where)}" if where else opts.target


def _static_pairs(opts: Options) -> list[PortPair]:
    """Local ports known before resolving: numeric local parts (named remotes resolve later)."""
    out = []
    for spec in opts.ports:
        local, _ = split_port(spec)
        if local.isdigit() and int(local) > 0:
            out.append(PortPair(int(local), 0))
    return out


def _ips(addresses: list[str]) -> set[str]:
    out: set[str] = set()
    for a in addresses:
        out |= {"127.0.0.1", "::1"} if a == "localhost" else {a}
    return out


def _overlap(a: set[str], b: set[str]) -> bool:
    def covers(x: str, y: str) -> bool:  # a wildcard bind takes the port on every address
        vx, vy = ipaddress.ip_address(x), ipaddress.ip_address(y)
        return vx.version == vy.version and (vx.is_unspecified or vy.is_unspecified or vx == vy)

    return any(covers(x, y) for x in a for y in b)


def find_clashes(forwards: list[tuple[str, list[str], list[PortPair]]]) -> list[str]:
    """Local ports claimed twice on overlapping addresses, as one line each:
    (label, addresses, pairs) per forward; local port 0 (random) never clashes."""
    seen: list[tuple[int, set[str], str]] = []
    problems = []
    for label, addresses, pairs in forwards:
        ips = _ips(addresses)
        for pair in pairs:
            if pair.local == 0:
                continue
            for port, other_ips, other in seen:
                if port == pair.local and _overlap(ips, other_ips):
                    problems.append(
                        f"local port {port} is claimed twice: by {other} and by {label}"
                    )
                    break
            seen.append((pair.local, ips, label))
    return problems
