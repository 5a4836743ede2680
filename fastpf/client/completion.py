"""Shell completion, shaped as kubectl's (cobra's): `fastpf completion bash|zsh|fish` prints a
script; the script runs the hidden `fastpf __complete ARGS... CURRENT` for every TAB, which
prints one candidate per line and a last line `:N`, N being cobra's directive bits (1 error,
2 no space after the word, 4 no file names). kubectl (1.26+) runs `kubectl_complete-fastpf` the
same way for `kubectl fastpf <TAB>`.

Completed: subcommands, flags (also `--flag=value`), flag values (namespaces from the cluster,
contexts / clusters / users from the kubeconfig, protocols, output formats), TYPE/ prefixes,
pod and other object names from the cluster, and a target's ports (numbers and names, also
after `LOCAL:`). Cluster lookups are short and silent: a cluster that does not answer just
gives no candidates.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from fastpf.client.args import (
    _LONG,
    _SHORT,
    OUTPUTS,
    PROFILES,
    PROTOCOLS,
    Options,
    parse_flags,
    positionals_of,
    takes_value,
)
from fastpf.client.console import Console
from fastpf.errors import ClientError, FastpfError, UsageError

ERROR, NO_SPACE, NO_FILE = 1, 2, 4
LOOKUP_TIMEOUT = 5.0
SUBCOMMANDS = ("serve", "version", "completion")
SHELLS = ("bash", "zsh", "fish")
# flag -> candidates; None: file names (the shell's own completion)
_FILE_FLAGS = {
    "kubeconfig",
    "certificate-authority",
    "client-certificate",
    "client-key",
    "config",
    "ready-file",
    "cache-dir",
    "kuberc",
    "profile-output",
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "protocol": PROTOCOLS,
    "output": OUTPUTS,
    "events": OUTPUTS,
    "profile": PROFILES,
}
# What `TYPE/` may be typed as (kubectl's short names first) -> the REST resource
_TYPE_PREFIXES = (
    "pod/",
    "svc/",
    "deploy/",
    "rs/",
    "sts/",
    "ds/",
    "rc/",
    "job/",
    "pods/",
    "services/",
    "deployments/",
    "replicasets/",
    "statefulsets/",
    "daemonsets/",
)


def main(args: list[str], console: Console, prog: str) -> int:
    """`completion SHELL` prints the script; `__complete ...` answers one TAB."""
    if args[0] == "completion":
        if len(args) != 2 or args[1] not in SHELLS:
            console.error(f"error: expected one of {', '.join(SHELLS)}: {prog} completion bash")
            return 1
        console.usage(script(args[1]).rstrip("\n"))
        return 0
    words = args[1:] or [""]
    candidates, directive = complete(words[:-1], words[-1])
    console.usage("\n".join([*candidates, f":{directive}"]))
    return 0


def plugin_main() -> int:
    """`kubectl_complete-fastpf ARGS... CURRENT` (kubectl's plugin completion)."""
    return main(["__complete", *sys.argv[1:]], Console(), "kubectl fastpf")


# ---- answering one TAB ---------------------------------------------------------------------------


def complete(args: list[str], cur: str) -> tuple[list[str], int]:
    """(candidates, directive) for the word `cur` after `args` (words typed before it)."""
    if args and args[0] == "serve":
        return _serve(args[1:], cur)
    if args and args[0] == "completion":
        return ([s for s in SHELLS if s.startswith(cur)] if len(args) == 1 else []), NO_FILE
    if args and args[0] == "version":
        return _flags(cur, ("client", "output", "kubeconfig", "context", "server")), NO_FILE
    # a flag's value: `--flag VALUE` or `--flag=VALUE`
    if cur.startswith("--") and "=" in cur:
        name, _, partial = cur[2:].partition("=")
        found, directive = _flag_value(name, partial, args)
        return [f"--{name}={c}" for c in found], directive
    if args and takes_value(args[-1]):
        return _flag_value(_flag_name(args[-1]), cur, args[:-1])
    if cur.startswith("-"):
        return _flags(cur), NO_FILE
    positionals = positionals_of(args)
    if not positionals:
        found = [c for c in SUBCOMMANDS if c.startswith(cur)] if not args else []
        names, directive = _targets(cur, args)
        return found + names, directive
    return _ports(positionals[0], cur, args), NO_FILE


def _flags(cur: str, only: tuple[str, ...] | None = None) -> list[str]:
    names = only if only is not None else tuple(n for n in _LONG if n != "events")
    out = [f"--{n}" for n in sorted(names) if f"--{n}".startswith(cur)]
    if cur in ("-", ""):
        out += [f"-{s}" for s in sorted(_SHORT) if only is None]
    return out


def _flag_name(word: str) -> str:
    if word.startswith("--"):
        return word[2:]
    return _SHORT.get(word[1:2], "")


def _options(args: list[str]) -> Options:
    """The flags typed so far (kubeconfig, context, namespace, ...), leniently."""
    opts = Options()
    flags = [a for a in args if a not in positionals_of(args)]
    with contextlib.suppress(UsageError):  # half-typed flags: keep what parsed
        parse_flags(flags, opts)
    opts.request_timeout = opts.request_timeout or LOOKUP_TIMEOUT
    return opts


def _flag_value(name: str, cur: str, args: list[str]) -> tuple[list[str], int]:
    if name in _FILE_FLAGS:
        return [], 0  # let the shell complete file names
    if name in _CHOICES:
        return [c for c in _CHOICES[name] if c.startswith(cur)], NO_FILE
    if name in ("context", "cluster", "user"):
        return [n for n in _kubeconfig_names(args, name) if n.startswith(cur)], NO_FILE
    if name == "namespace":
        return [n for n in _names("namespaces", None, _options(args)) if n.startswith(cur)], NO_FILE
    return [], NO_FILE


def _kubeconfig_names(args: list[str], kind: str) -> list[str]:
    from fastpf.client.kubeconfig import kubeconfig_files, load_merged

    try:
        merged = load_merged(kubeconfig_files(_options(args).kubeconfig))
    except ClientError:
        return []
    table = {"context": merged.contexts, "cluster": merged.clusters, "user": merged.users}[kind]
    return sorted(table)


def _targets(cur: str, args: list[str]) -> tuple[list[str], int]:
    opts = _options(args)
    if "/" in cur:
        from fastpf.client.resolve import split_target

        kind, _, partial = cur.partition("/")
        try:
            prefix, plural, _kind, _ = split_target(f"{kind}/x")
        except ClientError:
            return [], NO_FILE
        names = _names(plural, prefix, opts)
        return [f"{kind}/{n}" for n in names if n.startswith(partial)], NO_FILE
    pods = [n for n in _names("pods", "/api/v1", opts) if n.startswith(cur)]
    types = [t for t in _TYPE_PREFIXES if cur and t.startswith(cur)]
    found = pods + types
    directive = NO_FILE | (NO_SPACE if found and all(c.endswith("/") for c in found) else 0)
    return found, directive


def _ports(target: str, cur: str, args: list[str]) -> list[str]:
    """The ports of the target's object: numbers and names, after a typed `LOCAL:` too."""
    from fastpf.client.resolve import split_target

    local, sep, partial = cur.rpartition(":")
    head = f"{local}{sep}"
    try:
        prefix, plural, kind, name = split_target(target)
    except ClientError:
        return []
    obj = _get(prefix, plural, name, _options(args))
    if obj is None:
        return []
    spec = obj.get("spec") or {}
    ports: list[Any] = []
    if kind == "Service":
        ports = [(p.get("port"), p.get("name")) for p in spec.get("ports") or []]
    else:
        pod_spec = spec if kind == "Pod" else (spec.get("template") or {}).get("spec") or {}
        for container in pod_spec.get("containers") or []:
            for p in container.get("ports") or []:
                if (p.get("protocol") or "TCP") == "TCP":
                    ports.append((p.get("containerPort"), p.get("name")))
    words: list[str] = []
    for number, pname in ports:
        for word in (str(number) if number else "", str(pname) if pname else ""):
            if word and word not in words and word.startswith(partial):
                words.append(word)
    return [head + w for w in words]


# ---- cluster lookups -----------------------------------------------------------------------------


def _run_lookup(coro: Any) -> Any:
    from fastpf.loop import new_event_loop

    loop = new_event_loop()
    try:
        return loop.run_until_complete(coro)
    except (ClientError, FastpfError, OSError, ValueError):
        return None
    finally:
        loop.close()


def _names(plural: str, prefix: str | None, opts: Options) -> list[str]:
    """Names of `plural` objects (in the namespace unless namespaces themselves)."""

    async def lookup() -> list[str]:
        from fastpf.client.api import ApiClient
        from fastpf.client.kubeconfig import load_config

        cfg = load_config(opts.config_overrides())
        api = ApiClient(cfg, request_timeout=opts.request_timeout)
        try:
            if plural == "namespaces":
                path = "/api/v1/namespaces"
            else:
                path = f"{prefix}/namespaces/{cfg.namespace}/{plural}"
            body = await api.get(path)
        finally:
            await api.close()
        items = body.get("items") if isinstance(body, dict) else None
        return sorted(str((i.get("metadata") or {}).get("name", "")) for i in items or [])

    return [n for n in _run_lookup(lookup()) or [] if n]


def _get(prefix: str, plural: str, name: str, opts: Options) -> dict[str, Any] | None:
    async def lookup() -> Any:
        from fastpf.client.api import ApiClient
        from fastpf.client.kubeconfig import load_config

        cfg = load_config(opts.config_overrides())
        api = ApiClient(cfg, request_timeout=opts.request_timeout)
        try:
            return await api.get(f"{prefix}/namespaces/{cfg.namespace}/{plural}/{name}")
        finally:
            await api.close()

    obj = _run_lookup(lookup())
    return obj if isinstance(obj, dict) else None


def _serve(args: list[str], cur: str) -> tuple[list[str], int]:
    from fastpf.serve.main import _parser

    actions = [a for a in _parser()._actions if a.option_strings]
    if args:
        last = args[-1]
        for action in actions:
            if last in action.option_strings and action.nargs != 0:
                return [], 0  # a value: file names (-f, --kubeconfig-out) or free text
    if cur.startswith("-"):
        names = sorted(s for a in actions for s in a.option_strings if s.startswith("--"))
        return [n for n in [*names, "--version"] if n.startswith(cur)], NO_FILE
    return [], NO_FILE


# ---- the scripts -----------------------------------------------------------------------------------

_BASH = r"""# bash completion for fastpf (and kubectl-fastpf)           -*- shell-script -*-
# Load it with:  source <(fastpf completion bash)
_fastpf_complete() {
    local line="${COMP_LINE:0:COMP_POINT}" cur="" out directive prefix c
    local -a words reply=()
    read -r -a words <<< "$line"
    if [[ "$line" =~ [[:space:]]$ || ${#words[@]} -le 1 ]]; then
        [[ ${#words[@]} -eq 0 ]] && return
    else
        cur="${words[${#words[@]}-1]}"
        unset 'words[${#words[@]}-1]'
    fi
    out=$("${words[0]}" __complete "${words[@]:1}" "$cur" 2>/dev/null) || return
    directive="${out##*:}"
    out="${out%:*}"
    (( directive & 1 )) && return
    # bash splits words at = and :, so drop what it already counts as typed
    prefix="${cur%"${COMP_WORDS[COMP_CWORD]}"}"
    while IFS= read -r c; do
        [[ -n "$c" ]] && reply+=("${c#"$prefix"}")
    done <<< "$out"
    COMPREPLY=("${reply[@]}")
    (( directive & 2 )) && compopt -o nospace 2>/dev/null
    (( directive & 4 )) && compopt +o default 2>/dev/null
    return 0
}
complete -o default -F _fastpf_complete fastpf kubectl-fastpf
"""

_ZSH = r"""#compdef fastpf kubectl-fastpf
# zsh completion for fastpf. Load it with:  source <(fastpf completion zsh)
_fastpf() {
    local -a lines args
    local out directive
    args=("${(@)words[2,CURRENT-1]}")
    out=$("${words[1]}" __complete "${args[@]}" "${words[CURRENT]}" 2>/dev/null) || return 1
    lines=("${(@f)out}")
    directive=${lines[-1]#:}
    lines=("${(@)lines[1,-2]}")
    (( directive & 1 )) && return 1
    if (( ${#lines} == 0 )); then
        (( directive & 4 )) || _files
        return
    fi
    if (( directive & 2 )); then
        compadd -Q -S '' -- "${lines[@]}"
    else
        compadd -Q -- "${lines[@]}"
    fi
}
if (( $+functions[compdef] )); then compdef _fastpf fastpf kubectl-fastpf; fi
"""

_FISH = r"""# fish completion for fastpf. Load it with:  fastpf completion fish | source
function __fastpf_complete
    set -l args (commandline -opc)
    set -l cur (commandline -ct)
    set -l out ($args[1] __complete $args[2..-1] $cur 2>/dev/null)
    or return
    set -l directive (string replace -r '^:' '' -- $out[-1])
    set -e out[-1]
    if test (math "$directive % 2") -eq 1
        return
    end
    if test (count $out) -eq 0; and test (math "floor($directive / 4) % 2") -eq 0
        __fish_complete_path $cur
        return
    end
    printf '%s\n' $out
end
complete -c fastpf -f -a '(__fastpf_complete)'
complete -c kubectl-fastpf -f -a '(__fastpf_complete)'
"""


def script(shell: str) -> str:
    return {"bash": _BASH, "zsh": _ZSH, "fish": _FISH}[shell]
