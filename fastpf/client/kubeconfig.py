"""kubeconfig loading and merging with clientcmd's rules, plus flag overrides and in-cluster config.

Rules (client-go clientcmd): `--kubeconfig FILE` alone (must exist); else every file of
$KUBECONFIG (missing ones skipped), where the first file to define a name or current-context
wins; else ~/.kube/config. Relative file references resolve against the defining file's
directory. Without any kubeconfig: in-cluster service account when running in a pod, else
http://localhost:8080 as kubectl does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from fastpf.errors import ConfigError
from fastpf.goparity import errno_text
from fastpf.types import ConfigOverrides

# Overridable by tests: where a pod's service-account credentials live.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass
class ExecConfig:
    command: str
    args: list[str] = field(default_factory=list)
    env: list[dict[str, str]] = field(default_factory=list)
    api_version: str = ""
    install_hint: str = ""
    provide_cluster_info: bool = False
    interactive_mode: str = "IfAvailable"


@dataclass
class ClientConfig:
    """Everything needed to reach and authenticate to one API server."""

    server: str = "http://localhost:8080"
    namespace: str = "default"
    # TLS
    ca_file: str | None = None
    ca_data: bytes | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    client_cert_file: str | None = None
    client_cert_data: bytes | None = None
    client_key_file: str | None = None
    client_key_data: bytes | None = None
    # auth
    token: str | None = None
    token_file: str | None = None
    username: str | None = None
    password: str | None = None
    exec: ExecConfig | None = None
    auth_provider: str | None = None
    # impersonation (kubectl --as/--as-group/--as-uid/--as-user-extra, or the user entry's
    # as/as-groups/as-uid/as-user-extra); sent like credentials: over TLS only
    impersonate: str | None = None
    impersonate_groups: list[str] = field(default_factory=list)
    impersonate_uid: str | None = None
    impersonate_extra: dict[str, list[str]] = field(default_factory=dict)
    # transport
    proxy_url: str | None = None
    cluster_info: dict[str, Any] = field(default_factory=dict)  # for exec provideClusterInfo
    in_cluster: bool = False
    context: str = ""  # the kubeconfig context used ("" for none / in-cluster)

    def impersonation_headers(self) -> list[tuple[str, str]]:
        """client-go's Impersonate-* request headers (one Impersonate-Group per group; extra
        keys path-escaped). Empty without a user to impersonate."""
        if not self.impersonate:
            return []
        from urllib.parse import quote

        headers = [("Impersonate-User", self.impersonate)]
        if self.impersonate_uid:
            headers.append(("Impersonate-Uid", self.impersonate_uid))
        headers += [("Impersonate-Group", g) for g in self.impersonate_groups]
        for key in sorted(self.impersonate_extra):
            headers += [
                (f"Impersonate-Extra-{quote(key, safe='')}", v) for v in self.impersonate_extra[key]
            ]
        return headers


def _decode_b64(value: Any, what: str) -> bytes | None:
    import base64
    import binascii

    if not value:
        return None
    try:
        return base64.b64decode(str(value), validate=False)
    except (binascii.Error, ValueError):
        raise ConfigError(f"invalid base64 in {what}") from None


def _resolve(path: Any, base: str) -> str | None:
    if not path:
        return None
    path = os.path.expanduser(str(path))
    return path if os.path.isabs(path) else os.path.join(base, path)


def _load_file(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError(f'error loading config file "{path}": yaml: {where}{problem}') from None
    except OSError as exc:
        raise ConfigError(f'error loading config file "{path}": {exc.strerror}') from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f'error loading config file "{path}": not a kubeconfig mapping')
    return data


def _named(items: Any) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and item.get("name") is not None:
                out.append((str(item["name"]), item))
    return out


@dataclass
class MergedConfig:
    current_context: str = ""
    contexts: dict[str, dict[str, Any]] = field(default_factory=dict)
    clusters: dict[str, dict[str, Any]] = field(default_factory=dict)  # each with "_base"
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def kubeconfig_files(explicit: str | None) -> list[str]:
    if explicit:
        if not os.path.exists(explicit):
            raise ConfigError(f"stat {explicit}: no such file or directory")
        return [explicit]
    env = os.environ.get("KUBECONFIG")
    if env:
        seen: list[str] = []
        for part in env.split(os.pathsep):
            if part and part not in seen and os.path.exists(part):
                seen.append(part)
        return seen
    home = os.path.join(os.path.expanduser("~"), ".kube", "config")
    return [home] if os.path.exists(home) else []


def load_merged(files: list[str]) -> MergedConfig:
    merged = MergedConfig(files=list(files))
    for path in files:
        data = _load_file(path)
        base = os.path.dirname(os.path.abspath(path))
        if not merged.current_context and data.get("current-context"):
            merged.current_context = str(data["current-context"])
        for key, target in (
            ("contexts", merged.contexts),
            ("clusters", merged.clusters),
            ("users", merged.users),
        ):
            inner = {"contexts": "context", "clusters": "cluster", "users": "user"}[key]
            for name, item in _named(data.get(key)):
                if name not in target:  # first definition wins
                    body = item.get(inner) or {}
                    if not isinstance(body, dict):
                        body = {}
                    target[name] = dict(body, _base=base)
    return merged


def _in_cluster_config() -> ClientConfig | None:
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT")
    token_path = os.path.join(SERVICE_ACCOUNT_DIR, "token")
    if not host or not port or not os.path.exists(token_path):
        return None
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    cfg = ClientConfig(server=f"https://{hostport}", token_file=token_path, in_cluster=True)
    ca = os.path.join(SERVICE_ACCOUNT_DIR, "ca.crt")
    if os.path.exists(ca):
        cfg.ca_file = ca
    ns_path = os.path.join(SERVICE_ACCOUNT_DIR, "namespace")
    try:
        with open(ns_path, encoding="utf-8") as fh:
            ns = fh.read().strip()
        if ns:
            cfg.namespace = ns
    except OSError:
        pass
    return cfg


def load_config(opts: ConfigOverrides) -> ClientConfig:
    """Resolve flags + kubeconfig files (+ in-cluster) into one ClientConfig."""
    files = kubeconfig_files(opts.kubeconfig)
    merged = load_merged(files)

    context_name = opts.context or merged.current_context
    context: dict[str, Any] = {}
    if opts.context and opts.context not in merged.contexts:
        raise ConfigError(
            f"context was not found for specified context: {opts.context}",
            prefix="Error in configuration: ",
        )
    if context_name and context_name in merged.contexts:
        context = merged.contexts[context_name]

    cluster_name = opts.cluster or str(context.get("cluster") or "")
    user_name = opts.user or str(context.get("user") or "")

    if opts.user and opts.user not in merged.users:
        raise ConfigError(f'auth info "{opts.user}" does not exist')
    if opts.cluster and opts.cluster not in merged.clusters and not opts.server:
        raise ConfigError(f'no server found for cluster "{opts.cluster}"')

    cluster = merged.clusters.get(cluster_name, {})
    user = merged.users.get(user_name, {})

    cfg: ClientConfig | None = None
    if not files and not opts.server:
        cfg = _in_cluster_config()
    if cfg is None:
        cfg = _from_entries(cluster, user)
        if context.get("namespace"):
            cfg.namespace = str(context["namespace"])
        if context:
            cfg.context = context_name
        _check_usable(cluster_name, cluster, user_name, user, opts)
    _apply_overrides(cfg, opts)
    if (
        (cfg.token or cfg.token_file)
        and (cfg.username or cfg.password)
        and not cfg.server.startswith("http://")
    ):
        # client-go's transport check (a tokenFile is not counted by the validation above)
        raise ConfigError("username/password or bearer token may be set, but not both")
    if not cfg.server:
        raise ConfigError(
            "invalid configuration: no configuration has been provided, try setting "
            "KUBERNETES_MASTER environment variable"
        )
    return cfg


def _check_usable(
    cluster_name: str,
    cluster: dict[str, Any],
    user_name: str,
    user: dict[str, Any],
    opts: ConfigOverrides,
) -> None:
    """clientcmd's validation of the merged cluster and user entries (flags applied), in its
    order and words: one problem is `error: ...`, several `Error in configuration:` + a list."""
    problems: list[str] = []
    proxy = opts.proxy_url or cluster.get("proxy-url")
    if proxy:
        from urllib.parse import urlsplit

        scheme = urlsplit(str(proxy)).scheme if "://" in str(proxy) else ""
        if scheme not in ("http", "https", "socks5"):
            problems.append(
                f'invalid \'proxy-url\' "{proxy}" for cluster "{cluster_name}": '
                f'unsupported scheme "{scheme}", must be http, https, or socks5'
            )
    name = user_name
    methods = []
    if opts.token or user.get("token"):
        methods.append("token")
    if opts.username or opts.password or user.get("username") or user.get("password"):
        methods.append("basicAuth")
    cert: Any
    key: Any
    if opts.client_certificate:
        cert, cert_data = opts.client_certificate, None
    else:
        cert, cert_data = user.get("client-certificate"), user.get("client-certificate-data")
    if opts.client_key:
        key, key_data = opts.client_key, None
    else:
        key, key_data = user.get("client-key"), user.get("client-key-data")
    if cert or cert_data:
        if cert and cert_data:
            problems.append(
                f"client-cert-data and client-cert are both specified for {name}. "
                "client-cert-data will override."
            )
        if key and key_data:
            problems.append(
                f"client-key-data and client-key are both specified for {name}; "
                "client-key-data will override"
            )
        if not key and not key_data:
            problems.append(
                f"client-key-data or client-key must be specified for {name} to use "
                "the clientCert authentication method."
            )
        base = user.get("_base", ".")
        for what, path, flagged in (
            ("client-cert", cert, bool(opts.client_certificate)),
            ("client-key", key, bool(opts.client_key)),
        ):
            if path:
                full = str(path) if flagged else (_resolve(path, base) or str(path))
                try:
                    with open(full, "rb"):
                        pass
                except OSError as exc:
                    problems.append(
                        f"unable to read {what} {full} for {name} due to open {full}: "
                        f"{errno_text(exc)}"
                    )
    ex = user.get("exec")
    if isinstance(ex, dict):
        if user.get("auth-provider"):
            problems.append(
                f"authProvider cannot be provided in combination with an exec plugin for {name}"
            )
        if not ex.get("command"):
            problems.append(
                f"command must be specified for {name} to use exec authentication plugin"
            )
        if not ex.get("apiVersion"):
            problems.append(
                f"apiVersion must be specified for {name} to use exec authentication plugin"
            )
        for env in ex.get("env") or []:
            if not isinstance(env, dict) or not env.get("name"):
                problems.append(
                    f"env variable name must be specified for {name} to use exec "
                    "authentication plugin"
                )
        mode = ex.get("interactiveMode")
        if not mode and str(ex.get("apiVersion") or "").endswith("/v1"):
            # v1beta1 defaults it to IfAvailable; v1 requires it
            problems.append(
                f"interactiveMode must be specified for {name} to use exec authentication plugin"
            )
        elif mode and mode not in ("Never", "IfAvailable", "Always"):
            problems.append(f'invalid interactiveMode for {name}: "{mode}"')
    if len(methods) > 1:
        problems.append(
            f"more than one authentication method found for {name}; found "
            f"[{' '.join(methods)}], only one is allowed"
        )
    as_user = opts.impersonate or user.get("as")
    if (
        opts.impersonate_uid
        or user.get("as-uid")
        or opts.impersonate_groups
        or user.get("as-groups")
        or _extra(opts.impersonate_extra)
        or user.get("as-user-extra")
    ) and not as_user:
        problems.append(
            f"requesting uid, groups or user-extra for {name} without impersonating a user"
        )
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(
            "\n".join(["", *(f"* {p}" for p in problems)]), prefix="Error in configuration: "
        )


def _extra(pairs: Iterable[str]) -> dict[str, list[str]]:
    """--as-user-extra KEY=VALUE values (kubectl ignores one without "=")."""
    out: dict[str, list[str]] = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if sep and key:
            out.setdefault(key, []).append(value)
    return out


def _from_entries(cluster: dict[str, Any], user: dict[str, Any]) -> ClientConfig:
    cbase = cluster.get("_base", ".")
    ubase = user.get("_base", ".")
    cfg = ClientConfig()
    if cluster:
        cfg.server = str(cluster.get("server") or "")
        if not cfg.server:
            cfg.server = "http://localhost:8080"
    cfg.ca_file = _resolve(cluster.get("certificate-authority"), cbase)
    cfg.ca_data = _decode_b64(
        cluster.get("certificate-authority-data"), "certificate-authority-data"
    )
    cfg.insecure = bool(cluster.get("insecure-skip-tls-verify") or False)
    cfg.tls_server_name = cluster.get("tls-server-name") or None
    cfg.proxy_url = cluster.get("proxy-url") or None
    cfg.cluster_info = {
        k: v
        for k, v in cluster.items()
        if k
        in (
            "server",
            "tls-server-name",
            "insecure-skip-tls-verify",
            "certificate-authority-data",
            "proxy-url",
            "disable-compression",
        )
    }
    if cfg.ca_file and not cfg.ca_data and "certificate-authority-data" not in cfg.cluster_info:
        try:
            import base64

            with open(cfg.ca_file, "rb") as fh:
                cfg.cluster_info["certificate-authority-data"] = base64.b64encode(
                    fh.read()
                ).decode()
        except OSError:
            pass

    cfg.client_cert_file = _resolve(user.get("client-certificate"), ubase)
    cfg.client_cert_data = _decode_b64(
        user.get("client-certificate-data"), "client-certificate-data"
    )
    cfg.client_key_file = _resolve(user.get("client-key"), ubase)
    cfg.client_key_data = _decode_b64(user.get("client-key-data"), "client-key-data")
    cfg.token = user.get("token") or None
    cfg.token_file = _resolve(user.get("tokenFile"), ubase)
    cfg.username = user.get("username") or None
    cfg.password = user.get("password") or None
    ex = user.get("exec")
    if isinstance(ex, dict) and ex.get("command"):
        command = str(ex["command"])
        if os.sep in command and not os.path.isabs(command):
            command = os.path.join(ubase, command)
        env = ex.get("env") or []
        cfg.exec = ExecConfig(
            command=command,
            args=[str(a) for a in (ex.get("args") or [])],
            env=[
                {"name": str(e.get("name")), "value": str(e.get("value", ""))}
                for e in env
                if isinstance(e, dict)
            ],
            api_version=str(ex.get("apiVersion") or ""),
            install_hint=str(ex.get("installHint") or ""),
            provide_cluster_info=bool(ex.get("provideClusterInfo") or False),
            interactive_mode=str(ex.get("interactiveMode") or "IfAvailable"),
        )
    cfg.impersonate = str(user["as"]) if user.get("as") else None
    cfg.impersonate_uid = str(user["as-uid"]) if user.get("as-uid") else None
    groups = user.get("as-groups")
    cfg.impersonate_groups = [str(g) for g in groups] if isinstance(groups, list) else []
    extra = user.get("as-user-extra")
    if isinstance(extra, dict):
        cfg.impersonate_extra = {
            str(k): [str(x) for x in v] if isinstance(v, list) else [str(v)]
            for k, v in extra.items()
        }
    ap = user.get("auth-provider")
    if isinstance(ap, dict) and ap.get("name"):
        cfg.auth_provider = str(ap["name"])
        # The oidc provider's cached id-token is a usable bearer token without refresh logic.
        conf = ap.get("config") or {}
        if isinstance(conf, dict) and conf.get("id-token") and not cfg.token:
            cfg.token = str(conf["id-token"])
    return cfg


def _apply_overrides(cfg: ClientConfig, opts: ConfigOverrides) -> None:
    if opts.server:
        cfg.server = opts.server
    if opts.namespace:
        cfg.namespace = opts.namespace
    if opts.certificate_authority:
        cfg.ca_file = opts.certificate_authority
        cfg.ca_data = None
    if opts.insecure_skip_tls_verify is not None:
        cfg.insecure = opts.insecure_skip_tls_verify
    if opts.tls_server_name:
        cfg.tls_server_name = opts.tls_server_name
    if opts.client_certificate:
        cfg.client_cert_file = opts.client_certificate
        cfg.client_cert_data = None
    if opts.client_key:
        cfg.client_key_file = opts.client_key
        cfg.client_key_data = None
    if opts.token:
        # An explicit token replaces the user entry's token file and exec plugin (client-go's
        # exec authenticator stands aside when a token is set); basic auth with it is refused
        # earlier, as kubectl refuses it.
        cfg.token = opts.token
        cfg.token_file = None
        cfg.exec = None
    if opts.username:
        cfg.username = opts.username
    if opts.password:
        cfg.password = opts.password
    if opts.proxy_url:
        cfg.proxy_url = opts.proxy_url
    # Field by field, as clientcmd merges the flags over the user entry.
    cfg.impersonate = opts.impersonate or cfg.impersonate
    cfg.impersonate_groups = list(opts.impersonate_groups) or cfg.impersonate_groups
    cfg.impersonate_uid = opts.impersonate_uid or cfg.impersonate_uid
    cfg.impersonate_extra = _extra(opts.impersonate_extra) or cfg.impersonate_extra
    if opts.insecure_skip_tls_verify and not opts.certificate_authority:
        # As clientcmd: an explicit --insecure-skip-tls-verify clears the kubeconfig's CA.
        cfg.ca_file = None
        cfg.ca_data = None
