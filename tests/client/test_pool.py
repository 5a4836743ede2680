"""The pool of upgraded connections end to end: 1,000 concurrent 1 MiB downloads with sha256
and no error; a local reader stalled for 10 s (and one that never reads) keeps fastpf's and
serve's memory bounded while other connections of the pool keep flowing; one lost upgraded
connection of the pool does not end the others' transfers."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.support.faultproxy import FaultProxy
from tests.support.patterns import Download, pattern_sha256
from tests.support.processes import Fastpf, rss_kib
from tests.support.serve_process import ServeInstance
from tests.support.targets import Targets
from tests.support.waits import time_until

MiB = 1 << 20
# Stalled-reader bound (RSS growth over the idle forwarder while a reader is stalled): the
# relay's local high-water mark (1 MiB) plus the upgraded connection's receive buffers and
# write-buffer high-water marks (4 MiB) per side, with room for allocator slack.
STALL_RSS_BOUND_MIB = 48


async def _many_downloads(port: int, n: int, size: int) -> list[str]:
    want = pattern_sha256(size)

    async def one() -> str:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"{size}\n".encode())
            h = hashlib.sha256()
            got = 0
            for _ in range(1 << 20):  # bounded: each read returns >= 1 byte or ends
                if got >= size:
                    break
                chunk = await asyncio.wait_for(reader.read(1 << 18), 60)
                if not chunk:
                    break
                h.update(chunk)
                got += len(chunk)
            writer.close()
            return "ok" if got == size and h.hexdigest() == want else f"bad {got}"
        except (OSError, asyncio.TimeoutError) as exc:
            return f"error {exc!r}"

    return list(await asyncio.gather(*(one() for _ in range(n))))


@pytest.mark.parametrize("protocol", ["spdy"])
def test_thousand_concurrent_downloads_over_the_pool(
    protocol: str, serve: ServeInstance, targets: Targets, fastpf: Callable[..., Fastpf]
) -> None:  # noqa: F811
    pf = fastpf(
        serve.kubeconfig,
        "-q",
        "--protocol",
        protocol,
        "--connections",
        "4",
        "mypod",
        f":{targets.source}",
        wait=1,
    )
    start = time.monotonic()
    results = asyncio.run(_many_downloads(pf.local_port(targets.source), 1000, MiB))
    took = time.monotonic() - start
    bad = [r for r in results if r != "ok"]
    assert not bad, bad[:5]
    print(
        f"\n[pool] 1000 x 1 MiB ({protocol}, 4 connections): {took:.2f}s, {1000 / took:.0f} MiB/s",
        file=sys.stderr,
    )
    assert pf.proc.poll() is None
    assert pf.interrupt() == 0
    assert not [ln for ln in pf.stderr if "error" in ln.lower()], pf.stderr


@pytest.mark.parametrize("mode", ["stalled", "never-reads"])
def test_stalled_reader_keeps_memory_bounded(
    mode: str, serve: ServeInstance, targets: Targets, fastpf: Callable[..., Fastpf]
) -> None:  # noqa: F811
    pf = fastpf(
        serve.kubeconfig,
        "--protocol",
        "spdy",
        "--connections",
        "2",
        "mypod",
        f":{targets.source}",
        wait=1,
    )
    src = pf.local_port(targets.source)
    assert Download(src, 8 * MiB).run() == "complete"  # warm up both sides
    base_client, base_serve = rss_kib(pf.proc.pid), rss_kib(serve.process.pid)
    size = 512 * MiB
    if mode == "stalled":
        stalled = Download(src, size, pause_after=16 * MiB, pause=10.0, timeout=60)
        th = threading.Thread(target=stalled.run, daemon=True)
        th.start()
        time_until(lambda: stalled.got >= 16 * MiB, 20)
        sock = None
    else:  # connects, asks for data and never reads
        sock = socket.create_connection(("127.0.0.1", src), timeout=30)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        sock.sendall(f"{size}\n".encode())
    peak_client = peak_serve = 0
    other_done = False
    t0 = time.monotonic()
    other = Download(src, 64 * MiB, timeout=30)  # goes to the other upgraded connection
    oth = threading.Thread(target=other.run, daemon=True)
    oth.start()
    for _ in range(200):  # 10 s of samples
        if time.monotonic() - t0 >= 9.5:
            break
        peak_client = max(peak_client, rss_kib(pf.proc.pid))
        peak_serve = max(peak_serve, rss_kib(serve.process.pid))
        other_done = other_done or other.outcome == "complete"
        time.sleep(0.05)
    oth.join(30)
    growth_client = (peak_client - base_client) / 1024
    growth_serve = (peak_serve - base_serve) / 1024
    print(
        f"\n[pool] {mode} reader 10s: RSS growth client {growth_client:.1f} MiB, serve "
        f"{growth_serve:.1f} MiB (bound {STALL_RSS_BOUND_MIB} MiB); other download during "
        f"the stall: {other.outcome}",
        file=sys.stderr,
    )
    assert other_done, other.outcome  # the pool isolates the stalled reader
    assert growth_client < STALL_RSS_BOUND_MIB
    assert growth_serve < STALL_RSS_BOUND_MIB
    if sock is None:
        th.join(60)
        assert stalled.outcome == "complete", (stalled.outcome, stalled.got)
    else:
        sock.close()
    assert pf.proc.poll() is None
    assert pf.interrupt() == 0


def test_one_lost_connection_spares_the_others(
    tmp_path: Path, serve: ServeInstance, targets: Targets, fastpf: Callable[..., Fastpf]
) -> None:  # noqa: F811
    """Transfers on the other connections of the pool go on when one is cut."""
    proxy = FaultProxy(("127.0.0.1", serve.port))
    try:
        cfg = yaml.safe_load(serve.kubeconfig.read_text())
        cfg["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
        kc = tmp_path / "kc"
        kc.write_text(yaml.safe_dump(cfg))
        pf = fastpf(
            kc,
            "-v",
            "4",
            "--protocol",
            "spdy",
            "--connections",
            "4",
            "mypod",
            f":{targets.source}",
            wait=1,
        )
        src = pf.local_port(targets.source)
        time_until(lambda: sum("] upgraded /api" in ln for ln in list(pf.stderr)) >= 4, 10)
        dls = [
            Download(src, 256 * MiB, timeout=60, pause_after=4 * MiB, pause=1.0) for _ in range(4)
        ]
        threads = [threading.Thread(target=d.run, daemon=True) for d in dls]
        for t in threads:
            t.start()
        time_until(lambda: all(d.got >= 4 * MiB for d in dls), 20)
        assert proxy.cut_one()
        for t in threads:
            t.join(60)
        outcomes = sorted(d.outcome for d in dls)
        assert outcomes == ["complete", "complete", "complete", "reset"], outcomes
        assert pf.proc.poll() is None
        assert pf.interrupt() == 0
    finally:
        proxy.close()
