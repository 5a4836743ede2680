"""End-to-end benchmark: fastpf against kubectl, socat and a direct connection, in one run.

    python3 bench/run.py            # full suite (~10 min) + micro benchmarks (bench/bench_*.py)
    python3 bench/run.py --quick    # about a minute
    python3 bench/run.py --rows direct,socat,fastpf-spdy --no-tls --bulk-seconds 3

Writes bench/results/latest.{json,md,png} (only the latest run is kept; earlier ones are in git
history; `--out DIR` writes them elsewhere).

Topology (everything on loopback, 2 cores shared by all processes):

    loadgen worker ──> [forwarder: kubectl / fastpf / socat] ──> fastpf serve ──> target
    (uvloop, 1 proc)    local port L                             (API stand-in)   (uvloop, 1 proc)

The direct row connects the load generator straight to the target (the machine's limit), the
socat row goes through one socat hop (no fastpf serve). All kubectl and fastpf rows go through
the same `fastpf serve`. Each measurement runs in the warm load-generator process (bench/loadgen.py
worker) while this harness only samples /proc. Every byte is verified (pattern + announced
totals, see loadgen.py); any failed or corrupted transfer counts as an error.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import report  # noqa: E402
from procs import (  # noqa: E402
    LineChannel,
    Proc,
    Registry,
    cpu_seconds,
    free_port,
    machine_busy_seconds,
    own_cpu_seconds,
    peak_rss_kib,
    port_open,
    vm_kib,
)

KUBECTL_DIR = Path(os.environ.get("FASTPF_KUBECTL_DIR", "/usr/lib/google-cloud-sdk/bin"))
POD = "pod/bench"
GIB = float(1 << 30)


@dataclass
class Mode:
    bulk1_seconds: float
    bulk1_reps: int
    bulk8_seconds: float
    bulk8_reps: int
    churn_seconds: float
    pingpong_seconds: float
    latency_reps: int = 1
    hold_conns: int = 1000
    churn_concurrency: int = 50
    # download to EOF (blocking socket): sequential runs of eof_mib MiB per row. A run gives up
    # after eof_transfer_timeout s (the issue-9 crawl moved 0.15-0.7 MB/s) and waits at most
    # eof_timeout s for the pod's close after the last byte: a stuck EOF is an error, not a hang.
    eof_mib: int = 256
    eof_reps: int = 3
    eof_transfer_timeout: float = 60.0
    eof_timeout: float = 10.0


FULL = Mode(
    bulk1_seconds=5.0,
    bulk1_reps=3,
    bulk8_seconds=4.0,
    bulk8_reps=3,
    # ping-pong: 5 s per run (~12k round trips) for the p99; on this VM the tail still
    # varies 2-4x between identical runs (scheduling), the p50 does not.
    churn_seconds=3.0,
    pingpong_seconds=5.0,
    latency_reps=3,
)
QUICK = Mode(
    bulk1_seconds=0.7,
    bulk1_reps=1,
    bulk8_seconds=0.5,
    bulk8_reps=1,
    churn_seconds=0.7,
    pingpong_seconds=0.3,
    eof_mib=64,
    eof_transfer_timeout=30.0,
)


@dataclass
class RowSpec:
    key: str
    label: str
    kind: str  # direct | socat | kubectl | fastpf
    binary: str = ""
    env: dict[str, str] = field(default_factory=dict)
    protocol: str = ""

    @property
    def via_serve(self) -> bool:
        return self.kind in ("kubectl", "fastpf")


ROWS = [
    RowSpec("direct", "direct (no forwarder)", "direct"),
    RowSpec("socat", "socat (1 hop)", "socat"),
    RowSpec("kubectl-1.33", "kubectl 1.33 (WS tunnel)", "kubectl", "kubectl.1.33"),
    RowSpec(
        "kubectl-1.33-spdy",
        "kubectl 1.33 (SPDY)",
        "kubectl",
        "kubectl.1.33",
        {"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"},
    ),
    RowSpec("kubectl-1.29", "kubectl 1.29 (SPDY)", "kubectl", "kubectl.1.29"),
    RowSpec("fastpf-spdy", "fastpf spdy", "fastpf", protocol="spdy"),
    RowSpec("fastpf-websocket", "fastpf websocket", "fastpf", protocol="websocket"),
    RowSpec("fastpf-ws-channel", "fastpf ws-channel", "fastpf", protocol="ws-channel"),
]


class Unavailable(Exception):
    """A component this row needs is not there (yet); the message says why."""


@dataclass
class RowState:
    """A row during the run: its forwarder, samples and CPU accounting."""

    row: RowSpec
    res: dict[str, Any]
    fwd: Proc | None = None
    port: int = 0
    rates: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    lat: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    moved: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    cpu: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    cpu_incomplete: set[tuple[str, str]] = field(default_factory=set)
    log_errors: int = 0
    eof_runs: list[dict[str, Any]] = field(default_factory=list)  # download_eof results

    def error(self, sample: str, n: int = 1) -> None:
        self.res["errors"] += n
        self.res["error_samples"].append(sample[:400])

    def last(self, direction: str, conns: int) -> str:
        v = self.rates.get(f"{direction}{conns}")
        return f"{v[-1]:.0f}" if v else "-"

    def finish(self) -> None:
        m = self.res["metrics"]
        for key, v in self.rates.items():
            m[f"{key}_runs_MBps"] = v
            m[f"{key}_MBps"] = statistics.median(v) if v else None
        for key, v in self.lat.items():
            m[key] = statistics.median(v) if v else None
            m[key + "_runs"] = v
        if self.eof_runs:
            m.update(eof_metrics(self.eof_runs))
        conns = self.moved.get("churn", 0)
        for party in ("client", "serve", "loadgen", "target"):
            if (
                conns
                and (party, "churn") in self.cpu
                and (party, "churn") not in self.cpu_incomplete
            ):
                # contention-proof: CPU per connection does not depend on who else is running
                m[f"cpu_{party}_churn_ms_per_conn"] = self.cpu[(party, "churn")] / conns * 1e3
        for direction, nbytes in self.moved.items():
            if direction == "churn":
                continue
            m[f"{direction}_GiB_moved"] = nbytes / GIB
            if not nbytes:
                continue
            for party in ("client", "serve", "loadgen", "target"):
                if (party, direction) in self.cpu and (party, direction) not in self.cpu_incomplete:
                    m[f"cpu_{party}_{direction}_s_per_GiB"] = self.cpu[(party, direction)] / (
                        nbytes / GIB
                    )
            lg = [
                self.cpu[(p, direction)]
                for p in ("loadgen", "target")
                if (p, direction) in self.cpu
            ]
            if len(lg) == 2:
                m[f"cpu_harness_{direction}_s_per_GiB"] = sum(lg) / (nbytes / GIB)
        self.res["log_error_lines"] = self.log_errors


def eof_metrics(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Download-to-EOF figures of one row: MB/s over the runs whose bytes all arrived (and
    verified), the pod close -> local EOF delay over the runs that saw EOF, and the failures."""
    complete = [r["MBps"] for r in runs if r.get("complete")]
    partial = [r["MBps"] for r in runs if "MBps" in r and not r.get("complete")]
    delays = [r["eof_s"] for r in runs if r.get("eof_s") is not None]
    return {
        "eof_MBps": statistics.median(complete) if complete else None,
        "eof_runs_MBps": [r.get("MBps") for r in runs],
        "eof_partial_MBps": statistics.median(partial) if partial else None,
        "eof_delay_s": statistics.median(delays) if delays else None,
        "eof_delay_max_s": max(delays) if delays else None,
        "eof_runs_delay_s": [r.get("eof_s") for r in runs],
        "eof_runs": len(runs),
        "eof_ok": sum(1 for r in runs if r.get("ok")),
        "eof_no_eof": sum(1 for r in runs if r.get("timeout") == "eof"),
        "eof_transfer_timeouts": sum(1 for r in runs if r.get("timeout") == "transfer"),
        "eof_first_error": next(
            (r.get("error") or r.get("exception") for r in runs if not r.get("ok")), None
        ),
    }


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # `python3 -m fastpf` must run the working tree, whatever else is installed
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env.pop("KUBECONFIG", None)
    env.update(extra or {})
    return env


BUILD_NOTES: list[str] = []


def ensure_built() -> str | None:
    """Build fastpf._frames in place when missing or stale; returns a reason when impossible."""
    pyx = ROOT / "fastpf" / "_frames.pyx"
    if not pyx.exists():
        return "fastpf/_frames.pyx not written yet"
    sos = list((ROOT / "fastpf").glob("_frames*.so"))
    build_error = ""
    if not sos or min(s.stat().st_mtime for s in sos) < pyx.stat().st_mtime:
        log("building fastpf._frames in place (setup.py build_ext --inplace)")
        r = subprocess.run(
            [sys.executable, "setup.py", "build_ext", "--inplace", "-q"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if r.returncode != 0:
            build_error = (
                "fastpf._frames does not build: " + (r.stderr.strip().splitlines() or ["?"])[-1]
            )
    r = subprocess.run(
        [sys.executable, "-c", "import fastpf._frames"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
    )
    if r.returncode != 0:
        return (
            build_error
            or "fastpf._frames does not import: " + (r.stderr.strip().splitlines() or ["?"])[-1]
        )
    if build_error:  # an older build still imports: measure it, but say so in the report
        BUILD_NOTES.append(build_error + " (measured the previous, older build)")
        log(BUILD_NOTES[-1])
    return None


class Harness:
    def __init__(self, args: argparse.Namespace, reg: Registry, workdir: Path) -> None:
        self.args = args
        self.mode = dataclasses.replace(QUICK if args.quick else FULL)
        if args.bulk_seconds:
            self.mode.bulk1_seconds = self.mode.bulk8_seconds = args.bulk_seconds
        if args.hold_conns:
            self.mode.hold_conns = args.hold_conns
        if args.reps:
            self.mode.bulk1_reps = self.mode.bulk8_reps = self.mode.latency_reps = args.reps
            self.mode.eof_reps = args.reps
        if args.eof_mib:
            self.mode.eof_mib = args.eof_mib
        self.reg = reg
        self.workdir = workdir
        self.target_port = 0
        self.target: Proc | None = None
        self.serve: Proc | None = None
        self.serve_reason = ""
        self.kubeconfig = workdir / "kubeconfig"
        self.worker: Proc | None = None
        self.chan: LineChannel | None = None
        self.frames_reason: str | None = None
        self.states: list[RowState] = []

    def partial_rows(self) -> dict[str, dict[str, Any]]:
        """After an interrupt: whatever was measured so far."""
        for st in self.states:
            if st.res.get("status") == "ok" and not st.res["metrics"]:
                st.finish()
        return {st.row.key: st.res for st in self.states}

    # -- fixed parts -----------------------------------------------------------------------
    def start_target(self) -> None:
        p = self.reg.start("target", [sys.executable, str(HERE / "loadgen.py"), "target"])
        self.target = p
        m = p.wait_for_line(r"PORT (\d+)", 15)
        if not m:
            raise RuntimeError(f"benchmark target did not start: {p.tail()}")
        self.target_port = int(m.group(1))

    def start_worker(self) -> None:
        self.worker = self.reg.start(
            "loadgen", [sys.executable, str(HERE / "loadgen.py"), "worker"], pipes=True
        )
        self.chan = LineChannel(self.worker)
        if "pong" not in self.call({"op": "ping"}, 15):
            raise RuntimeError(f"load generator did not start: {self.worker.tail()}")

    def call(self, cmd: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Run one load-generator command; a hung worker is replaced and the call fails."""
        assert self.chan is not None
        out = self.chan.call(json.dumps(cmd).encode(), timeout)
        if out is None:
            assert self.worker is not None
            tail = self.worker.tail()
            self.reg.stop(self.worker)
            self.start_worker()
            return {"exception": f"load generator timed out after {timeout:.0f}s {tail}"}
        res: dict[str, Any] = json.loads(out)
        return res

    def start_serve(self) -> None:
        self.frames_reason = ensure_built()
        if self.frames_reason:
            self.serve_reason = self.frames_reason
            return
        if self.kubeconfig.exists():
            self.kubeconfig.unlink()
        argv = [
            sys.executable,
            "-m",
            "fastpf",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--kubeconfig-out",
            str(self.kubeconfig),
            "--pod-address",
            "127.0.0.1",
        ]
        if self.args.no_tls:
            argv.append("--no-tls")
        p = self.reg.start("fastpf-serve", argv, env=child_env(), cwd=str(ROOT))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # bounded: serve writes the kubeconfig when ready
            if not p.alive():
                break
            if self.kubeconfig.exists() and self._kubeconfig_server():
                problem = self.probe_serve()
                if problem is None:
                    self.serve = p
                    return
                self.serve_reason = f"fastpf serve is up but {problem}"
                self.reg.stop(p)
                return
            time.sleep(0.1)
        self.serve_reason = "fastpf serve did not come up: " + (
            p.tail(1)[-300:] or f"no kubeconfig after 30 s (exit {p.popen.poll()})"
        )
        self.reg.stop(p)

    def probe_serve(self) -> str | None:
        """GET /api/v1/namespaces/default/pods/bench with the kubeconfig's CA and token: when even
        that fails, every row through serve is unavailable (saves each forwarder's retries)."""
        import base64
        import ssl
        import urllib.request

        import yaml

        try:
            doc = yaml.safe_load(self.kubeconfig.read_text())
            cluster, user = doc["clusters"][0]["cluster"], doc["users"][0]["user"]
            ctx = None
            if cluster["server"].startswith("https"):
                ctx = ssl.create_default_context()
                ctx.load_verify_locations(
                    cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
                )
            req = urllib.request.Request(
                cluster["server"] + "/api/v1/namespaces/default/pods/bench"
            )
            if user.get("token"):
                req.add_header("Authorization", "Bearer " + user["token"])
            with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
                body = json.loads(resp.read())
            phase = body.get("status", {}).get("phase")
            return None if phase == "Running" else f"pod/bench is not Running ({phase})"
        except Exception as exc:  # any failure is the reason shown in the report
            return f"GET pod/bench failed: {exc!r}"[:300]

    def _kubeconfig_server(self) -> str | None:
        try:
            import yaml

            doc = yaml.safe_load(self.kubeconfig.read_text())
            return str(doc["clusters"][0]["cluster"]["server"])
        except Exception:
            return None

    # -- forwarders ------------------------------------------------------------------------
    def forwarder_argv(self, row: RowSpec, local: int) -> tuple[list[str], dict[str, str]]:
        remote = self.target_port
        if row.kind == "socat":
            sb = shutil.which("socat")
            if not sb:
                raise Unavailable("socat not installed")
            return [
                sb,
                f"TCP-LISTEN:{local},bind=127.0.0.1,reuseaddr,fork,backlog=4096",
                f"TCP:127.0.0.1:{remote}",
            ], child_env()
        if self.serve is None:
            raise Unavailable(self.serve_reason or "fastpf serve not running")
        if row.kind == "kubectl":
            binary = KUBECTL_DIR / row.binary
            if not binary.exists():
                raise Unavailable(f"{binary} not installed")
            return [
                str(binary),
                "--kubeconfig",
                str(self.kubeconfig),
                "--cache-dir",
                str(self.workdir / "kcache"),
                "port-forward",
                "--address",
                "127.0.0.1",
                POD,
                f"{local}:{remote}",
            ], child_env(row.env)
        return [
            sys.executable,
            "-m",
            "fastpf",
            "--kubeconfig",
            str(self.kubeconfig),
            "--address",
            "127.0.0.1",
            "--protocol",
            row.protocol,
            POD,
            f"{local}:{remote}",
        ], child_env(row.env)

    def launch_forwarder(self, row: RowSpec) -> tuple[Proc, int]:
        local = free_port()
        argv, env = self.forwarder_argv(row, local)
        return self.reg.start(row.key, argv, env=env, cwd=str(ROOT)), local

    def wait_forwarder(self, row: RowSpec, p: Proc, local: int) -> tuple[Proc, int]:
        if row.kind == "socat":
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and p.alive():  # bounded by the deadline
                if port_open("127.0.0.1", local):
                    return p, local
                time.sleep(0.05)
        elif p.wait_for_line(r"Forwarding from 127\.0\.0\.1:\d+", 30):
            return p, local
        reason = p.tail(1)[-300:] or f"not ready after 30 s (exit {p.popen.poll()})"
        self.reg.stop(p)
        raise Unavailable(f"{row.label} did not start: {reason}")

    def start_forwarder(self, row: RowSpec) -> tuple[Proc, int]:
        return self.wait_forwarder(row, *self.launch_forwarder(row))

    # -- rows, interleaved -------------------------------------------------------------------
    # Every repetition of every measurement runs all rows back to back (row A, B, C, A, B, C...),
    # so a burst of load from elsewhere on a shared machine hits all rows alike and the ratios
    # between rows stay meaningful; medians then take out the outliers.
    def open_rows(self, rows: list[RowSpec]) -> list[RowState]:
        """Start every forwarder at once (they start in parallel), then wait for each."""
        states, launched = [], []
        for row in rows:
            st = RowState(
                row,
                {
                    "label": row.label,
                    "kind": row.kind,
                    "status": "ok",
                    "metrics": {},
                    "errors": 0,
                    "error_samples": [],
                },
            )
            states.append(st)
            try:
                launched.append((st, self.launch_forwarder(row) if row.kind != "direct" else None))
            except Unavailable as exc:
                st.res.update(status="unavailable", reason=str(exc))
                log(f"{row.key}: unavailable: {exc}")
        for st, started in launched:
            try:
                if started is None:
                    st.port = self.target_port
                else:
                    st.fwd, st.port = self.wait_forwarder(st.row, *started)
                    args = st.fwd.popen.args  # always a list here (procs.start)
                    st.res["command"] = (
                        " ".join(map(str, args)) if isinstance(args, list) else str(args)
                    )
            except Unavailable as exc:
                st.res.update(status="unavailable", reason=str(exc))
                log(f"{st.row.key}: unavailable: {exc}")
                continue
            self.warm_up(st)
        return states

    def warm_up(self, st: RowState) -> None:
        # warm-up: the first connection of a session pays for dialling and lazy setup
        self.measure(st, "warm-up", {"op": "bulk", "dir": "down", "conns": 1, "duration": 0.1}, 60)

    def measure(
        self,
        st: RowState,
        tag: str,
        cmd: dict[str, Any],
        timeout: float,
        direction: str = "",
        also: str = "",
    ) -> dict[str, Any]:
        """One load-generator command against the row; CPU of every party (and the units moved)
        charged to `direction`, and to `also` too when given (a bulk run's direction and
        connection count: "up1", the CPU targets' measure)."""
        if st.fwd is not None and not st.fwd.alive():  # a dead forwarder is an error; restart it
            st.error(f"{tag}: forwarder had exited: {st.fwd.tail(1)[-200:]}")
            st.log_errors += st.fwd.count_lines(r"(?i)error|traceback")
            self.reg.stop(st.fwd)
            st.fwd = None
            try:
                st.fwd, st.port = self.start_forwarder(st.row)
            except Unavailable as exc:
                st.error(f"{tag}: restart failed: {exc}")
                return {"exception": "no forwarder"}
        assert self.worker is not None and self.target is not None
        parties = {
            "client": st.fwd,
            "serve": self.serve if st.row.via_serve else None,
            "loadgen": self.worker,
            "target": self.target,
        }
        before = {k: (p.pid, cpu_seconds(p.pid)) for k, p in parties.items() if p is not None}
        r = self.call(dict(cmd, port=st.port), timeout)
        n = int(r.get("errors", 0)) + (1 if "exception" in r else 0)
        if n:
            st.error(f"{tag}: {r.get('exception') or r.get('error_samples')}", n)
        units = r.get("conns") if direction == "churn" else r.get("bytes")
        if direction and units:
            keys = (direction, also) if also else (direction,)
            for key in keys:
                st.moved[key] += units  # bytes (bulk) or connections (churn)
            for k, (pid, c0) in before.items():
                p = parties[k]
                alive = p is not None and p.pid == pid and p.alive()
                used = cpu_seconds(pid) - c0 if alive else 0.0
                for key in keys:
                    if alive:
                        st.cpu[(k, key)] += used
                    else:
                        st.cpu_incomplete.add((k, key))
        return r

    def download_to_eof(self, live: list[RowState], rep: int) -> None:
        """One download-to-EOF run per row (blocking socket, request then only reads, as curl
        does). A row whose transfer timed out is not run again: each such run costs
        eof_transfer_timeout s, and one says what there is to say."""
        mode = self.mode
        cmd = {
            "op": "eof",
            "n": mode.eof_mib << 20,
            "eof_timeout": mode.eof_timeout,
            "transfer_timeout": mode.eof_transfer_timeout,
        }
        # the worker's own deadlines end every run first; this one only catches a hung worker
        limit = mode.eof_transfer_timeout + 2 * mode.eof_timeout + 30
        done = []
        for st in live:
            if any(r.get("timeout") == "transfer" for r in st.eof_runs):
                continue
            r = self.measure(st, "download to EOF", cmd, limit, "eof")
            st.eof_runs.append(r)
            eof = r.get("eof_s")
            done.append(
                f"{st.row.key} {r.get('MBps', 0):.0f} MB/s "
                + (f"EOF +{eof:.3f} s" if eof is not None else f"[{r.get('timeout') or 'error'}]")
            )
        log(
            f"download to EOF rep {rep + 1}/{mode.eof_reps} ({mode.eof_mib} MiB): "
            + ", ".join(done)
        )

    def run_rows(self, rows: list[RowSpec]) -> dict[str, dict[str, Any]]:
        mode = self.mode
        states = self.states = self.open_rows(rows)
        live = [st for st in states if st.res["status"] == "ok"]
        try:
            for conns, secs, reps in (
                (1, mode.bulk1_seconds, mode.bulk1_reps),
                (8, mode.bulk8_seconds, mode.bulk8_reps),
            ):
                for rep in range(reps):
                    for direction in ("down", "up"):
                        for st in live:
                            tag = f"bulk {direction} x{conns}"
                            r = self.measure(
                                st,
                                tag,
                                {"op": "bulk", "dir": direction, "conns": conns, "duration": secs},
                                secs + 90,
                                direction,
                                also=f"{direction}{conns}",
                            )
                            if "MBps" in r:
                                st.rates[f"{direction}{conns}"].append(r["MBps"])
                    log(
                        f"bulk x{conns} rep {rep + 1}/{reps}: "
                        + ", ".join(
                            f"{st.row.key} {st.last('down', conns)}/{st.last('up', conns)}"
                            for st in live
                        )
                        + " MB/s down/up"
                    )
            for rep in range(mode.eof_reps):
                self.download_to_eof(live, rep)
            for rep in range(mode.latency_reps):
                for st in live:
                    r = self.measure(
                        st,
                        "churn",
                        {
                            "op": "churn",
                            "concurrency": mode.churn_concurrency,
                            "duration": mode.churn_seconds,
                        },
                        mode.churn_seconds + 120,
                        "churn",
                    )
                    if r.get("per_s") is not None:
                        st.lat["churn_per_s"].append(r["per_s"])
                    for k in ("p50_ms", "p99_ms"):
                        if r.get(k) is not None:
                            st.lat["churn_" + k].append(r[k])
                    r = self.measure(
                        st,
                        "pingpong",
                        {"op": "pingpong", "duration": mode.pingpong_seconds},
                        mode.pingpong_seconds + 60,
                    )
                    for k in ("p50_ms", "p99_ms"):
                        if r.get(k) is not None:
                            st.lat["pp_" + k].append(r[k])
                log(
                    f"latency rep {rep + 1}/{mode.latency_reps}: "
                    + ", ".join(
                        f"{st.row.key} churn {st.lat['churn_per_s'][-1] if st.lat['churn_per_s'] else 0:.0f}/s "
                        f"p99 {st.lat['churn_p99_ms'][-1] if st.lat['churn_p99_ms'] else 0:.1f} ms, "
                        f"ping p99 {st.lat['pp_p99_ms'][-1] if st.lat['pp_p99_ms'] else 0:.3f} ms"
                        for st in live
                    )
                )
        finally:
            for st in live:
                if st.fwd is not None:
                    if not st.fwd.alive():
                        st.error(f"forwarder exited: {st.fwd.tail(1)[-200:]}")
                    st.log_errors += st.fwd.count_lines(r"(?i)error|traceback")
            self.reg.stop_many([st.fwd for st in live if st.fwd is not None])
            for st in live:
                st.fwd = None
        for st in live:
            st.finish()
        # RSS: a fresh forwarder per row (its peak must not include the bulk runs); all start
        # at once and wait idle, then are measured one after the other
        fresh: list[tuple[RowState, tuple[Proc, int] | Unavailable]] = []
        for st in live:
            if st.row.kind != "direct":
                try:
                    fresh.append((st, self.launch_forwarder(st.row)))
                except Unavailable as exc:
                    fresh.append((st, exc))
        try:
            for st, started in fresh:
                if isinstance(started, Unavailable):
                    st.error(f"rss: {started}")
                    continue
                try:
                    fwd, port = self.wait_forwarder(st.row, *started)
                except Unavailable as exc:
                    st.error(f"rss: {exc}")
                    continue
                self.measure_rss(st.row, st.res, fwd, port)
        finally:
            self.reg.stop_many([s[0] for _, s in fresh if not isinstance(s, Unavailable)])
        for st in states:
            st.res["error_samples"] = st.res["error_samples"][:8]
        return {st.row.key: st.res for st in states}

    def measure_rss(self, row: RowSpec, res: dict[str, Any], fwd: Proc, port: int) -> None:
        """1,000 connections held open through a fresh forwarder (each proven by an echo)."""
        m = res["metrics"]
        try:
            time.sleep(0.2)
            m["rss_idle_MiB"] = vm_kib(fwd.pid, "VmRSS") / 1024
            n = self.mode.hold_conns
            r = self.call({"op": "hold", "port": port, "n": n}, 180)
            m["hold_open"] = r.get("open")
            if "exception" in r or r.get("errors"):
                res["errors"] += int(r.get("errors", 0)) + (1 if "exception" in r else 0)
                res["error_samples"].append(
                    f"hold {n}: {r.get('exception') or r.get('error_samples')}"
                )
            time.sleep(0.3)
            if fwd.alive():
                kib, how = peak_rss_kib(fwd.pid)
                m["rss_hwm_MiB"], m["rss_how"] = kib / 1024, how
                m["rss_1000_MiB"] = vm_kib(fwd.pid, "VmRSS") / 1024
            else:
                res["errors"] += 1
                res["error_samples"].append(f"hold {n}: forwarder exited: {fwd.tail(3)}")
            log(f"{row.key}: {r.get('open')} conns open, peak {m.get('rss_hwm_MiB') or 0:.1f} MiB")
        finally:
            self.call({"op": "release"}, 60)
            res["log_error_lines"] = res.get("log_error_lines", 0) + fwd.count_lines(
                r"(?i)error|traceback"
            )
            self.reg.signal(fwd)  # stopped for good with the others (stop_many), in parallel


def run_micro(workdir: Path) -> dict[str, Any]:
    """pytest-benchmark micro benchmarks: the codecs (bench_frames.py) and the DATA path,
    Python dispatch against the compiled one (bench_dispatch.py)."""
    paths = [str(p) for p in (HERE / "bench_frames.py", HERE / "bench_dispatch.py") if p.exists()]
    if not paths:
        return {"status": "unavailable", "reason": "no bench/bench_*.py micro benchmarks"}
    out = workdir / "micro.json"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        *paths,
        "--benchmark-only",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--benchmark-json={out}",
    ]
    log("micro benchmarks: " + " ".join(cmd[1:]))
    try:
        r = subprocess.run(
            cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=900
        )
    except subprocess.TimeoutExpired:
        return {"status": "error", "reason": "timed out after 900 s"}
    if not out.exists():
        tail = (r.stdout + r.stderr).strip().splitlines()[-3:]
        return {"status": "error", "reason": " | ".join(tail)}
    data = json.loads(out.read_text())
    rows = []
    for b in data.get("benchmarks", []):
        st = b.get("stats", {})
        rows.append(
            {
                "name": b.get("fullname") or b.get("name"),
                "median_us": st.get("median", 0) * 1e6,
                "ops": st.get("ops"),
                "extra": b.get("extra_info", {}),
            }
        )
    return {
        "status": "ok" if r.returncode == 0 else f"pytest exit {r.returncode}",
        "benchmarks": rows,
    }


def machine_info(rows: list[RowSpec]) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        info["uvloop"] = importlib.metadata.version("uvloop")
    except importlib.metadata.PackageNotFoundError:
        info["uvloop"] = None
    for b in sorted({r.binary for r in rows if r.kind == "kubectl"}):
        try:
            out = subprocess.run(
                [str(KUBECTL_DIR / b), "version", "--client", "-o", "json"],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout
            info[b] = json.loads(out)["clientVersion"]["gitVersion"]
        except Exception:
            info[b] = None
    try:
        info["socat"] = (
            subprocess.run(["socat", "-V"], capture_output=True, text=True, timeout=10)
            .stdout.splitlines()[1]
            .strip()
        )
    except Exception:
        info["socat"] = None
    try:
        info["fastpf_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except Exception:
        info["fastpf_commit"] = None
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fastpf end-to-end benchmark (see module docstring)")
    ap.add_argument("--quick", action="store_true", help="short durations, one repetition (~1 min)")
    ap.add_argument(
        "--rows", default="", help="comma list of row keys: " + ",".join(r.key for r in ROWS)
    )
    ap.add_argument("--no-tls", action="store_true", help="fastpf serve without TLS (default: TLS)")
    ap.add_argument("--bulk-seconds", type=float, default=0.0, help="override bulk durations")
    ap.add_argument(
        "--reps", type=int, default=0, help="override bulk (and every other) repetitions"
    )
    ap.add_argument(
        "--eof-mib",
        type=int,
        default=0,
        help="download-to-EOF size per run in MiB (full 256, quick 64)",
    )
    ap.add_argument("--hold-conns", type=int, default=0, help="connections for the RSS test (1000)")
    ap.add_argument(
        "--no-micro", action="store_true", help="skip the micro benchmarks in full mode"
    )
    ap.add_argument("--out", default=str(HERE / "results"), help="results directory")
    ap.add_argument("--no-chart", action="store_true", help="skip latest.png")
    ap.add_argument("--keep-logs", action="store_true", help="keep child logs (printed path)")
    args = ap.parse_args(argv)
    if args.eof_mib < 0 or args.reps < 0:
        ap.error("--eof-mib and --reps must not be negative")

    rows = ROWS
    if args.rows:
        want = [k.strip() for k in args.rows.split(",") if k.strip()]
        unknown = set(want) - {r.key for r in ROWS}
        if unknown:
            ap.error(f"unknown rows: {', '.join(sorted(unknown))}")
        rows = [r for r in ROWS if r.key in want]

    # 1,000 held connections pass through up to four processes; children inherit this limit
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # same clean-up path as Ctrl-C

    signal.signal(signal.SIGTERM, on_term)
    # even when started in the background of a script (which ignores SIGINT), Ctrl-C/kill -INT cleans up
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = dt.datetime.now(dt.timezone.utc)
    workdir = Path(tempfile.mkdtemp(prefix="fastpf-bench-"))
    reg = Registry(workdir)
    h = Harness(args, reg, workdir)
    result: dict[str, Any] = {
        "meta": {
            "started": started.isoformat(timespec="seconds"),
            "mode": "quick" if args.quick else "full",
            "durations": vars(h.mode),
            "tls": not args.no_tls,
            "machine": machine_info(rows),
            "topology": "loadgen worker (uvloop, 1 process) -> forwarder -> fastpf serve -> target "
            "(uvloop, 1 process); direct: loadgen -> target; socat: loadgen -> socat -> "
            "target. All on loopback, sharing the machine's cores.",
            "rlimit_nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            "loadavg_start": os.getloadavg(),
        },
        "rows": {},
    }
    t_start = time.monotonic()
    busy0, own0 = machine_busy_seconds(), own_cpu_seconds()
    interrupted = False
    try:
        h.start_target()
        h.start_worker()
        if any(r.via_serve for r in rows):
            h.start_serve()
            if h.serve is None:
                log(f"fastpf serve unavailable: {h.serve_reason}")
        result["rows"] = h.run_rows(rows)
        if h.serve is not None and not h.serve.alive():
            result["meta"]["serve_exited"] = h.serve.tail(3)
            log(f"fastpf serve exited during the run: {h.serve.tail(3)}")
        if not args.quick and not args.no_micro:
            result["micro"] = run_micro(workdir)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping every child and writing partial results")
        result["rows"] = h.partial_rows()
    finally:
        # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if h.chan is not None:
            with contextlib.suppress(Exception):
                h.chan.call(b'{"op": "quit"}', 2)
        reg.stop_all()
    result["meta"]["children"] = reg.history  # all stopped by now (tests check it)
    result["meta"]["seconds"] = round(time.monotonic() - t_start, 1)
    # CPU that other work on the machine used meanwhile: the noise indicator for this run
    foreign = (machine_busy_seconds() - busy0) - (own_cpu_seconds() - own0)
    result["meta"]["foreign_cpu_share"] = max(0.0, foreign) / (
        max(1e-9, time.monotonic() - t_start) * (os.cpu_count() or 1)
    )
    if BUILD_NOTES:
        result["meta"]["build_notes"] = BUILD_NOTES
    result["meta"]["loadavg_end"] = os.getloadavg()
    result["meta"]["interrupted"] = interrupted
    result["targets"] = report.targets(result)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    js = json.dumps(result, indent=1, default=str)
    md = report.markdown(result)
    (out / "latest.json").write_text(js)
    (out / "latest.md").write_text(md)
    chart = None if args.no_chart else report.chart(result, out / "latest.png")
    print()
    print(md)
    log(f"wrote {out / 'latest.json'}, latest.md" + (", latest.png" if chart else " (no chart)"))
    if args.keep_logs:
        log(f"child logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
