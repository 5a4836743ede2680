"""The command line around the forward: version, `kubectl fastpf` naming, subcommand dispatch."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import fastpf
from fastpf.cli import program_name
from tests.support.kubectl import run_kubectl
from tests.support.processes import subprocess_env
from tests.support.serve_process import ServeInstance
from tests.support.targets import free_port


def fastpf_run(
    *args: str, argv0: str | None = None, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    if argv0 is None:
        cmd = [sys.executable, "-m", "fastpf", *args]
    else:  # run as that program name (kubectl runs plugins by their file name)
        cmd = [
            sys.executable,
            "-c",
            "import sys; from fastpf.cli import main; "
            f"sys.argv[0] = {argv0!r}; raise SystemExit(main())",
            *args,
        ]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(),
        stdin=subprocess.DEVNULL,
        cwd=cwd,
    )


def test_version_against_serve_matches_kubectl(
    serve: ServeInstance, kubectl_bin: Callable[[str], str], kubectl_cache_dir: Path
) -> None:
    k = run_kubectl(kubectl_bin("1.33"), serve.kubeconfig, kubectl_cache_dir, "version")
    f = fastpf_run("version", "--kubeconfig", str(serve.kubeconfig))
    assert k.returncode == f.returncode == 0, (k.stderr, f.stderr)
    server_line = [ln for ln in k.stdout.splitlines() if ln.startswith("Server Version: ")]
    assert f.stdout.splitlines() == [f"Client Version: v{fastpf.__version__}", *server_line]
    doc = json.loads(
        fastpf_run("version", "-o", "json", "--kubeconfig", str(serve.kubeconfig)).stdout
    )
    kdoc = json.loads(
        run_kubectl(
            kubectl_bin("1.33"), serve.kubeconfig, kubectl_cache_dir, "version", "-o", "json"
        ).stdout
    )
    assert doc["serverVersion"] == kdoc["serverVersion"]
    assert doc["clientVersion"]["gitVersion"] == f"v{fastpf.__version__}"
    quick = fastpf_run("--version", "--kubeconfig", str(serve.kubeconfig))
    assert quick.returncode == 0 and quick.stdout == f.stdout


def test_version_unreachable_server_as_kubectl(
    kubectl_bin: Callable[[str], str], tmp_path: Path
) -> None:
    server = f"https://127.0.0.1:{free_port()}"
    # with a token: kubectl would otherwise ask for a username on the terminal
    k = subprocess.run(
        [
            kubectl_bin("1.33"),
            "version",
            "--server",
            server,
            "--token",
            "t",
            "--cache-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    f = fastpf_run("version", "--server", server, "--token", "t", cwd=tmp_path)
    assert (f.returncode, f.stderr) == (k.returncode, k.stderr) == (1, f.stderr)
    assert f.stdout == f"Client Version: v{fastpf.__version__}\n"
    assert fastpf_run("version", "--client", "--server", server).returncode == 0
    quick = fastpf_run("--version", "--server", server)  # never fails for a missing cluster
    assert (quick.returncode, quick.stdout, quick.stderr) == (0, f.stdout, "")


def test_serve_version() -> None:
    from fastpf.serve.api import SERVER_VERSION

    r = fastpf_run("serve", "--version")
    assert r.returncode == 0
    assert r.stdout.splitlines() == [
        f"fastpf serve v{fastpf.__version__}",
        f"Server Version: {SERVER_VERSION['gitVersion']}",
    ]


def test_version_flag_errors() -> None:
    r = fastpf_run("version", "-o", "xml")
    assert (r.returncode, r.stderr.splitlines()[0]) == (
        1,
        'error: invalid argument "xml" for "-o, --output" flag: must be one of json, yaml',
    )


def test_program_name() -> None:
    assert program_name("/usr/local/bin/kubectl-fastpf") == "kubectl fastpf"
    assert program_name("/root/.krew/bin/kubectl-fastpf") == "kubectl fastpf"
    assert program_name("/usr/bin/fastpf") == "fastpf"


def test_plugin_errors_name_kubectl_fastpf() -> None:
    r = fastpf_run("onlyatarget", argv0="/x/kubectl-fastpf")
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "error: TYPE/NAME and list of ports are required for port-forward",
        "See 'kubectl fastpf -h' for help and examples",
    ]
    r = fastpf_run("--bogus", argv0="/x/kubectl-fastpf")
    assert r.stderr.splitlines()[1] == "See 'kubectl fastpf --help' for usage."
    assert "kubectl fastpf mypod 5000 6000" in fastpf_run("-h", argv0="kubectl-fastpf").stdout
    r = fastpf_run("onlyatarget")
    assert r.stderr.splitlines()[1] == "See 'fastpf -h' for help and examples"


def test_kubectl_runs_the_plugin(kubectl_bin: Callable[[str], str], tmp_path: Path) -> None:
    """`kubectl fastpf ...` through kubectl's own plugin lookup on PATH."""
    plugin = tmp_path / "bin" / "kubectl-fastpf"
    plugin.parent.mkdir()
    plugin.write_text(
        f"#!{sys.executable}\nfrom fastpf.cli import main\nraise SystemExit(main())\n"
    )
    plugin.chmod(0o755)
    env = subprocess_env({"PATH": f"{plugin.parent}:/usr/bin:/bin"})
    r = subprocess.run(
        [kubectl_bin("1.33"), "fastpf", "onlyatarget"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == "See 'kubectl fastpf -h' for help and examples"
    r = subprocess.run(
        [kubectl_bin("1.33"), "fastpf", "version", "--client"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert r.stdout == f"Client Version: v{fastpf.__version__}\n"


@pytest.mark.parametrize("name", ["serve", "version", "completion"])
def test_pods_named_like_subcommands_are_reachable_as_pod_slash(name: str) -> None:
    from fastpf.client.args import parse_args

    assert parse_args([f"pod/{name}", "80"]).target == f"pod/{name}"


def test_version_after_flags_as_kubectl_takes_it(serve: ServeInstance) -> None:
    r = fastpf_run("--kubeconfig", str(serve.kubeconfig), "version", "--client")
    assert (r.returncode, r.stdout) == (0, f"Client Version: v{fastpf.__version__}\n")
