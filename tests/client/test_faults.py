"""fastpf behind a fault-injecting TCP proxy (delays, random splits, random cuts), hostile
server bytes after the upgrade, and secrets never printed: transfers complete with the right
bytes or are closed, never corrupted, and fastpf never exits or prints a traceback."""

from __future__ import annotations

import base64
import datetime
import random
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.faultproxy import FaultProxy
from tests.support.patterns import Download, echo_once, upload_checked
from tests.support.processes import Fastpf
from tests.support.serve_process import TOKEN, RestartableServe, ServeInstance
from tests.support.targets import Targets
from tests.support.waits import time_until

MiB = 1 << 20


@pytest.fixture
def proxies() -> Iterator[Callable[..., FaultProxy]]:
    made: list[FaultProxy] = []

    def make(*args: Any, **kw: Any) -> FaultProxy:
        p = FaultProxy(*args, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def _via(kubeconfig: Path, port: int, out: Path, scheme: str = "https") -> Path:
    cfg = yaml.safe_load(kubeconfig.read_text())
    cfg["clusters"][0]["cluster"]["server"] = f"{scheme}://127.0.0.1:{port}"
    out.write_text(yaml.safe_dump(cfg))
    return out


def _report(name: str, **numbers: float) -> None:
    text = ", ".join(f"{k}={v:.3f}" for k, v in numbers.items())
    print(f"\n[recovery] {name}: {text}", file=sys.stderr)


@pytest.mark.parametrize("protocol", ["spdy", "websocket", "ws-channel"])
def test_fault_proxy_never_corrupts(
    protocol: str,
    tmp_path: Path,
    serve: ServeInstance,
    targets: Targets,
    proxies: Callable[..., FaultProxy],
    fastpf: Callable[..., Fastpf],
) -> None:  # noqa: F811
    proxy = proxies(
        ("127.0.0.1", serve.port),
        seed=12,
        delay_max=0.0005,
        split_max=3,
        cut_prob=0.3,
        cut_bytes=(8 << 10, 2 * MiB),
        max_cuts=5,
    )
    kc = _via(serve.kubeconfig, proxy.port, tmp_path / "kc")
    pf = fastpf(
        kc,
        "--protocol",
        protocol,
        "--connections",
        "2",
        "--ping-interval",
        "300ms",
        "--ping-timeout",
        "2s",
        "mypod",
        f":{targets.source}",
        f":{targets.sink}",
        wait=2,
    )
    src, sink = pf.local_port(targets.source), pf.local_port(targets.sink)
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        for j in range(6):  # bounded: 6 transfers per worker, each with a timeout
            if (i + j) % 2:
                result = upload_checked(sink, 4 * MiB, timeout=30)
            else:
                dl = Download(src, 4 * MiB, timeout=30)
                result = dl.run()
            with lock:
                outcomes.append(result)

    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            worker(i)
        except BaseException as exc:  # an AssertionError here is corruption
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    # A cut resets every transfer in flight on its upgraded connection (up to all four
    # workers'), so at most 5 cuts leave some of the 24 transfers complete.
    assert len(outcomes) == 24
    assert pf.proc.poll() is None, pf.output()
    assert proxy.stats.cuts >= 1
    assert outcomes.count("complete") >= 1, outcomes
    # Faults off, every connection cut once more: a clean transfer comes back.
    proxy.enabled = False
    proxy.cut_all()
    cut = time.monotonic()
    recover = time_until(lambda: Download(src, 4 * MiB, timeout=10).run() == "complete", 20)
    _report(
        f"fault proxy ({protocol})",
        cuts=proxy.stats.cuts,
        completed=outcomes.count("complete"),
        closed=24 - outcomes.count("complete"),
        clean_transfer_after_last_cut_s=time.monotonic() - cut,
        time_until=recover,
    )
    assert pf.proc.poll() is None
    assert pf.interrupt() == 0
    assert "Traceback" not in pf.output()


def test_checked_download_sees_a_flipped_byte() -> None:
    """The transfer checks above can fail: one wrong byte in the stream is caught."""
    import socket

    from tests.support.patterns import PATTERN

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve_once() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(64)
            data = bytearray(PATTERN * 2)
            data[MiB + 12345] ^= 0x40
            conn.sendall(data)

    th = threading.Thread(target=serve_once, daemon=True)
    th.start()
    dl = Download(port, 2 * MiB, timeout=10)
    with pytest.raises(AssertionError, match="corrupt"):
        dl.run()
    assert dl.corrupt_at is not None and MiB <= dl.corrupt_at <= MiB + 12345
    th.join(10)
    server.close()


# ---- hostile server bytes after the upgrade ---------------------------------------------------


def _ctrl(ftype: int, flags: int, payload: bytes, version: int = 3) -> bytes:
    return struct.pack(">HHI", 0x8000 | version, ftype, (flags << 24) | len(payload)) + payload


def _spdy_fuzz(rng: random.Random, i: int) -> bytes:
    kind = i % 6
    if kind == 0:
        return rng.randbytes(rng.randint(1, 512))
    if kind == 1:  # control frame of another SPDY version
        return _ctrl(1, 0, rng.randbytes(16), version=2)
    if kind == 2:  # SYN_STREAM whose header block is not zlib
        return _ctrl(1, 0, struct.pack(">IIH", 2, 0, 0) + rng.randbytes(40))
    if kind == 3:  # SETTINGS claiming more entries than it carries
        return _ctrl(4, 0, struct.pack(">I", 1000) + rng.randbytes(8))
    if kind == 4:  # an unknown control type with a wrong length, then noise
        return _ctrl(0x7FF, 0, rng.randbytes(3)) + rng.randbytes(64)
    return struct.pack(">II", 0, 0x01FFFFFF) + rng.randbytes(16)  # DATA, length > the limit


def _ws_binary(payload: bytes) -> bytes:
    n = len(payload)
    head = bytes([0x82]) + (bytes([n]) if n < 126 else struct.pack(">BH", 126, n))
    return head + payload


def _client_close_codes(data: bytes) -> list[int]:
    """Masked WebSocket close frames (code only) in client -> server bytes."""
    codes = []
    pos = data.find(b"\x88\x82")
    for _ in range(64):
        if pos < 0 or pos + 8 > len(data):
            break
        mask = data[pos + 2 : pos + 6]
        raw = bytes(b ^ mask[k] for k, b in enumerate(data[pos + 6 : pos + 8]))
        codes.append(struct.unpack(">H", raw)[0])
        pos = data.find(b"\x88\x82", pos + 1)
    return codes


def _goaway_statuses(data: bytes) -> list[int]:
    out = []
    pos = data.find(b"\x80\x03\x00\x07\x00\x00\x00\x08")
    for _ in range(64):
        if pos < 0 or pos + 16 > len(data):
            break
        out.append(struct.unpack(">I", data[pos + 12 : pos + 16])[0])
        pos = data.find(b"\x80\x03\x00\x07\x00\x00\x00\x08", pos + 1)
    return out


@pytest.mark.parametrize("protocol", ["spdy", "websocket"])
def test_hostile_bytes_after_upgrade(
    protocol: str,
    tmp_path: Path,
    serve_factory: Callable[..., ServeInstance],
    targets: Targets,
    proxies: Callable[..., FaultProxy],
    fastpf: Callable[..., Fastpf],
) -> None:  # noqa: F811
    srv = serve_factory(tls=False)  # plain http: the proxy sees the 101 and injects after it
    rng = random.Random(7)
    count = 10

    def inject(n: int) -> bytes | None:
        if n >= count:
            return None
        data = _spdy_fuzz(rng, n)
        if protocol == "websocket" and n % 2:
            return _ws_binary(data)  # well-formed WebSocket, hostile SPDY inside
        return data

    proxy = proxies(("127.0.0.1", srv.port), inject=inject)
    kc = _via(srv.kubeconfig, proxy.port, tmp_path / "kc", scheme="http")
    pf = fastpf(
        kc,
        "--protocol",
        protocol,
        "--connections",
        "1",
        "--ping-interval",
        "200ms",
        "--ping-timeout",
        "1s",
        "mypod",
        f":{targets.echo}",
        wait=1,
    )
    echo = pf.local_port(targets.echo)
    recover = time_until(lambda: echo_once(echo, b"clean", timeout=3) == b"clean", 40)
    assert proxy.stats.injected == count
    assert pf.proc.poll() is None, pf.output()
    out = pf.output()
    assert "Traceback" not in out and "protocol error" in out, out
    statuses = [s for kept in proxy.stats.after_inject for s in _goaway_statuses(bytes(kept))]
    codes = [c for kept in proxy.stats.after_inject for c in _client_close_codes(bytes(kept))]
    if protocol == "spdy":
        assert 1 in statuses, statuses  # GOAWAY(PROTOCOL_ERROR)
    else:
        assert 1002 in codes, codes  # WebSocket close: protocol error
    _report(f"hostile bytes ({protocol}, {count} injected connections)", first_clean_echo_s=recover)
    assert pf.interrupt() == 0


# ---- secrets ---------------------------------------------------------------------------------


def _client_cert() -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fastpf-test-user")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


@pytest.mark.parametrize("verbosity", ["0", "10"])
@pytest.mark.parametrize("cred", ["token", "exec"])
def test_secrets_never_printed(
    verbosity: str, cred: str, tmp_path: Path, targets: Targets, fastpf: Callable[..., Fastpf]
) -> None:  # noqa: F811
    """Through a reconnect with 401s (serve back with another token first), nothing secret
    reaches stdout or stderr: not the token, not the client key, not the exec credential."""
    srv = RestartableServe(tmp_path / "srv")
    try:
        cert, key = _client_cert()
        cfg = yaml.safe_load(srv.kubeconfig.read_text())
        user: dict[str, Any] = {
            "client-certificate-data": base64.b64encode(cert).decode(),
            "client-key-data": base64.b64encode(key).decode(),
        }
        if cred == "token":
            user["token"] = TOKEN
        else:
            plugin = tmp_path / "plugin.py"
            plugin.write_text(f"""#!{sys.executable}
import json
print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                   "status": {{"token": {TOKEN!r}}}}}))
""")
            plugin.chmod(0o755)
            user["exec"] = {
                "apiVersion": "client.authentication.k8s.io/v1",
                "interactiveMode": "Never",
                "command": str(plugin),
            }
        cfg["users"][0]["user"] = user
        kc = tmp_path / "kc"
        kc.write_text(yaml.safe_dump(cfg))
        pf = fastpf(kc, "-v", verbosity, "--protocol", "spdy", "mypod", f":{targets.echo}", wait=1)
        echo = pf.local_port(targets.echo)
        assert echo_once(echo, b"a") == b"a"
        srv.kill(signal.SIGKILL)
        srv.restart(token="some-other-token-000")  # our credential now gets 401
        time.sleep(1.5)
        srv.kill(signal.SIGKILL)
        srv.restart()
        time_until(lambda: echo_once(echo, b"b", timeout=3) == b"b", 15)
        assert pf.interrupt() == 0
        out = pf.output() + "".join(i.stdout_text() + i.stderr_text() for i in srv.started)
        assert "Unauthorized" in out or verbosity == "0"
        secrets = [TOKEN, base64.b64encode(TOKEN.encode()).decode()]
        secrets += [ln for ln in key.decode().splitlines() if "PRIVATE KEY" not in ln and ln]
        secrets.append(base64.b64encode(key).decode()[:40])
        for secret in secrets:
            assert secret not in out, f"secret leaked at -v {verbosity}"
    finally:
        srv.close()
