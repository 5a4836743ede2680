#!/usr/bin/env bash
# fastpf in one command: install it into the project's .venv (created on first use; nothing goes
# into the system interpreter), start a local Kubernetes-compatible endpoint (`fastpf serve`)
# from a one-pod manifest: pod "mypod" whose ports 5000 (a data source) and 6000 (a checksumming
# sink) are served by a small Python program on 127.0.0.2. Then run `fastpf mypod 5000 6000`
# exactly as `kubectl port-forward mypod 5000 6000`, move GiB down through local port 5000 and
# up through local port 6000, and check sha256 both ways. Cleans up everything it started.
#   usage: scripts/demo.sh [GiB]        (default 1)
set -euo pipefail
cd "$(dirname "$0")/.."
GIB="${1:-1}"

root=$PWD
if [ ! -x .venv/bin/python ]; then
    echo "== creating $root/.venv"
    python3 -m venv .venv
fi
py="$root/.venv/bin/python"
echo "== installing fastpf into .venv (compiles the Cython frame layer)"
"$py" -m pip install -q --disable-pip-version-check -e .

tmp="$(mktemp -d)"
pids=()
cleanup() {   # background jobs of a script ignore SIGINT, so TERM, then KILL after 5 s
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cd "$tmp"   # run the installed fastpf, not the source tree

# The cluster: one Running pod whose container ports live on 127.0.0.2 (so the local ports
# 5000/6000 that fastpf listens on, on 127.0.0.1 and ::1, don't collide with the pod's).
cat > cluster.yaml <<'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: mypod
  namespace: default
  annotations: {fastpf.io/address: 127.0.0.2}
spec:
  containers:
  - name: app
    image: demo
    ports: [{name: source, containerPort: 5000}, {name: sink, containerPort: 6000}]
EOF

# The pod's programs: port 5000 answers "GET n\n" with n bytes of a deterministic pattern;
# port 6000 reads to EOF and answers "<byte count> <sha256>".
cat > pod.py <<'EOF'
import asyncio, hashlib, random
BLOCK = random.Random(5000).randbytes(1 << 20)
async def source(r, w):
    left = int((await r.readline()).split()[1])
    while left > 0:
        w.write(BLOCK[: min(left, len(BLOCK))]); left -= len(BLOCK)
        await w.drain()
    w.close()
async def sink(r, w):
    h, n = hashlib.sha256(), 0
    while data := await r.read(1 << 20):
        h.update(data); n += len(data)
    w.write(b"%d %s\n" % (n, h.hexdigest().encode())); await w.drain(); w.close()
async def main():
    a = await asyncio.start_server(source, "127.0.0.2", 5000)
    b = await asyncio.start_server(sink, "127.0.0.2", 6000)
    async with a, b:
        await asyncio.gather(a.serve_forever(), b.serve_forever())
asyncio.run(main())
EOF
"$py" pod.py & pids+=($!)

echo "== fastpf serve --listen 127.0.0.1:0 -f cluster.yaml --kubeconfig-out $tmp/kubeconfig"
"$py" -m fastpf serve --listen 127.0.0.1:0 -f cluster.yaml --kubeconfig-out "$tmp/kubeconfig" & pids+=($!)
for _ in $(seq 100); do [ -s "$tmp/kubeconfig" ] && break; sleep 0.1; done

echo "== fastpf --kubeconfig $tmp/kubeconfig mypod 5000 6000"
"$py" -m fastpf --kubeconfig "$tmp/kubeconfig" mypod 5000 6000 > fwd.log 2>&1 & pids+=($!)
for _ in $(seq 100); do [ "$(grep -c "Forwarding from" fwd.log 2>/dev/null)" -ge 4 ] && break; sleep 0.1; done
cat fwd.log

echo "== moving $GIB GiB each way through the forward"
"$py" - "$GIB" <<'EOF'
import hashlib, random, socket, sys, time
n = int(float(sys.argv[1]) * (1 << 30))
block = random.Random(5000).randbytes(1 << 20)
def pattern():
    for i in range(0, n, len(block)):
        yield memoryview(block)[: min(len(block), n - i)]
want = hashlib.sha256()
for chunk in pattern():
    want.update(chunk)

# Download: local 5000 -> pod port 5000.
s = socket.create_connection(("127.0.0.1", 5000))
t0 = time.perf_counter()
s.sendall(b"GET %d\n" % n)
h, got, buf = hashlib.sha256(), 0, bytearray(1 << 20)
while got < n:
    k = s.recv_into(buf)
    if not k:
        break
    h.update(memoryview(buf)[:k]); got += k
down = time.perf_counter() - t0
s.close()
down_ok = got == n and h.digest() == want.digest()
print(f"download {got / 1e6:,.0f} MB in {down:.2f} s = {got / down / 1e6:,.0f} MB/s, "
      f"sha256 {'matches' if down_ok else 'MISMATCH'}")

# Upload: local 6000 -> pod port 6000, which answers with what it received.
s = socket.create_connection(("127.0.0.1", 6000))
t0 = time.perf_counter()
for chunk in pattern():
    s.sendall(chunk)
s.shutdown(socket.SHUT_WR)
reply = b""
while not reply.endswith(b"\n"):
    part = s.recv(200)
    if not part:
        break
    reply += part
up = time.perf_counter() - t0
s.close()
count, _, digest = reply.decode().strip().partition(" ")
up_ok = count == str(n) and digest == want.hexdigest()
print(f"upload   {n / 1e6:,.0f} MB in {up:.2f} s = {n / up / 1e6:,.0f} MB/s, "
      f"sha256 {'matches' if up_ok else 'MISMATCH'}")
sys.exit(0 if down_ok and up_ok else 1)
EOF
echo "== fastpf's log"
cat fwd.log
