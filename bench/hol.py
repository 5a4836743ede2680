"""Head-of-line measurement: one forwarded connection whose local reader stalls, and what it
does to the other connections of the same session.

    python3 bench/hol.py                       # spdy, websocket, ws-channel; 5 s stall
    python3 bench/hol.py --protocol spdy --stall 10

Connection A downloads from the target (operation ``D``: endless records) and its reader
stops reading for `--stall` seconds. Connection B, through the same `fastpf` client, echoes
16 bytes every 20 ms the whole time. Reported per protocol: B's longest wait for an echo
(how long the others stall), how many echoes B completed during the stall, and how much
memory A's stalled stream holds (RSS growth of client and serve during the stall).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from load import start_chain  # noqa: E402
from procs import Registry, vm_kib  # noqa: E402

ECHO_EVERY = 0.02


async def _measure(port: int, stall: float, client_pid: int, serve_pid: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    # B: echo ping-pong for the whole run
    b_reader, b_writer = await asyncio.open_connection("127.0.0.1", port)
    b_writer.write(b"E")
    waits: list[tuple[float, float]] = []  # (sent at, seconds until the echo)
    stop = asyncio.Event()

    async def pingpong() -> None:
        while not stop.is_set():  # bounded by `stop`, set after the stall
            sent = loop.time()
            b_writer.write(b"0123456789abcdef")
            await asyncio.wait_for(b_reader.readexactly(16), stall + 60)
            waits.append((sent, loop.time() - sent))
            await asyncio.sleep(ECHO_EVERY)

    pinger = asyncio.ensure_future(pingpong())
    await asyncio.sleep(1.0)
    # A: download, read a little, then stall
    a_reader, a_writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
    a_writer.write(b"D")
    await a_reader.readexactly(1 << 20)
    rss0 = (vm_kib(client_pid, "VmRSS"), vm_kib(serve_pid, "VmRSS"))
    stall_start = loop.time()
    cast(asyncio.Transport, a_writer.transport).pause_reading()  # the local reader stops reading
    await asyncio.sleep(stall)
    rss1 = (vm_kib(client_pid, "VmRSS"), vm_kib(serve_pid, "VmRSS"))
    stall_end = loop.time()
    a_writer.transport.abort()  # A gives up; B must recover at once
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.wait_for(pinger, stall + 60)
    b_writer.close()
    during = [w for t, w in waits if stall_start <= t < stall_end]
    longest = max((w for _t, w in waits), default=0.0)
    return {
        "stall_s": stall,
        "others_longest_wait_s": round(longest, 3),
        "others_echoes_during_stall": len(during),
        "others_echoes_expected": int(stall / ECHO_EVERY),
        "client_rss_growth_mib": round((rss1[0] - rss0[0]) / 1024, 1),
        "serve_rss_growth_mib": round((rss1[1] - rss0[1]) / 1024, 1),
    }


def measure(protocol: str, stall: float, tls: bool) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="fastpf-hol-"))
    reg = Registry(workdir)
    try:
        serve, client, _target, local = start_chain(reg, workdir, protocol, tls)
        start = time.monotonic()
        result = asyncio.run(
            asyncio.wait_for(_measure(local, stall, client.pid, serve.pid), stall + 120)
        )
        result["protocol"] = protocol
        result["seconds"] = round(time.monotonic() - start, 1)
        return result
    finally:
        reg.stop_all()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--protocol", action="append", choices=["spdy", "websocket", "ws-channel"])
    ap.add_argument("--stall", type=float, default=5.0)
    ap.add_argument("--no-tls", action="store_true")
    args = ap.parse_args(argv)
    for protocol in args.protocol or ["spdy", "websocket", "ws-channel"]:
        print(json.dumps(measure(protocol, args.stall, not args.no_tls)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
