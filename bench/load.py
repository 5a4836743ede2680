"""Load test: N concurrent checksummed connections through `fastpf` and `fastpf serve`.

    python3 bench/load.py                      # 10,000 connections, SPDY, TLS
    python3 bench/load.py --conns 500 --protocol websocket

The target is the benchmark's echo (`loadgen.py target`, operation ``E``). The load generator
(its own process) first opens every connection through the client's local port and holds
them all; then each connection sends `--rounds` blocks of `--block` bytes (64 KiB: at most
that much in flight per connection), reads each echo back and compares its sha256 with what it
sent. A connection is lost when it fails, ends early or gets different bytes back.

The client and serve run at the descriptor limits this process has (as a user would start
them; both raise their soft limit to the hard one themselves). Reported: connections held at
once, lost, duration, peak RSS (VmHWM) and RSS after the run of client and serve, their
descriptor limits, and the client's error lines. Not part of CI (a 500-connection run is, in
tests/test_hardening.py). Exit status 0 only when nothing was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from procs import Registry, vm_kib  # noqa: E402

CONNECT_PARALLEL = 512  # connection attempts in flight while opening
FORWARD_RE = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+) ->")


# ---------------------------------------------------------------------------------------------
# the load generator (runs in its own process: `load.py worker PORT N ROUNDS BLOCK`)


async def _one(
    i: int,
    port: int,
    rounds: int,
    block: int,
    gate: asyncio.Semaphore,
    all_open: asyncio.Event,
    stats: dict[str, Any],
) -> None:
    writer = None
    try:
        async with gate:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, limit=2 * block), 120
            )
        writer.write(b"E")  # the target's echo operation
        stats["open"] += 1
        stats["peak_open"] = max(stats["peak_open"], stats["open"])
        if stats["open"] + stats["lost"] >= stats["n"]:
            all_open.set()
        await asyncio.wait_for(all_open.wait(), 300)
        seed = hashlib.sha256(i.to_bytes(4, "big")).digest()
        payload = (seed * (block // 32 + 1))[:block]
        for r in range(rounds):
            data = bytes([r & 0xFF]) + payload[1:]
            writer.write(data)
            got = await asyncio.wait_for(reader.readexactly(block), 300)
            if hashlib.sha256(got).digest() != hashlib.sha256(data).digest():
                stats["corrupted"] += 1
                raise ValueError("echo differs")
        stats["ok"] += 1
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as exc:
        stats["lost"] += 1
        if len(stats["errors"]) < 5:
            stats["errors"].append(f"{i}: {exc!r}"[:200])
        if stats["open"] + stats["lost"] >= stats["n"]:
            all_open.set()
    finally:
        if writer is not None:
            stats["open"] -= 1
            writer.close()


async def _load(port: int, n: int, rounds: int, block: int) -> dict[str, Any]:
    stats: dict[str, Any] = {
        "n": n,
        "ok": 0,
        "lost": 0,
        "corrupted": 0,
        "open": 0,
        "peak_open": 0,
        "errors": [],
    }
    gate = asyncio.Semaphore(CONNECT_PARALLEL)
    all_open = asyncio.Event()
    start = time.monotonic()
    await asyncio.gather(*(_one(i, port, rounds, block, gate, all_open, stats) for i in range(n)))
    stats["seconds"] = round(time.monotonic() - start, 2)
    stats["bytes_each_way"] = stats["ok"] * rounds * block
    del stats["open"]
    return stats


def worker(argv: list[str]) -> int:
    port, n, rounds, block = (int(a) for a in argv)
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # the load generator needs a descriptor per connection too
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        result = uvloop.run(_load(port, n, rounds, block))
    except ImportError:
        result = asyncio.run(_load(port, n, rounds, block))
    print(json.dumps(result), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# the harness


def _limits(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return f"{soft}/{hard}"
    return "?"


def _wait_file(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # bounded by the deadline
        if path.exists() and path.stat().st_size:
            return True
        time.sleep(0.05)
    return False


def start_chain(
    reg: Registry, workdir: Path, protocol: str, tls: bool
) -> tuple[Any, Any, int, int]:
    """The benchmark target, `fastpf serve` and a `fastpf` client forwarding a random local
    port to the target. Returns (serve, client, target port, local port)."""
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "NO_PROXY": "*"}
    target = reg.start("target", [sys.executable, str(HERE / "loadgen.py"), "target"])
    m = target.wait_for_line(r"PORT (\d+)", 15)
    if not m:
        raise RuntimeError(f"target did not start: {target.tail()}")
    target_port = int(m.group(1))
    kubeconfig = workdir / "kubeconfig"
    serve_argv = [
        sys.executable,
        "-m",
        "fastpf",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--kubeconfig-out",
        str(kubeconfig),
        "--pod-address",
        "127.0.0.1",
    ]
    if not tls:
        serve_argv.append("--no-tls")
    serve = reg.start("serve", serve_argv, env=env, cwd=str(ROOT))
    if not _wait_file(kubeconfig, 30):
        raise RuntimeError(f"fastpf serve did not start: {serve.tail()}")
    client = reg.start(
        "client",
        [
            sys.executable,
            "-m",
            "fastpf",
            "--kubeconfig",
            str(kubeconfig),
            "--protocol",
            protocol,
            "pod/bench",
            f":{target_port}",
        ],
        env=env,
        cwd=str(ROOT),
    )
    m = client.wait_for_line(FORWARD_RE.pattern, 30)
    if not m:
        raise RuntimeError(f"fastpf did not start forwarding: {client.tail()}")
    return serve, client, target_port, int(m.group(1))


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="fastpf-load-"))
    reg = Registry(workdir)
    try:
        serve, client, _target_port, local = start_chain(
            reg, workdir, args.protocol, not args.no_tls
        )
        load = reg.start(
            "load",
            [
                sys.executable,
                str(HERE / "load.py"),
                "worker",
                str(local),
                str(args.conns),
                str(args.rounds),
                str(args.block),
            ],
            pipes=True,
        )
        assert load.popen.stdout is not None
        line = load.popen.stdout.readline()  # bounded: the worker's own waits are bounded
        result: dict[str, Any] = json.loads(line) if line else {"error": load.tail()}
        result.update(
            {
                "protocol": args.protocol,
                "tls": not args.no_tls,
                "client_peak_rss_mib": round(vm_kib(client.pid, "VmHWM") / 1024, 1),
                "serve_peak_rss_mib": round(vm_kib(serve.pid, "VmHWM") / 1024, 1),
                "client_nofile": _limits(client.pid),
                "serve_nofile": _limits(serve.pid),
            }
        )
        time.sleep(args.settle)  # sessions end, memory goes back
        result["client_rss_after_mib"] = round(vm_kib(client.pid, "VmRSS") / 1024, 1)
        result["serve_rss_after_mib"] = round(vm_kib(serve.pid, "VmRSS") / 1024, 1)
        result["client_error_lines"] = client.count_lines(r"^E\d{4} ")
        result["client_accept_lines"] = client.count_lines("error accepting connection")
        return result
    finally:
        reg.stop_all()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:
        return worker(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conns", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=4, help="blocks echoed per connection")
    ap.add_argument("--block", type=int, default=64 << 10, help="bytes in flight per connection")
    ap.add_argument("--protocol", default="spdy", choices=["spdy", "websocket", "ws-channel"])
    ap.add_argument("--no-tls", action="store_true")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds before the RSS-after sample")
    args = ap.parse_args(argv)
    result = run(args)
    print(json.dumps(result, indent=2))
    return 0 if result.get("lost") == 0 and result.get("ok") == args.conns else 1


if __name__ == "__main__":
    sys.exit(main())
