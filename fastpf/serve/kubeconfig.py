"""The kubeconfig `fastpf serve` writes for its clients (kubectl, fastpf, Python kubernetes)."""

from __future__ import annotations

import base64
import contextlib
import os
import tempfile
from pathlib import Path

import yaml

NAME = "fastpf"


def render(server_url: str, token: str, ca_pem: bytes | None, namespace: str = "default") -> str:
    cluster: dict[str, object] = {"server": server_url}
    if ca_pem is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": NAME, "cluster": cluster}],
        "users": [{"name": NAME, "user": {"token": token}}],
        "contexts": [
            {"name": NAME, "context": {"cluster": NAME, "user": NAME, "namespace": namespace}}
        ],
        "current-context": NAME,
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False)


def write_atomic(path: Path, text: str) -> None:
    """Write to a temp file beside `path`, then rename: readers see no file or a complete one.
    Mode 0600 because it holds the bearer token."""
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
