#!/usr/bin/env bash
# Lint, type-check and test fastpf inside the project's own virtual environment (.venv, created
# on first use): nothing is installed into the system interpreter. As root on a Debian/Ubuntu
# machine it also installs, with apt-get and only when missing: socat (reference relay of the
# benchmarks, a test target), curl (interop tests), kubectl (the real kubectl.1.27 ... 1.33
# peers under /usr/lib/google-cloud-sdk/bin) and python3-venv (when `python3 -m venv` cannot
# work without it). Run from anywhere; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

apt_install() {   # apt_install PACKAGE...: only as root, only with apt-get, never fatal
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== apt-get install $*" >&2
        { apt-get update -qq && apt-get install -y -qq "$@" >/dev/null; } \
            || echo "warning: could not install $*" >&2
    fi
}
missing=()
command -v socat >/dev/null 2>&1 || missing+=(socat)
command -v curl >/dev/null 2>&1 || missing+=(curl)
[ -x /usr/lib/google-cloud-sdk/bin/kubectl.1.33 ] || missing+=(kubectl)
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi

if [ ! -x .venv/bin/python ]; then
    echo "== creating $root/.venv" >&2
    if ! python3 -m venv .venv; then
        rm -rf .venv
        apt_install python3-venv
        python3 -m venv .venv
    fi
fi
py="$root/.venv/bin/python"
"$py" -m pip install -q --disable-pip-version-check -e '.[test]'
"$py" -m ruff check fastpf tests bench
"$py" -m ruff format --check --quiet fastpf tests bench
"$py" -m mypy
"$py" -m mypy.stubtest fastpf._frames fastpf._pump fastpf._tls --allowlist tests/codec/stubtest-allowlist.txt
# The venv's bin first: tests run `fastpf`, `kubectl-fastpf` and the venv's kubectl 1.37.
PATH="$root/.venv/bin:$PATH" "$py" -m pytest -q -p no:cacheprovider "$@"
