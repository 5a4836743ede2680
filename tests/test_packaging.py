"""Packaging: the sdist carries the Cython sources (.pyx/.pxd) and builds a working wheel, offline
(no build isolation: the test extras bring setuptools, Cython, wheel and build).

Building the wheel compiles the frame layer (~45 s on the 2-core CI machine): that test runs in
CI (`.ci/run` sets FASTPF_CI=1) or with FASTPF_PACKAGING=1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

import fastpf
from tests.support.patterns import echo_once
from tests.support.processes import REPO, subprocess_env
from tests.support.serve_process import ServeInstance
from tests.support.targets import Targets, manifest

SLOW = os.environ.get("FASTPF_CI") == "1" or os.environ.get("FASTPF_PACKAGING") == "1"


def _checkout_copy(dest: Path) -> Path:
    """The files a fresh clone would have (tracked, plus new ones not ignored), in `dest`."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


def _build_sdist(tmp: Path) -> Path:
    tree = _checkout_copy(tmp / "clone")
    out = tmp / "dist"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--sdist",
            "--no-isolation",
            "--outdir",
            str(out),
            str(tree),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=subprocess_env(),
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (sdist,) = out.glob("fastpf-*.tar.gz")
    return sdist


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_sdist(tmp_path_factory.mktemp("sdist"))


def test_sdist_carries_the_cython_sources(sdist: Path) -> None:
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {
        "fastpf/_frames.pyx",
        "fastpf/_frames.pxd",
        "fastpf/_frames.pyi",
        "fastpf/py.typed",
        "fastpf/_pump.pyx",
        "fastpf/_pump.pxd",
        "fastpf/_pump.pyi",
        "fastpf/frames/exports.pxi",
        "setup.py",
        "pyproject.toml",
        "README.md",
        "MANIFEST.in",
        "docs/EVENTS.md",
        "docs/PROTOCOL.md",
        "tests/conftest.py",
        "tests/golden/stats_plain.txt",
        "scripts/test.sh",
        "plugins/fastpf.yaml",
    } <= names
    assert not [n for n in names if n.endswith((".so", ".pyc"))]
    assert sdist.name == f"fastpf-{fastpf.__version__}.tar.gz"


@pytest.mark.skipif(not SLOW, reason="compiles the wheel (~45 s): CI only (FASTPF_CI=1)")
def test_wheel_from_sdist_installs_and_forwards(
    sdist: Path, tmp_path: Path, serve_factory: Callable[..., ServeInstance], targets: Targets
) -> None:
    wheels = tmp_path / "wheels"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-w",
            str(wheels),
            str(sdist),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=subprocess_env(),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = wheels.glob("fastpf-*.whl")
    # A fresh environment with only the wheel; its dependencies come from this venv (.pth).
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
    py = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run(
        [
            str(py),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--disable-pip-version-check",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    clean_env = {k: v for k, v in subprocess_env().items() if k != "PYTHONPATH"}
    where = subprocess.run(
        [
            str(py),
            "-c",
            "import fastpf._frames as f, fastpf._pump as p; print(p.__file__); print(f.__file__)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=clean_env,
    )
    assert where.stdout.startswith(site), where  # the wheel's compiled module, not the checkout
    for script in ("fastpf", "kubectl-fastpf", "kubectl_complete-fastpf"):
        assert (env_dir / "bin" / script).exists(), script
    version = subprocess.run(
        [str(env_dir / "bin" / "fastpf"), "version", "--client"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env,
    )
    assert version.stdout == f"Client Version: v{fastpf.__version__}\n"
    plugin = subprocess.run(
        [
            str(py),
            "-c",
            "from importlib.metadata import entry_points; "
            "print([e.value for e in entry_points(group='pytest11')])",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env,
    )
    assert "fastpf.pytest_plugin" in plugin.stdout
    # and it forwards
    srv: ServeInstance = serve_factory(manifest=manifest(targets))
    pf = subprocess.Popen(
        [
            str(env_dir / "bin" / "fastpf"),
            "--kubeconfig",
            str(srv.kubeconfig),
            "--address",
            "127.0.0.1",
            "web-1",
            f":{targets.echo}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env,
        cwd=tmp_path,
    )
    try:
        assert pf.stdout is not None
        line = pf.stdout.readline()
        assert line.startswith("Forwarding from 127.0.0.1:"), (line, pf.stderr)
        port = int(line.split(":")[1].split()[0])
        assert echo_once(port, b"wheel") == b"wheel"
    finally:
        pf.terminate()
        pf.wait(20)


# ---- krew -----------------------------------------------------------------------------------------


def test_krew_manifest_and_archive(tmp_path: Path) -> None:
    import hashlib

    import yaml

    manifest_doc = yaml.safe_load((REPO / "plugins" / "fastpf.yaml").read_text())
    assert manifest_doc["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert (manifest_doc["kind"], manifest_doc["metadata"]["name"]) == ("Plugin", "fastpf")
    spec = manifest_doc["spec"]
    assert spec["version"] == f"v{fastpf.__version__}" and spec["shortDescription"]
    (platform,) = spec["platforms"]
    assert platform["bin"] == "kubectl-fastpf"
    tree = _checkout_copy(tmp_path / "clone")
    r = subprocess.run(
        ["bash", "scripts/krew.sh"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=300,
        env=subprocess_env({"PYTHON": sys.executable}),
    )
    assert r.returncode == 0, r.stderr
    archive = tree / "dist" / "kubectl-fastpf.tar.gz"
    built = yaml.safe_load((tree / "dist" / "fastpf.yaml").read_text())
    (built_platform,) = built["spec"]["platforms"]
    assert built_platform["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert built_platform["uri"] == f"file://{archive}"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "kubectl-fastpf" in names and f"fastpf-{fastpf.__version__}.tar.gz" in names
    for entry in built_platform["files"]:  # every file the manifest installs is in the archive
        import fnmatch

        assert fnmatch.filter(names, entry["from"]), entry


def test_krew_launcher_through_kubectl(
    kubectl_bin: Callable[[str], str], tmp_path: Path, serve: ServeInstance
) -> None:
    """kubectl finds the launcher as a plugin; its errors name `kubectl fastpf`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy2(REPO / "plugins" / "kubectl-fastpf", bin_dir / "kubectl-fastpf")
    env = subprocess_env(
        {"PATH": f"{bin_dir}:/usr/bin:/bin", "KUBECTL_FASTPF_PYTHON": sys.executable}
    )
    r = subprocess.run(
        [kubectl_bin("1.33"), "fastpf", "onlyatarget"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 1
    assert r.stderr.splitlines()[-2:] == [
        "error: TYPE/NAME and list of ports are required for port-forward",
        "See 'kubectl fastpf -h' for help and examples",
    ]
    r = subprocess.run(
        [kubectl_bin("1.33"), "fastpf", "version", "--kubeconfig", str(serve.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 0 and r.stdout.startswith(f"Client Version: v{fastpf.__version__}\n")
