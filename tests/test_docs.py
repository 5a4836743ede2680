"""The docs stand alone: no pointer outside the repository (no `../shared`, no absolute paths
of this machine, no links off loopback), and every relative link resolves to a file in it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.processes import REPO

# bench/results/*.md are recorded runs (their command lines name temp dirs): not docs
DOCS = sorted(
    [
        REPO / "README.md",
        REPO / "bench" / "README.md",
        REPO / "fastpf" / "serve" / "README.md",
        REPO / "tests" / "README.md",
        *(REPO / "docs").glob("*.md"),
    ]
)
OUTSIDE = [
    (re.compile(r"(?<![.\w])\.\./"), "a path above the repository"),
    (
        re.compile(r"(?<![\w.:/-])/(?:work|tmp|usr|root|home|opt|var|etc|mnt|srv)/"),
        "an absolute path",
    ),
    (re.compile(r"https?://(?!127\.0\.0\.1|localhost|\[::1\])[\w.-]+"), "a link off this machine"),
]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_doc_points_nowhere_outside(doc: Path) -> None:
    problems = []
    for number, line in enumerate(doc.read_text().splitlines(), 1):
        for pattern, what in OUTSIDE:
            if pattern.search(line):
                problems.append(f"{doc.relative_to(REPO)}:{number}: {what}: {line.strip()}")
    assert problems == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(doc: Path) -> None:
    missing = []
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
        if not (doc.parent / target).exists():
            missing.append(target)
    assert missing == []


def test_the_checks_catch_what_they_should() -> None:
    bad = [
        "see `../shared/PROTOCOL.md`",
        "binaries in /usr/lib/google-cloud-sdk/bin",
        "https://github.com/x/y",
        "cd /work/main",
    ]
    good = [
        "GET .../portforward",
        "https://127.0.0.1:6443",
        "fastpf/serve/README.md",
        "`tests/golden/stats_plain.txt`",
    ]
    assert all(any(p.search(text) for p, _ in OUTSIDE) for text in bad)
    assert not any(p.search(text) for text in good for p, _ in OUTSIDE)
