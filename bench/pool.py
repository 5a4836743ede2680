"""What the pool of upgraded connections (`fastpf --connections N`) does, measured end to end:
fastpf -> fastpf serve (TLS) -> benchmark target, for N = 1, 2, 4, 8.

Per N: aggregate download rate over 8 and 64 parallel connections (every byte checked against
the pattern, bench/loadgen.py), the same 8 connections while one more local reader is stalled
(it asked for data and stopped reading: SPDY has no per-stream flow control, so it stops its
whole upgraded connection), the client's CPU seconds per GiB, and its idle RSS. "starved"
counts connections that got no byte in the window: a local reader slower than the stream
(here the load generator itself, busy with 64 sockets) pauses its whole upgraded connection,
new streams' replies included, so with one connection some of 64 wait seconds.

    python3 bench/pool.py              # ~6 min: N = 1 2 4 8, 3 s windows, median of 3 rounds
    python3 bench/pool.py --quick      # ~40 s: N = 1 4, 2 s windows, one round
    python3 bench/pool.py --protocol websocket

Results go to bench/results/pool-latest.md and pool-latest.json (only the latest run is kept).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402
import procs  # noqa: E402
from run import ROOT, child_env, ensure_built  # noqa: E402

RESULTS = HERE / "results"
# After a window: streams of aborted connections that still wait for their SYN_REPLY must end
# before the next window, or the pool's load counts skew where the next connections go.
SETTLE = 1.5


class _Counter(asyncio.BufferedProtocol):
    """A download (op D) that counts and checks bytes; `stall_after` stops reading there."""

    def __init__(self, stall_after: int | None = None) -> None:
        self.buf = bytearray(loadgen.BUFFER)
        self.view = memoryview(self.buf)
        self.reader = loadgen.RecordReader()
        self.bytes = 0
        self.stall_after = stall_after
        self.transport: Any = None
        self.lost = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(b"D")

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        self.reader.feed(self.view[:nbytes])
        self.bytes += nbytes
        if self.stall_after is not None and self.bytes >= self.stall_after:
            self.transport.pause_reading()  # the local reader stops; its socket fills up

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


async def _window(port: int, conns: int, seconds: float, stalled: int = 0) -> dict[str, Any]:
    """`conns` downloads (plus `stalled` stalled ones) for `seconds`; bytes of the counted ones
    during the window (after a 0.5 s warm-up)."""
    loop = asyncio.get_running_loop()
    stall = [
        (await loop.create_connection(lambda: _Counter(1 << 20), "127.0.0.1", port))[1]
        for _ in range(stalled)
    ]
    for _ in range(100):  # bounded (5 s): until every stalled reader reached its stall point
        if all(c.bytes >= (c.stall_after or 0) for c in stall):
            break
        await asyncio.sleep(0.05)
    if stall:
        await asyncio.sleep(0.5)  # its socket buffers fill, its upgraded connection stops
    made = await asyncio.gather(
        *(loop.create_connection(_Counter, "127.0.0.1", port) for _ in range(conns))
    )
    counters = [p for _, p in made]
    await asyncio.sleep(0.5)
    start = [c.bytes for c in counters]
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    took = time.perf_counter() - t0
    got = [c.bytes - s for c, s in zip(counters, start, strict=True)]
    corrupt = sum(1 for c in [*counters, *stall] if c.reader.corrupt)
    lost = sum(1 for c in counters if c.lost)
    for c in [*counters, *stall]:
        c.transport.abort()
    await asyncio.sleep(SETTLE)
    return {
        "MBps": sum(got) / took / 1e6,
        "min_conn_MBps": min(got) / took / 1e6,
        "starved": sum(1 for g in got if g == 0),
        "corrupt": corrupt,
        "lost": lost,
    }


def _forwarder(
    reg: procs.Registry, kubeconfig: Path, protocol: str, n: int, target_port: int
) -> tuple[procs.Proc, int]:
    local = procs.free_port()
    p = reg.start(
        f"fastpf-{n}",
        [
            sys.executable,
            "-m",
            "fastpf",
            "--kubeconfig",
            str(kubeconfig),
            "-q",
            "--protocol",
            protocol,
            "--connections",
            str(n),
            "bench",
            f"{local}:{target_port}",
        ],
        env=child_env(),
        cwd=str(ROOT),
    )
    if not p.wait_for_line(r"Forwarding from 127\.0\.0\.1", 30):
        raise RuntimeError(f"fastpf did not start: {p.tail()}")
    time.sleep(0.5)  # the rest of the pool connects in the background
    return p, local


def measure(
    reg: procs.Registry, kubeconfig: Path, protocol: str, n: int, target_port: int, seconds: float
) -> dict[str, Any]:
    fwd, port = _forwarder(reg, kubeconfig, protocol, n, target_port)
    try:
        row: dict[str, Any] = {
            "connections": n,
            "rss_idle_MiB": procs.vm_kib(fwd.pid, "VmRSS") / 1024,
        }
        cpu0 = procs.cpu_seconds(fwd.pid)
        moved = 0.0
        for label, conns, stalled in (("p8", 8, 0), ("p64", 64, 0), ("p8_stall1", 8, 1)):
            res = loadgen.run(_window(port, conns, seconds, stalled))
            row[label] = res
            moved += res["MBps"] * seconds * 1e6
        row["client_cpu_s_per_GiB"] = (procs.cpu_seconds(fwd.pid) - cpu0) / max(moved / 2**30, 1e-9)
        row["alive"] = fwd.alive()
        return row
    finally:
        reg.stop(fwd)


def _median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every figure over the rounds of one N; errors are summed."""
    out: dict[str, Any] = {
        "connections": runs[0]["connections"],
        "rounds": len(runs),
        "alive": all(r["alive"] for r in runs),
    }
    for key in ("rss_idle_MiB", "client_cpu_s_per_GiB"):
        out[key] = _median([r[key] for r in runs])
    for label in ("p8", "p64", "p8_stall1"):
        out[label] = {
            k: _median([r[label][k] for r in runs]) for k in ("MBps", "min_conn_MBps", "starved")
        }
        out[label]["corrupt"] = sum(r[label]["corrupt"] for r in runs)
        out[label]["lost"] = sum(r[label]["lost"] for r in runs)
    return out


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    out = [
        f"# Pool benchmark ({meta['when']}, protocol {meta['protocol']}, "
        f"{meta['seconds']:g} s windows, median of {meta['rounds']} rounds, "
        f"{meta['cpus']} CPUs)",
        "",
        "fastpf -> fastpf serve (TLS) -> target; download rates in MB/s, every byte checked.",
        "`stall1`: one more local reader stopped reading; `min/conn`: the slowest of the "
        "counted connections; `starved`: counted connections that got nothing.",
        "",
        "| --connections | 8 conns MB/s | 64 conns MB/s | 64: starved | 64: min/conn MB/s | "
        "8 + stall1 MB/s | stall1: starved of 8 | client CPU s/GiB | idle RSS MiB | errors |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        errors = sum(r[k]["corrupt"] + r[k]["lost"] for k in ("p8", "p64", "p8_stall1"))
        out.append(
            f"| {r['connections']} | {r['p8']['MBps']:.0f} | {r['p64']['MBps']:.0f} | "
            f"{r['p64']['starved']:g} | {r['p64']['min_conn_MBps']:.2f} | {r['p8_stall1']['MBps']:.0f} | "
            f"{r['p8_stall1']['starved']:g} | {r['client_cpu_s_per_GiB']:.2f} | "
            f"{r['rss_idle_MiB']:.1f} | {errors} |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--protocol", default="spdy", choices=["spdy", "websocket"])
    ap.add_argument("--sizes", default="")
    ap.add_argument("--seconds", type=float, default=0.0)
    ap.add_argument(
        "--rounds", type=int, default=0, help="repetitions (median; default 3, quick 1)"
    )
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",") if x] or ([1, 4] if args.quick else [1, 2, 4, 8])
    seconds = args.seconds or (2.0 if args.quick else 3.0)
    rounds = args.rounds or (1 if args.quick else 3)
    loadgen.raise_nofile()
    reason = ensure_built()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="fastpf-pool-") as tmp:
        work = Path(tmp)
        reg = procs.Registry(work)
        try:
            target = reg.start("target", [sys.executable, str(HERE / "loadgen.py"), "target"])
            m = target.wait_for_line(r"PORT (\d+)", 15)
            if not m:
                raise RuntimeError(f"target did not start: {target.tail()}")
            target_port = int(m.group(1))
            kubeconfig = work / "kubeconfig"
            reg.start(
                "serve",
                [
                    sys.executable,
                    "-m",
                    "fastpf",
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--kubeconfig-out",
                    str(kubeconfig),
                ],
                env=child_env(),
                cwd=str(ROOT),
            )
            for _ in range(300):  # bounded: 30 s for serve to write its kubeconfig
                if kubeconfig.exists():
                    break
                time.sleep(0.1)
            runs: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}
            for r in range(rounds):  # N interleaved, so machine noise spreads over all of them
                order = sizes[r % len(sizes) :] + sizes[: r % len(sizes)]
                for n in order:
                    row = measure(reg, kubeconfig, args.protocol, n, target_port, seconds)
                    runs[n].append(row)
                    print(json.dumps(row), flush=True)
            rows = [combine(runs[n]) for n in sizes]
        finally:
            reg.stop_all()
    import os

    when = time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime())
    meta = {
        "when": when,
        "protocol": args.protocol,
        "seconds": seconds,
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "runs": {str(n): v for n, v in runs.items()},
    }
    text = render(rows, meta)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pool-latest.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (RESULTS / "pool-latest.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
