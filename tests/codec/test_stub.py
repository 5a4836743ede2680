"""fastpf/_frames.pyi, _pump.pyi and _tls.pyi match the built extensions (mypy.stubtest), as scripts/test.sh checks.

Here too so that a pytest-only CI run notices a stub drifting from the .pyx parts: a renamed
argument, a new public name missing from the stub, a default that changed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ALLOWLIST = Path(__file__).with_name("stubtest-allowlist.txt")


def test_stub_matches_the_extension() -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy.stubtest",
            "fastpf._frames",
            "fastpf._pump",
            "fastpf._tls",
            "--allowlist",
            str(ALLOWLIST),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
