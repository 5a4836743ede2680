"""Config loading and the forward engine take their own types (ConfigOverrides, ForwardSpec),
built from the command line's Options by the front end; neither imports the CLI's Options."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

import fastpf
from fastpf.client import kubeconfig as K
from fastpf.client.args import Options, parse_args
from fastpf.types import ConfigOverrides, ForwardSpec

PACKAGE = Path(fastpf.__file__).parent
# The command-line layer: the modules that may know `Options`.
CLI = {
    "fastpf.client.args",
    "fastpf.client.main",
    "fastpf.client.completion",
    "fastpf.client.version",
    "fastpf.client.config_file",
    "fastpf.cli",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_config_loading_imports_nothing_from_the_command_line() -> None:
    for name in ("kubeconfig.py", "auth.py", "tlsconfig.py", "api.py", "proxy.py"):
        assert _imports(PACKAGE / "client" / name) & CLI == set(), name


def test_no_engine_signature_takes_the_cli_options() -> None:
    # Only the command-line layer (and the library's keyword front end, forward.forward)
    # may name Options in a signature or a field.
    found = []
    for path in sorted((PACKAGE / "client").glob("*.py")):
        module = "fastpf.client." + path.stem
        if module in CLI:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            annotations = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args.args + node.args.kwonlyargs + node.args.posonlyargs
                annotations = [a.annotation for a in args if a.annotation is not None]
            elif isinstance(node, ast.AnnAssign):
                annotations = [node.annotation]
            for ann in annotations:
                if "Options" in {n.id for n in ast.walk(ann) if isinstance(n, ast.Name)}:
                    found.append(f"{path.name}:{getattr(node, 'lineno', 0)}")
    assert found == []


def test_forward_spec_carries_the_flags() -> None:
    opts = parse_args(
        [
            "mypod",
            "8080:80",
            ":81",
            "--address",
            "127.0.0.1,::1",
            "--protocol",
            "spdy",
            "--raw-path",
            "/x/{pod}",
            "--request-timeout",
            "5s",
            "--pod-running-timeout",
            "2m",
            "--reconnect=false",
            "--connections",
            "3",
            "--ping-interval",
            "1s",
            "--ping-timeout",
            "9s",
            "--context",
            "c",
        ]
    )
    spec = opts.forward_spec()
    assert spec == ForwardSpec(
        target="mypod",
        ports=("8080:80", ":81"),
        addresses="127.0.0.1,::1",
        protocol="spdy",
        overrides=ConfigOverrides(context="c"),
        raw_path="/x/{pod}",
        request_timeout=5.0,
        pod_running_timeout=120.0,
        reconnect=False,
        connections=3,
        ping_interval=1.0,
        ping_timeout=9.0,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.target = "other"  # type: ignore[misc]


def test_overrides_are_frozen_and_every_field_comes_from_the_flags() -> None:
    fields = [f.name for f in dataclasses.fields(ConfigOverrides)]
    values: dict[str, object] = {}
    for i, name in enumerate(fields):
        default = getattr(ConfigOverrides(), name)
        if isinstance(default, tuple):
            values[name] = [f"k{i}=v{i}"]
        elif name == "insecure_skip_tls_verify":
            values[name] = True
        else:
            values[name] = f"value-{i}"
    overrides = Options(**values).config_overrides()  # type: ignore[arg-type]
    for name in fields:
        want = values[name]
        assert getattr(overrides, name) == (tuple(want) if isinstance(want, list) else want), name
    with pytest.raises(dataclasses.FrozenInstanceError):
        overrides.server = "x"  # type: ignore[misc]


def test_flags_reach_the_loaded_config(tmp_path: Path) -> None:
    kc = tmp_path / "kc"
    kc.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: one\n"
        "clusters:\n- name: c1\n  cluster: {server: 'https://one.invalid:6443'}\n"
        "users:\n- name: u1\n  user: {token: file-token}\n"
        "contexts:\n- name: one\n  context: {cluster: c1, user: u1, namespace: ns1}\n",
        encoding="utf-8",
    )
    plain = K.load_config(ConfigOverrides(kubeconfig=str(kc)))
    assert (plain.server, plain.namespace, plain.token) == (
        "https://one.invalid:6443",
        "ns1",
        "file-token",
    )
    argv = [
        "--kubeconfig",
        str(kc),
        "-n",
        "ns2",
        "--server",
        "https://two.invalid",
        "--token",
        "flag-token",
        "--as",
        "alice",
        "--as-group",
        "g1",
        "--as-group",
        "g2",
        "--tls-server-name",
        "api.two",
        "p",
        "80",
    ]
    cfg = K.load_config(parse_args(argv).config_overrides())
    assert (cfg.server, cfg.namespace, cfg.token) == ("https://two.invalid", "ns2", "flag-token")
    assert (cfg.impersonate, cfg.impersonate_groups, cfg.tls_server_name) == (
        "alice",
        ["g1", "g2"],
        "api.two",
    )
