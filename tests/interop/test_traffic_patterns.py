"""The traffic patterns users produce, through `fastpf serve`, for every kubectl the suite knows
(SPDY and the WebSocket tunnel) and for the fastpf client's three protocols:

- download only, read to EOF (curl, a browser, pg_dump): 64 MiB, the pod closes after its last
  byte; the local client must see every byte, then EOF within 2 s of the pod's close (kubectl
  <= 1.31 waits for the error stream's end before it closes the local socket), at a throughput
  far above a stall;
- request / half-close / reply: the pod reads to EOF before it answers, briefly or with 8 MiB;
- many short connections, one after the other;
- a connection left idle past every ping interval, then used;
- curl fetching a file from a real `python3 -m http.server` behind the forward.

A bulk test that sends both ways at once, or stops reading at N bytes, hides a download that
crawls or an EOF that never comes; these do not.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.kubectl import require_peer
from tests.support.processes import KubectlPortForward, stop_process, subprocess_env
from tests.support.serve_process import ServeInstance, start_serve

POD_HOST = "127.0.0.2"
SEED = 9
DOWNLOAD = 64 << 20
# Far below what any of these paths moves on a busy 2-core machine (~150-400 MB/s), and ~50x
# above the stall this guards against (32 KiB every 200 ms, 0.15-0.7 MB/s).
FLOOR_MB_S = 25.0
EOF_AFTER_CLOSE_S = 2.0  # containerd lingers ~1 s after one direction ended
HTTP_FILE = 16 << 20
SHORT_CONNECTIONS = 40
# kubectl <= 1.31 gets what the pod sends within ~1 s after its half-close (containerd cuts
# there too; serve also bounds the frames, see fastpf.transport.kubelet): far more than this.
HALF_CLOSE_REPLY = 8 << 20

MANIFEST = f"""
apiVersion: v1
kind: Pod
metadata:
  name: patterns
  annotations: {{fastpf.io/address: {POD_HOST}}}
spec:
  containers:
  - name: main
    image: patterns
"""

# (client, version or protocol, KUBECTL_PORT_FORWARD_WEBSOCKETS)
KUBECTL_VARIANTS = [
    ("1.27", None),
    ("1.28", None),
    ("1.29", None),
    ("1.30", None),
    ("1.30", "true"),
    ("1.31", None),
    ("1.31", "false"),
    ("1.32", None),
    ("1.32", "false"),
    ("1.33", None),
    ("1.33", "false"),
    ("1.37", None),
    ("1.37", "false"),
]


def _transport(version: str, ws: str | None) -> str:
    if ws is not None:
        return "websocket" if ws == "true" else "spdy"
    return "websocket" if tuple(map(int, version.split("."))) >= (1, 31) else "spdy"


class Pod:
    """podprog.py in its own process, plus a real `python3 -m http.server`."""

    def __init__(self, tmp: Path) -> None:
        self.block = random.Random(SEED).randbytes(1 << 20)
        prog = Path(__file__).parent.parent / "support" / "podprog.py"
        self.proc = subprocess.Popen(
            [sys.executable, str(prog), POD_HOST, str(SEED)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=subprocess_env(),
        )
        assert self.proc.stdout is not None
        ports = json.loads(self.proc.stdout.readline() or b"{}")
        self.source, self.reply, self.sized = (
            int(ports["source"]),
            int(ports["reply"]),
            int(ports["sized"]),
        )
        www = tmp / "www"
        www.mkdir()
        self.http_body = random.Random(SEED + 1).randbytes(HTTP_FILE)
        (www / "blob.bin").write_bytes(self.http_body)
        self.http = subprocess.Popen(
            [
                sys.executable,
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                POD_HOST,
                "--directory",
                str(www),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            env=subprocess_env(),
        )
        assert self.http.stdout is not None
        m = re.search(rb"port (\d+)", self.http.stdout.readline())
        assert m, "http.server did not start"
        self.http_port = int(m.group(1))

    def expected_sha256(self, n: int) -> str:
        h = hashlib.sha256()
        view = memoryview(self.block)
        for pos in range(0, n, len(self.block)):
            h.update(view[: min(len(self.block), n - pos)])
        return h.hexdigest()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        stop_process(self.proc)
        stop_process(self.http)


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    p = Pod(tmp_path_factory.mktemp("pod"))
    yield p
    p.close()


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory, pod: Pod) -> Iterator[ServeInstance]:
    s = start_serve(tmp_path_factory.mktemp("serve"), manifest=MANIFEST)
    yield s
    s.stop()


@pytest.fixture
def clients() -> Iterator[Callable[[list[str], dict[str, str] | None], KubectlPortForward]]:
    started: list[KubectlPortForward] = []

    def start(cmd: list[str], env: dict[str, str] | None) -> KubectlPortForward:
        pf = KubectlPortForward(cmd, subprocess_env(env))
        started.append(pf)
        pf.wait_forwarding(4)
        return pf

    yield start
    for pf in started:
        pf.stop()


# ---------------------------------------------------------------------------------------------
# The patterns (plain blocking sockets, as curl or a script would use)


def download_to_eof(port: int, n: int) -> tuple[int, str, float, float]:
    """Ask the pod's source for n bytes and read until EOF. Returns (bytes, sha256, seconds
    from connect to the last byte, seconds from the last byte to EOF)."""
    h = hashlib.sha256()
    got = 0
    buf = bytearray(1 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        start = last = time.monotonic()
        sock.sendall(b"%d\n" % n)
        for _ in range(1 << 20):  # bounded: one pass per recv, each >= 1 byte or EOF
            k = sock.recv_into(buf)
            if not k:
                break
            last = time.monotonic()
            h.update(memoryview(buf)[:k])
            got += k
        eof = time.monotonic()
    return got, h.hexdigest(), last - start, eof - last


def halfclose_and_read(sock: socket.socket, payload: bytes) -> bytes:
    """Send payload on `sock`, shut its write side, read the answer to EOF."""
    sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    answer = b""
    for _ in range(1000):  # bounded
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    return answer


def request_halfclose_reply(port: int, payload: bytes) -> bytes:
    """A fresh connection: send payload, shut our write side, read the answer to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        return halfclose_and_read(sock, payload)


def halfclose_then_download(port: int, n: int) -> tuple[int, str]:
    """Send "n\\n", shut our write side, read the pod's n-byte reply to EOF."""
    h = hashlib.sha256()
    got = 0
    buf = bytearray(1 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"%d\n" % n)
        sock.shutdown(socket.SHUT_WR)
        for _ in range(1 << 20):  # bounded: one pass per recv, each >= 1 byte or EOF
            k = sock.recv_into(buf)
            if not k:
                break
            h.update(memoryview(buf)[:k])
            got += k
    return got, h.hexdigest()


def check_patterns(pf: KubectlPortForward, pod: Pod, tmp: Path, half_close: bool = True) -> None:
    """`half_close=False`: the protocol cannot carry a half-close (v4.channel.k8s.io has no
    per-port FIN), so a local half-close must end the connection promptly and cleanly."""
    source, reply = pf.local_port(pod.source), pf.local_port(pod.reply)

    got, sha, seconds, eof_wait = download_to_eof(source, DOWNLOAD)
    assert (got, sha) == (DOWNLOAD, pod.expected_sha256(DOWNLOAD)), pf.output()
    rate = DOWNLOAD / seconds / 1e6
    assert rate >= FLOOR_MB_S, f"download-only crawled: {rate:.1f} MB/s ({seconds:.2f} s)"
    assert eof_wait <= EOF_AFTER_CLOSE_S, f"EOF came {eof_wait:.2f} s after the pod's last byte"

    payload = random.Random(3).randbytes(3 << 20)
    expected = f"{len(payload)} {hashlib.sha256(payload).hexdigest()}\n".encode()
    assert request_halfclose_reply(reply, payload) == (expected if half_close else b"")

    # A request, a half-close, then a large reply read to EOF (`nc -N`, a one-shot RPC).
    got, sha = halfclose_then_download(pf.local_port(pod.sized), HALF_CLOSE_REPLY)
    if half_close:
        assert (got, sha) == (HALF_CLOSE_REPLY, pod.expected_sha256(HALF_CLOSE_REPLY))
    else:
        assert got == 0

    for i in range(SHORT_CONNECTIONS):
        small = b"%d" % i * 100
        want = f"{len(small)} {hashlib.sha256(small).hexdigest()}\n".encode()
        assert request_halfclose_reply(reply, small) == (want if half_close else b""), i

    out = tmp / "blob.bin"
    # curl reaches the pod's http.server through the forward: the local port forwards the
    # pod port of the same number (the third port of every client below).
    curl = require_peer(shutil.which("curl"), "curl")
    http_local = pf.local_port(pod.http_port)
    done = subprocess.run(
        [
            curl,
            "-sS",
            "--max-time",
            "60",
            "-o",
            str(out),
            f"http://127.0.0.1:{http_local}/blob.bin",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == pod.http_body
    assert pf.proc.poll() is None, pf.output()


def _ports(pod: Pod) -> list[str]:
    return [f":{pod.source}", f":{pod.reply}", f":{pod.sized}", f":{pod.http_port}"]


@pytest.mark.parametrize(
    ("version", "ws"),
    KUBECTL_VARIANTS,
    ids=[f"{v}-{_transport(v, w)}" for v, w in KUBECTL_VARIANTS],
)
def test_kubectl_patterns(
    serve: ServeInstance,
    pod: Pod,
    kubectl_bin: Callable[[str], str],
    kubectl_cache_dir: Path,
    clients: Callable[..., KubectlPortForward],
    tmp_path: Path,
    version: str,
    ws: str | None,
) -> None:
    binary = kubectl_bin(version)
    env = {"KUBECTL_PORT_FORWARD_WEBSOCKETS": ws} if ws is not None else None
    cmd = [
        binary,
        "--kubeconfig",
        str(serve.kubeconfig),
        "--cache-dir",
        str(kubectl_cache_dir),
        "port-forward",
        "pod/patterns",
        *_ports(pod),
    ]
    check_patterns(clients(cmd, env), pod, tmp_path)


@pytest.mark.parametrize("protocol", ["spdy", "websocket", "ws-channel"])
def test_fastpf_patterns(
    serve: ServeInstance,
    pod: Pod,
    clients: Callable[..., KubectlPortForward],
    tmp_path: Path,
    protocol: str,
) -> None:
    cmd = [
        sys.executable,
        "-m",
        "fastpf",
        "--kubeconfig",
        str(serve.kubeconfig),
        "--protocol",
        protocol,
        "pod/patterns",
        *_ports(pod),
    ]
    check_patterns(clients(cmd, None), pod, tmp_path, half_close=protocol != "ws-channel")


IDLE_S = 12.0  # past kubectl's pings (5 s raw, 10 s tunnelled) and fastpf's (5 s)


def test_long_idle_connections(
    serve: ServeInstance,
    pod: Pod,
    kubectl_bin: Callable[[str], str],
    kubectl_cache_dir: Path,
    clients: Callable[..., KubectlPortForward],
) -> None:
    """A connection opened, left idle past every ping interval, then used; and the session
    still takes new connections afterwards. kubectl 1.29 (SPDY), 1.33 (WebSocket tunnel) and
    the fastpf client, idle at the same time."""
    started = []
    for version in ("1.29", "1.33"):
        started.append(
            clients(
                [
                    kubectl_bin(version),
                    "--kubeconfig",
                    str(serve.kubeconfig),
                    "--cache-dir",
                    str(kubectl_cache_dir),
                    "port-forward",
                    "pod/patterns",
                    *_ports(pod),
                ],
                None,
            )
        )
    started.append(
        clients(
            [
                sys.executable,
                "-m",
                "fastpf",
                "--kubeconfig",
                str(serve.kubeconfig),
                "pod/patterns",
                *_ports(pod),
            ],
            None,
        )
    )
    idle = []
    for pf in started:
        sock = socket.create_connection(("127.0.0.1", pf.local_port(pod.reply)), timeout=30)
        sock.sendall(b"before the idle, ")
        idle.append(sock)
    time.sleep(IDLE_S)
    for pf, sock in zip(started, idle, strict=True):
        with sock:
            answer = halfclose_and_read(sock, b"after it")
        body = b"before the idle, after it"
        assert answer == f"{len(body)} {hashlib.sha256(body).hexdigest()}\n".encode(), pf.output()
        assert request_halfclose_reply(pf.local_port(pod.reply), b"x") == (
            f"1 {hashlib.sha256(b'x').hexdigest()}\n".encode()
        )
        assert pf.proc.poll() is None, pf.output()
