"""`fastpf serve --version`: this program's version and the Kubernetes version it serves."""

from __future__ import annotations

from fastpf import __version__
from fastpf.serve.api import SERVER_VERSION


def print_version() -> int:
    print(f"fastpf serve v{__version__}")
    # the version GET /version answers, in kubectl's words
    print(f"Server Version: {SERVER_VERSION['gitVersion']}")
    return 0
