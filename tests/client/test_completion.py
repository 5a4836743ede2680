"""Shell completion: the bash script from `fastpf completion bash`, run by bash against
`fastpf serve` (flags, flag values, TYPE/ prefixes, object names, ports), cobra's `__complete`
protocol, and kubectl's plugin completion through `kubectl_complete-fastpf`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.processes import subprocess_env
from tests.support.serve_process import ServeInstance
from tests.support.targets import Targets, free_port, manifest

SHIM = "#!{python}\nimport sys\nfrom fastpf.{module} import {func}\nraise SystemExit({func}())\n"


@pytest.fixture
def shims(tmp_path: Path) -> Path:
    """`fastpf`, `kubectl-fastpf` and `kubectl_complete-fastpf` on a PATH of their own."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, module, func in (
        ("fastpf", "cli", "main"),
        ("kubectl-fastpf", "cli", "main"),
        ("kubectl_complete-fastpf", "client.completion", "plugin_main"),
    ):
        path = bin_dir / name
        path.write_text(SHIM.format(python=sys.executable, module=module, func=func))
        path.chmod(0o755)
    return bin_dir


@pytest.fixture
def cluster(serve_factory: Callable[..., ServeInstance], targets: Targets) -> ServeInstance:
    srv: ServeInstance = serve_factory(manifest=manifest(targets))
    return srv


def bash_words(line: str) -> list[str]:
    """COMP_WORDS as bash makes them: blanks separate words, and so do = and : (its
    COMP_WORDBREAKS), which become words of their own."""
    words: list[str] = []
    for word in line.split():
        words += [w for w in re.split(r"([=:])", word) if w]
    if line.endswith(" "):
        words.append("")
    return words


_scripts: dict[str, str] = {}


def bash_script(shims: Path) -> str:
    if "bash" not in _scripts:
        _scripts["bash"] = subprocess.run(
            [str(shims / "fastpf"), "completion", "bash"],
            capture_output=True,
            text=True,
            timeout=60,
            env=subprocess_env(),
        ).stdout
    return _scripts["bash"]


def tab(shims: Path, line: str) -> list[str]:
    """Press TAB at the end of `line` in bash with fastpf's completion loaded: COMPREPLY."""
    script = bash_script(shims)
    words = bash_words(line)
    quoted = " ".join(f"'{w}'" for w in words)
    program = (
        f"{script}\nCOMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; "
        f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n"
        "_fastpf_complete\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    env = subprocess_env({"PATH": f"{shims}:/usr/bin:/bin"})
    r = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    return [ln for ln in r.stdout.splitlines() if ln]


def test_bash_completes_against_serve(
    shims: Path, cluster: ServeInstance, targets: Targets
) -> None:
    kc = f"fastpf --kubeconfig {cluster.kubeconfig}"
    assert tab(shims, f"{kc} ") == ["pend", "web-1"]  # pods of the namespace
    assert tab(shims, f"{kc} w") == ["web-1"]
    assert tab(shims, f"{kc} sv") == ["svc/"]
    assert tab(shims, f"{kc} svc/") == ["svc/web"]
    assert tab(shims, f"{kc} deploy/w") == ["deploy/web"]
    assert tab(shims, f"{kc} pod/") == ["pod/pend", "pod/web-1"]
    assert tab(shims, f"{kc} web-1 ") == [
        str(targets.sink),
        "sink",
        str(targets.source),
        "source",
        str(targets.echo),
        "echo",
    ]  # not UDP dns
    assert tab(shims, f"{kc} web-1 9000:ec") == ["echo"]  # bash shows the part after ":"
    assert tab(shims, f"{kc} svc/web 8") == ["80", "81"]
    assert tab(shims, f"{kc} -n ") == ["default", "kube-node-lease", "kube-public", "kube-system"]
    assert tab(shims, f"{kc} --namespace=kube-p") == ["kube-public"]
    assert tab(shims, f"{kc} --context ") == ["fastpf"]
    assert tab(shims, f"{kc} -n kube-system ") == []  # no pods there


def test_bash_completes_flags_and_subcommands(shims: Path, cluster: ServeInstance) -> None:
    assert tab(shims, "fastpf --prot") == ["--protocol"]
    assert tab(shims, "fastpf --protocol ") == ["auto", "spdy", "websocket", "ws-channel"]
    assert tab(shims, "fastpf --protocol=ws") == ["ws-channel"]
    assert tab(shims, "fastpf -o ") == ["text", "json"]
    assert "--as-group" in tab(shims, "fastpf --as")
    assert tab(shims, "fastpf completion ") == ["bash", "zsh", "fish"]
    assert tab(shims, "fastpf ver") == ["version"]
    assert tab(shims, "fastpf version --c") == ["--client", "--context"]
    serve = tab(shims, "fastpf serve --")
    assert {"--listen", "--kubeconfig-out", "--no-tls", "--filename", "--version"} <= set(serve)
    # KUBECONFIG from the environment, nothing typed yet: subcommands and pods
    env_line = f"KUBECONFIG={cluster.kubeconfig}"
    script = bash_script(shims)
    program = (
        f"{script}\nexport {env_line}\nCOMP_LINE='fastpf '; COMP_POINT=7; "
        "COMP_WORDS=(fastpf ''); COMP_CWORD=1\n_fastpf_complete\n"
        "printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    r = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env({"PATH": f"{shims}:/usr/bin:/bin"}),
    )
    assert r.stdout.split() == ["serve", "version", "completion", "pend", "web-1"]


def complete(shims: Path, *words: str) -> list[str]:
    r = subprocess.run(
        [str(shims / "fastpf"), "__complete", *words],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
    )
    assert r.returncode == 0 and r.stderr == ""
    return r.stdout.splitlines()


def test_cobra_protocol_and_directives(shims: Path, cluster: ServeInstance) -> None:
    kc = ["--kubeconfig", str(cluster.kubeconfig)]
    assert complete(shims, *kc, "s") == ["svc/", "sts/", "services/", "statefulsets/", ":6"]
    assert complete(shims, *kc, "svc/") == ["svc/web", ":4"]
    assert complete(shims, "--kubeconfig", "") == [":0"]  # file names: the shell's own
    assert complete(shims, "-f", "") == [":0"]
    # an unreachable cluster: no candidates, no error, no wait beyond the lookup timeout
    unreachable = ["--server", f"https://127.0.0.1:{free_port()}", "--token", "t"]
    assert complete(shims, *unreachable, "") == [":4"]


def test_kubectl_plugin_completion(
    shims: Path, cluster: ServeInstance, kubectl_bin: Callable[[str], str], tmp_path: Path
) -> None:
    """kubectl 1.26+ completes `kubectl fastpf ...` by running kubectl_complete-fastpf."""
    env = subprocess_env({"PATH": f"{shims}:/usr/bin:/bin"})
    r = subprocess.run(
        [
            kubectl_bin("1.33"),
            "__complete",
            "fastpf",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "svc/",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert r.stdout.splitlines()[:2] == ["svc/web", ":4"], (r.stdout, r.stderr)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_scripts_parse(shims: Path, shell: str) -> None:
    text = subprocess.run(
        [str(shims / "fastpf"), "completion", shell],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
    ).stdout
    assert "__complete" in text and "fastpf" in text
    binary = shutil.which(shell)
    if binary is None:
        pytest.skip(f"{shell} is not installed (the script text was checked)")
    flag = {"bash": "-n", "zsh": "-n", "fish": "--no-execute"}[shell]
    r = subprocess.run([binary, flag], input=text, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_completion_usage_errors(shims: Path) -> None:
    r = subprocess.run(
        [str(shims / "fastpf"), "completion", "tcsh"],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
    )
    assert (r.returncode, r.stderr) == (
        1,
        "error: expected one of bash, zsh, fish: fastpf completion bash\n",
    )


def test_zsh_and_fish_scripts_complete(shims: Path, cluster: ServeInstance) -> None:
    """Where zsh / fish are installed: their scripts answer like bash's (zsh with compadd and
    _files stubbed, so no interactive shell is needed; fish through `complete -C`)."""
    kc = str(cluster.kubeconfig)
    env = subprocess_env({"PATH": f"{shims}:/usr/bin:/bin"})
    ran = 0
    if shutil.which("zsh"):
        script = subprocess.run(
            [str(shims / "fastpf"), "completion", "zsh"],
            capture_output=True,
            text=True,
            timeout=60,
            env=subprocess_env(),
        ).stdout
        program = (
            script + '\ncompadd() { local -a a; a=("$@"); local i=${a[(i)--]}; '
            'print -l -- "${(@)a[i+1,-1]}"; }\n_files() { print FILES; }\n'
            f"words=(fastpf --kubeconfig {kc} svc/); CURRENT=4; _fastpf\n"
            "words=(fastpf --kubeconfig ''); CURRENT=3; _fastpf\n"
        )
        r = subprocess.run(
            ["zsh", "-f", "-c", program], capture_output=True, text=True, timeout=60, env=env
        )
        assert r.stdout.split() == ["svc/web", "FILES"], r.stderr
        ran += 1
    if shutil.which("fish"):
        script = subprocess.run(
            [str(shims / "fastpf"), "completion", "fish"],
            capture_output=True,
            text=True,
            timeout=60,
            env=subprocess_env(),
        ).stdout
        r = subprocess.run(
            ["fish", "--no-config", "-c", f"{script}\ncomplete -C 'fastpf --kubeconfig {kc} svc/'"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert r.stdout.split() == ["svc/web"], r.stderr
        ran += 1
    if not ran:
        pytest.skip("neither zsh nor fish is installed")
