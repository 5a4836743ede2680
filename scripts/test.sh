#!/usr/bin/env bash
# Installs fastpf (compiling the Cython frame layer) with its test extras, then runs
# lint, type-check and the test suite. Works on a fresh machine; run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

# socat is the single-hop reference relay of the benchmarks and a test target.
if ! command -v socat >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq socat >/dev/null
fi
# The real kubectl peers (kubectl.1.27 ... kubectl.1.33) come with the Debian package.
if ! ls /usr/lib/google-cloud-sdk/bin/kubectl.1.33 >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq kubectl >/dev/null || echo "warning: could not install kubectl" >&2
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
python3 -m ruff check fastpf tests bench
python3 -m mypy
python3 -m pytest -q -p no:cacheprovider "$@"
