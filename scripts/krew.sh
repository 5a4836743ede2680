#!/usr/bin/env bash
# Builds the krew plugin archive (dist/kubectl-fastpf.tar.gz: the launcher plugins/kubectl-fastpf
# and fastpf's sdist) and its manifest (dist/fastpf.yaml: plugins/fastpf.yaml with the archive's
# uri and sha256). Uses the project's .venv (created by scripts/test.sh or scripts/demo.sh).
#   usage: scripts/krew.sh [URI]     (default: file:// of the built archive)
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-$PWD/.venv/bin/python}"  # PYTHON=... another interpreter with the test extras
[ -x "$py" ] || { echo "error: no .venv: run bash scripts/test.sh first" >&2; exit 1; }
out="$PWD/dist"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
"$py" -m build --sdist --no-isolation --outdir "$work" . >/dev/null
cp plugins/kubectl-fastpf "$work/"
tar -C "$work" -czf "$out/kubectl-fastpf.tar.gz" kubectl-fastpf $(cd "$work" && ls fastpf-*.tar.gz)
sha=$("$py" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$out/kubectl-fastpf.tar.gz")
uri="${1:-file://$out/kubectl-fastpf.tar.gz}"
sed -e "s|ARCHIVE_URI|$uri|" -e "s|ARCHIVE_SHA256|$sha|" plugins/fastpf.yaml > "$out/fastpf.yaml"
echo "$out/kubectl-fastpf.tar.gz $sha"
echo "$out/fastpf.yaml"
