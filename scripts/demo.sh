#!/usr/bin/env bash
# fastpf in one command: install it, start a local Kubernetes-compatible endpoint (`fastpf serve`)
# and a sample "pod" server on 127.0.0.1:6000, forward 127.0.0.1:5000 -> pod port 6000 with
# `fastpf`, push 1 GiB through the tunnel and check its sha256. Cleans up everything it started.
#   usage: scripts/demo.sh [GiB]        (default 1)
set -euo pipefail
cd "$(dirname "$0")/.."
GIB="${1:-1}"

echo "== installing fastpf (compiles the Cython frame layer)"
python3 -m pip install -q --disable-pip-version-check .

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

# The sample pod: "GET n\n" -> n bytes of a deterministic pattern; "ECHO\n" -> echo until EOF.
cat > pod.py <<'EOF'
import asyncio, random
BLOCK = random.Random(6000).randbytes(1 << 20)
async def handle(r, w):
    cmd = (await r.readline()).split()
    if cmd[:1] == [b"GET"]:
        left = int(cmd[1])
        while left > 0:
            w.write(BLOCK[: min(left, len(BLOCK))]); left -= len(BLOCK)
            await w.drain()
    while data := await r.read(65536):   # echo (and wait for the client's EOF)
        w.write(data); await w.drain()
    w.close()
async def main():
    async with await asyncio.start_server(handle, "127.0.0.1", 6000) as s:
        await s.serve_forever()
asyncio.run(main())
EOF
python3 pod.py & pids+=($!)

echo "== fastpf serve --listen 127.0.0.1:0 --kubeconfig-out $tmp/kubeconfig"
python3 -m fastpf serve --listen 127.0.0.1:0 --kubeconfig-out "$tmp/kubeconfig" & pids+=($!)
for _ in $(seq 100); do [ -s "$tmp/kubeconfig" ] && break; sleep 0.1; done

echo "== fastpf --kubeconfig $tmp/kubeconfig mypod 5000:6000"
python3 -m fastpf --kubeconfig "$tmp/kubeconfig" mypod 5000:6000 > fwd.log 2>&1 & pids+=($!)
for _ in $(seq 100); do grep -q "Forwarding from" fwd.log 2>/dev/null && break; sleep 0.1; done
cat fwd.log

echo "== transferring $GIB GiB through 127.0.0.1:5000"
python3 - "$GIB" <<'EOF'
import hashlib, random, socket, sys, time
n = int(float(sys.argv[1]) * (1 << 30))
block = random.Random(6000).randbytes(1 << 20)
s = socket.create_connection(("127.0.0.1", 5000))
t0 = time.perf_counter()
s.sendall(b"GET %d\n" % n)
h, got, buf = hashlib.sha256(), 0, bytearray(1 << 20)
while got < n:
    k = s.recv_into(buf)
    if not k:
        break
    h.update(memoryview(buf)[:k]); got += k
secs = time.perf_counter() - t0
s.sendall(b"ping"); echo = s.recv(4)
s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
want = hashlib.sha256()
for i in range(0, n, len(block)):
    want.update(block[: min(len(block), n - i)])
ok = got == n and h.digest() == want.digest() and echo == b"ping"
print(f"received {got / 1e6:,.0f} MB in {secs:.2f} s = {got / secs / 1e6:,.0f} MB/s")
print(f"sha256 {h.hexdigest()[:16]}… {'matches' if ok else 'MISMATCH'}; echo {echo!r}")
sys.exit(0 if ok else 1)
EOF
