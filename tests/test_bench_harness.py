"""Quick check of the benchmark harness logic (bench/loadgen.py, bench/procs.py, bench/report.py):
the load generators run against the target directly and verify every byte; a corrupting relay
is caught; the report renders. No timed assertions; the whole file takes a few seconds."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402
import procs  # noqa: E402
import report  # noqa: E402
import run  # noqa: E402


@pytest.fixture(scope="module")
def target_port() -> Iterator[int]:
    """The benchmark target in its own process, as the harness runs it; killed by PID."""
    p = subprocess.Popen(
        [sys.executable, str(BENCH / "loadgen.py"), "target"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        line = p.stdout.readline() if p.stdout else ""
        assert line.startswith("PORT "), line
        yield int(line.split()[1])
    finally:
        p.kill()
        p.wait(timeout=10)
        if p.stdout:
            p.stdout.close()


def test_record_reader_accepts_any_split() -> None:
    stream = bytearray()
    off = 0
    for size in (5, 70_000, 3):
        stream += loadgen.record_header(size)
        stream += loadgen.PATTERN[off % loadgen.PERIOD :][:size]
        off += size
    stream += loadgen._END.pack(0, off)
    for step in (1, 7, 4096, len(stream)):
        r = loadgen.RecordReader()
        for i in range(0, len(stream), step):
            r.feed(memoryview(stream)[i : i + step])
        assert r.ok, step


def test_record_reader_detects_corruption_truncation_and_trailing() -> None:
    good = loadgen.record_header(1000) + loadgen.PATTERN[:1000] + loadgen._END.pack(0, 1000)
    bad = bytearray(good)
    bad[500] ^= 1
    r = loadgen.RecordReader()
    r.feed(bytes(bad))
    assert r.done and r.corrupt and not r.ok
    r = loadgen.RecordReader()
    r.feed(good[:-20])
    assert not r.done and not r.ok
    r = loadgen.RecordReader()
    r.feed(loadgen.record_header(1000) + loadgen.PATTERN[:1000] + loadgen._END.pack(0, 999))
    assert not r.ok  # announced total disagrees
    r = loadgen.RecordReader()
    r.feed(good + b"x")
    assert not r.ok and r.extra == 1


@pytest.mark.parametrize("direction", ["down", "up"])
@pytest.mark.parametrize("conns", [1, 4])
def test_bulk_direct_verifies(target_port: int, direction: str, conns: int) -> None:
    r = loadgen.run(loadgen.bulk("127.0.0.1", target_port, direction, conns, 0.3))
    assert r["errors"] == 0, r
    assert r["bytes"] > 0 and r["MBps"] > 0


def test_churn_pingpong_hold_direct(target_port: int) -> None:
    r = loadgen.run(loadgen.churn("127.0.0.1", target_port, 10, 0.3))
    assert r["errors"] == 0 and r["conns"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0
    r = loadgen.pingpong("127.0.0.1", target_port, 0.2)
    assert r["errors"] == 0 and r["count"] > 0

    async def hold_release() -> tuple[dict[str, Any], dict[str, Any]]:
        return await loadgen.hold("127.0.0.1", target_port, 100), await loadgen.release()

    held, released = loadgen.run(hold_release())
    assert held["open"] == 100 and held["errors"] == 0
    assert released["closed"] == 100


async def _corrupting_relay(dst_port: int, flip_at: int) -> tuple[asyncio.AbstractServer, int]:
    """A relay that flips one bit of the target->client stream at byte `flip_at`."""

    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        tr, tw = await asyncio.open_connection("127.0.0.1", dst_port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, flip: bool) -> None:
            seen = 0
            for _ in range(1_000_000):  # bounded
                data = await src.read(65536)
                if not data:
                    break
                if flip and seen <= flip_at < seen + len(data):
                    b = bytearray(data)
                    b[flip_at - seen] ^= 0x10
                    data = bytes(b)
                seen += len(data)
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pump(cr, tw, False), pump(tr, cw, True), return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_corruption_through_relay_is_counted(target_port: int) -> None:
    async def go() -> dict[str, Any]:
        server, port = await _corrupting_relay(target_port, flip_at=300_000)
        async with server:
            return await loadgen.bulk("127.0.0.1", port, "down", 1, 0.2)

    r = loadgen.run(go())
    assert r["errors"] == 1 and "corrupt=True" in r["error_samples"][0]


@pytest.mark.parametrize("n", [0, 1, 5 * (1 << 20) + 3])
def test_download_eof_against_target(target_port: int, n: int) -> None:
    """The target's N op sends exactly n pattern bytes and closes; the client sees EOF."""
    r = loadgen.download_eof("127.0.0.1", target_port, n, eof_timeout=10.0, transfer_timeout=60.0)
    assert r["ok"] and r["complete"] and r["error"] == "" and r["timeout"] == "", r
    assert r["bytes"] == n and r["errors"] == 0
    assert r["eof_s"] is not None and r["eof_s"] >= 0
    if n:
        assert r["MBps"] > 0


@pytest.fixture
def one_shot() -> Iterator[Any]:
    """A pod-side server in a thread: reads the 9-byte request, sends `payload`, then closes
    (or holds the connection until the test ends). Yields a function returning its port."""
    release = threading.Event()
    threads: list[threading.Thread] = []

    def start(payload: bytes, close: bool) -> int:
        srv = socket.create_server(("127.0.0.1", 0))
        srv.settimeout(10)

        def serve() -> None:
            with srv:
                conn, _ = srv.accept()
                with conn:
                    conn.settimeout(10)
                    head = b""
                    for _ in range(9):  # bounded: the request is 9 bytes
                        if len(head) >= 9:
                            break
                        head += conn.recv(9 - len(head))
                    assert head[:1] == b"N"
                    conn.sendall(payload)
                    if not close:
                        release.wait(30)

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        threads.append(t)
        return int(srv.getsockname()[1])

    yield start
    release.set()
    for t in threads:
        t.join(10)


def test_download_eof_target_never_closes_is_a_timeout(one_shot: Any) -> None:
    n = 300_000
    port = one_shot(loadgen.PATTERN[:n], close=False)
    r = loadgen.download_eof("127.0.0.1", port, n, eof_timeout=0.5, transfer_timeout=30.0)
    assert not r["ok"] and r["timeout"] == "eof" and "no EOF" in r["error"], r
    assert r["bytes"] == n and r["complete"] and r["eof_s"] is None and r["errors"] == 1


def test_download_eof_stalled_transfer_is_a_timeout(one_shot: Any) -> None:
    port = one_shot(loadgen.PATTERN[:1000], close=False)
    r = loadgen.download_eof("127.0.0.1", port, 300_000, eof_timeout=0.5, transfer_timeout=30.0)
    assert not r["ok"] and r["timeout"] == "transfer" and "stalled" in r["error"], r
    assert r["bytes"] == 1000 and not r["complete"] and r["eof_s"] is None


@pytest.mark.parametrize("case", ["short", "extra", "corrupt"])
def test_download_eof_detects_bad_replies(one_shot: Any, case: str) -> None:
    n = 300_000
    payload = bytearray(loadgen.PATTERN[: n - 10 if case == "short" else n])
    if case == "extra":
        payload += b"xyz"
    if case == "corrupt":
        payload[123_456] ^= 1
    port = one_shot(bytes(payload), close=True)
    r = loadgen.download_eof("127.0.0.1", port, n, eof_timeout=10.0, transfer_timeout=30.0)
    assert not r["ok"] and r["errors"] == 1 and r["timeout"] == "", r
    want = {
        "short": f"EOF after {n - 10} of {n}",
        "extra": "3 bytes beyond",
        "corrupt": "corrupt from byte 123456",
    }
    assert want[case] in r["error"]


def test_eof_metrics_and_report_table() -> None:
    ok = {"ok": True, "complete": True, "MBps": 400.0, "eof_s": 0.002, "timeout": "", "error": ""}
    stuck = dict(
        ok, ok=False, eof_s=None, timeout="eof", error="no EOF within 10 s after the last byte"
    )
    slow = {
        "ok": False,
        "complete": False,
        "MBps": 0.6,
        "eof_s": None,
        "timeout": "transfer",
        "error": "transfer timeout",
    }
    m_ok = run.eof_metrics([ok, dict(ok, MBps=500.0, eof_s=0.004), dict(ok, MBps=300.0)])
    assert (
        m_ok["eof_MBps"] == 400.0
        and m_ok["eof_delay_s"] == 0.002
        and m_ok["eof_delay_max_s"] == 0.004
    )
    assert m_ok["eof_ok"] == 3 and m_ok["eof_no_eof"] == 0
    m_stuck = run.eof_metrics([dict(stuck, MBps=200.0)] * 3)
    assert (
        m_stuck["eof_MBps"] == 200.0
        and m_stuck["eof_delay_s"] is None
        and m_stuck["eof_no_eof"] == 3
    )
    m_slow = run.eof_metrics([slow])
    assert m_slow["eof_MBps"] is None and m_slow["eof_partial_MBps"] == 0.6
    result: dict[str, Any] = {
        "meta": {"durations": {"eof_mib": 64, "eof_reps": 3, "eof_timeout": 10.0}},
        "rows": {
            "kubectl-1.33": {
                "label": "kubectl 1.33",
                "status": "ok",
                "errors": 0,
                "metrics": m_slow,
            },
            "kubectl-1.29": {
                "label": "kubectl 1.29",
                "status": "ok",
                "errors": 3,
                "metrics": m_stuck,
            },
            "fastpf-spdy": {"label": "fastpf spdy", "status": "ok", "errors": 0, "metrics": m_ok},
            "direct": {
                "label": "direct",
                "status": "ok",
                "errors": 0,
                "metrics": {"down1_MBps": 9.0},
            },
        },
    }
    md = report.markdown(result)
    assert "## Download to EOF (blocking socket)" in md
    assert "| fastpf spdy | 400 | – | 2.0 / 4.0 | 3/3 | – |" in md  # kubectl 1.33 never finished
    assert "**no EOF** after the last byte in 3/3 runs" in md
    assert "**transfer timeout** at 0.6 MB/s" in md
    assert "| direct |" not in md.split("## Download to EOF")[1].split("##")[0]  # no EOF runs
    result["rows"]["kubectl-1.33"]["metrics"] = run.eof_metrics([dict(ok, MBps=100.0)])
    assert "| fastpf spdy | 400 | 4.00× |" in report.markdown(result)


def test_cpu_per_gib_by_connection_count_and_the_cpu_targets() -> None:
    """A bulk run's CPU counts towards its direction and towards its connection count; the CPU
    targets compare the one-connection figures, against kubectl 1.33 in both of its modes."""
    rows: dict[str, Any] = {}
    for key, one, eight in (
        ("fastpf-spdy", 1.0, 3.0),
        ("kubectl-1.33", 2.5, 2.0),
        ("kubectl-1.33-spdy", 1.9, 1.0),
    ):
        st = run.RowState(
            run.RowSpec(key, key, "fastpf"), {"label": key, "status": "ok", "metrics": {}}
        )
        for direction in ("down", "up"):
            for conns, seconds in ((1, one), (8, eight)):
                for k in (direction, f"{direction}{conns}"):
                    st.moved[k] += 1 << 30
                    st.cpu[("client", k)] += seconds
        st.finish()
        rows[key] = dict(st.res, errors=0)
    m = rows["fastpf-spdy"]["metrics"]
    assert m["cpu_client_down_s_per_GiB"] == 2.0  # both runs: (1 + 3) s over 2 GiB
    assert (m["cpu_client_down1_s_per_GiB"], m["cpu_client_up8_s_per_GiB"]) == (1.0, 3.0)
    result: dict[str, Any] = {"meta": {}, "rows": rows}
    t = {e["target"]: e["by_row"]["fastpf-spdy"] for e in report.targets(result)}
    assert t["client CPU s/GiB download vs kubectl 1.33"]["ratio"] == 0.4
    assert t["client CPU s/GiB upload vs kubectl 1.33"]["pass"] is True
    assert t["client CPU s/GiB upload vs kubectl 1.33 SPDY"]["ratio"] == 1.0 / 1.9
    assert t["client CPU s/GiB upload vs kubectl 1.33 SPDY"]["pass"] is False
    md = report.markdown(result)
    table = md.split("## Client CPU per GiB by connection count")[1]
    assert "| fastpf-spdy | 1.00 / 1.00 | 3.00 / 3.00 |" in table


def test_proc_measurements_and_registry(tmp_path: Path) -> None:
    reg = procs.Registry(tmp_path)
    p = reg.start(
        "spin", [sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<5: pass"]
    )
    try:
        time.sleep(0.3)
        assert procs.cpu_seconds(p.pid) > 0
        assert procs.vm_kib(p.pid, "VmHWM") > 1000
        assert procs.peak_rss_kib(p.pid)[1] == "VmHWM"
    finally:
        reg.stop_all()
    assert p.popen.poll() is not None and not reg.procs


def test_report_renders_unavailable_rows(tmp_path: Path) -> None:
    result = {
        "meta": {"started": "now", "mode": "quick", "durations": {}, "machine": {}},
        "rows": {
            "direct": {
                "label": "direct",
                "status": "ok",
                "errors": 0,
                "metrics": {"down1_MBps": 1000.0, "churn_per_s": 100.0},
            },
            "kubectl-1.33": {
                "label": "kubectl 1.33",
                "status": "ok",
                "errors": 0,
                "metrics": {"down1_MBps": 100.0, "up1_MBps": 100.0},
            },
            "fastpf-spdy": {
                "label": "fastpf spdy",
                "status": "ok",
                "errors": 0,
                "metrics": {"down1_MBps": 400.0, "up1_MBps": 150.0, "churn_per_s": 90.0},
            },
            "fastpf-websocket": {
                "label": "fastpf websocket",
                "status": "unavailable",
                "reason": "client not written yet",
            },
        },
    }
    t = {e["target"]: e["by_row"] for e in report.targets(result)}
    assert t["download 1 conn vs kubectl 1.33"]["fastpf-spdy"]["pass"] is True
    assert t["upload 1 conn vs kubectl 1.33"]["fastpf-spdy"]["pass"] is False
    assert t["churn conn/s vs direct"]["fastpf-spdy"]["pass"] is True
    assert t["download 1 conn vs kubectl 1.33"]["fastpf-websocket"]["pass"] is None
    md = report.markdown(result)
    assert "client not written yet" in md and "| fastpf spdy | 400 |" in md


def test_free_port_is_bindable() -> None:
    port = procs.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _run_harness(tmp_path: Path, extra: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            str(BENCH / "run.py"),
            "--quick",
            "--rows",
            "direct,socat",
            "--hold-conns",
            "20",
            "--bulk-seconds",
            "0.2",
            "--eof-mib",
            "8",
            "--out",
            str(tmp_path),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@pytest.mark.skipif(not shutil.which("socat"), reason="socat not installed")
def test_run_py_end_to_end_direct_and_socat(tmp_path: Path) -> None:
    p = _run_harness(tmp_path, ["--no-chart"])  # the chart costs seconds; every real run draws it
    try:
        assert p.wait(timeout=60) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    import json

    result = json.loads((tmp_path / "latest.json").read_text())
    for key in ("direct", "socat"):
        row = result["rows"][key]
        assert row["status"] == "ok" and row["errors"] == 0, row
        assert row["metrics"]["down1_MBps"] > 0 and row["metrics"]["churn_per_s"] > 0
        # download to EOF: 3 runs, all bytes verified, the target's close seen as EOF each time
        assert row["metrics"]["eof_ok"] == row["metrics"]["eof_runs"] == 3
        assert row["metrics"]["eof_MBps"] > 0 and row["metrics"]["eof_delay_s"] is not None
    assert result["rows"]["socat"]["metrics"]["hold_open"] == 20
    assert "| socat (1 hop) |" in (tmp_path / "latest.md").read_text()
    assert "## Download to EOF (blocking socket)" in (tmp_path / "latest.md").read_text()
    assert result["meta"]["children"] and not any(
        _alive(pid) for _, pid in result["meta"]["children"]
    )


def test_run_py_ctrl_c_stops_every_child(tmp_path: Path) -> None:
    import json
    import signal

    p = _run_harness(tmp_path, ["--reps", "100", "--no-chart"])  # would run for minutes
    try:
        time.sleep(2.0)  # somewhere in the first measurements (or still starting: either way)
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=30) == 130
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    result = json.loads((tmp_path / "latest.json").read_text())
    assert result["meta"]["interrupted"] is True
    assert result["meta"]["children"] and not any(
        _alive(pid) for _, pid in result["meta"]["children"]
    )
