"""Turns a bench/run.py result (JSON) into the targets table, Markdown and a PNG chart.

python3 bench/report.py bench/results/latest.json     # re-render latest.md / latest.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

KUBECTL = "kubectl-1.33"  # "kubectl 1.33" in the goals: its default, the WebSocket tunnel
KUBECTL_SPDY = "kubectl-1.33-spdy"
FASTPF_ROWS = ("fastpf-spdy", "fastpf-websocket", "fastpf-ws-channel")

# (name, metric, reference row, goal, higher_is_better)
# ratio = row metric / reference metric; passes when >= goal (higher) or <= goal (lower)
GOALS: list[tuple[str, str, str, float, bool]] = [
    ("download 1 conn vs kubectl 1.33", "down1_MBps", KUBECTL, 3.0, True),
    ("upload 1 conn vs kubectl 1.33", "up1_MBps", KUBECTL, 2.0, True),
    ("download 8 conns vs kubectl 1.33", "down8_MBps", KUBECTL, 3.0, True),
    ("upload 8 conns vs kubectl 1.33", "up8_MBps", KUBECTL, 2.0, True),
    ("download 1 conn vs socat (whole chain)", "down1_MBps", "socat", 1.0, True),
    ("upload 1 conn vs socat (whole chain)", "up1_MBps", "socat", 1.0, True),
    # CPU: one connection, as the target is set (the 8-connection runs are in their own table)
    (
        "client CPU s/GiB download vs kubectl 1.33",
        "cpu_client_down1_s_per_GiB",
        KUBECTL,
        0.5,
        False,
    ),
    ("client CPU s/GiB upload vs kubectl 1.33", "cpu_client_up1_s_per_GiB", KUBECTL, 0.5, False),
    (
        "client CPU s/GiB download vs kubectl 1.33 SPDY",
        "cpu_client_down1_s_per_GiB",
        KUBECTL_SPDY,
        0.5,
        False,
    ),
    (
        "client CPU s/GiB upload vs kubectl 1.33 SPDY",
        "cpu_client_up1_s_per_GiB",
        KUBECTL_SPDY,
        0.5,
        False,
    ),
    ("churn conn/s vs direct", "churn_per_s", "direct", 0.8, True),
    ("churn p99 vs kubectl 1.33", "churn_p99_ms", KUBECTL, 0.5, False),
    ("ping-pong p99 vs kubectl 1.33", "pp_p99_ms", KUBECTL, 0.5, False),
    ("peak RSS @1000 conns vs kubectl 1.33", "rss_hwm_MiB", KUBECTL, 1.0, False),
]


def _metric(result: dict[str, Any], row: str, key: str) -> float | None:
    r = result.get("rows", {}).get(row)
    if not r or r.get("status") != "ok":
        return None
    v = r.get("metrics", {}).get(key)
    return float(v) if isinstance(v, (int, float)) else None


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    rows = [k for k in FASTPF_ROWS if k in result.get("rows", {})]
    for name, key, ref, goal, higher in GOALS:
        entry: dict[str, Any] = {
            "target": name,
            "metric": key,
            "reference": ref,
            "goal": f"{'≥' if higher else '≤'} {goal:g}×",
            "by_row": {},
        }
        for row in rows:
            v, base = _metric(result, row, key), _metric(result, ref, key)
            if v is None or base is None or base <= 0:
                if v is None:
                    why = "row unavailable"
                elif ref not in result.get("rows", {}):
                    why = f"{ref} not in this run"
                else:
                    why = f"{ref} unavailable"
                entry["by_row"][row] = {"ratio": None, "pass": None, "detail": why}
                continue
            ratio = v / base
            ok = ratio >= goal if higher else ratio <= goal
            entry["by_row"][row] = {"ratio": ratio, "pass": ok, "detail": f"{v:.4g} vs {base:.4g}"}
        out.append(entry)
    errs: dict[str, Any] = {
        "target": "errors (failed or corrupted transfers)",
        "metric": "errors",
        "reference": "",
        "goal": "= 0",
        "by_row": {},
    }
    for row in rows:
        r = result["rows"][row]
        if r.get("status") != "ok":
            errs["by_row"][row] = {"ratio": None, "pass": None, "detail": "row unavailable"}
        else:
            n = int(r.get("errors", 0))
            errs["by_row"][row] = {"ratio": float(n), "pass": n == 0, "detail": str(n)}
    out.append(errs)
    return out


def _f(v: Any, digits: int = 0) -> str:
    if v is None:
        return "–"
    if isinstance(v, (int, float)):
        return f"{v:,.{digits}f}"
    return str(v)


def _pair(m: dict[str, Any], a: str, b: str, digits: int) -> str:
    if m.get(a) is None and m.get(b) is None:
        return "–"
    return f"{_f(m.get(a), digits)} / {_f(m.get(b), digits)}"


def _load_note(meta: dict[str, Any]) -> str:
    """Other work on the machine moves absolute numbers a lot; say how much there was."""
    share = meta.get("foreign_cpu_share")
    if share is None:
        return ""
    cpus = (meta.get("machine") or {}).get("cpus") or 1
    note = (
        f"Other work on the machine used {share:.0%} of its {cpus} CPUs during the run "
        "(/proc/stat busy time minus this run's own processes)"
    )
    if share > 0.1:
        note += (
            "; absolute figures are noisy, rows were interleaved so the ratios are the "
            "figures to quote"
        )
    return note + ".\n"


def _eof_failures(m: dict[str, Any]) -> str:
    """What went wrong in a row's download-to-EOF runs, in a few words."""
    parts = []
    if m.get("eof_no_eof"):
        parts.append(
            f"**no EOF** after the last byte in {m['eof_no_eof']}/{m.get('eof_runs')} runs"
        )
    if m.get("eof_transfer_timeouts"):
        rate = m.get("eof_partial_MBps")
        parts.append(
            "**transfer timeout**"
            + (f" at {rate:.3g} MB/s" if rate is not None else "")
            + " (further runs skipped)"
        )
    rest = (
        m.get("eof_runs", 0)
        - m.get("eof_ok", 0)
        - m.get("eof_no_eof", 0)
        - m.get("eof_transfer_timeouts", 0)
    )
    if rest > 0:
        parts.append(f"{rest} failed: {str(m.get('eof_first_error'))[:120]}")
    return "; ".join(parts) or "–"


def eof_table(result: dict[str, Any]) -> list[str]:
    """Markdown lines of the download-to-EOF table (empty for results that predate it)."""
    rows = [
        (k, r)
        for k, r in result.get("rows", {}).items()
        if r.get("status") == "ok" and r.get("metrics", {}).get("eof_runs")
    ]
    if not rows:
        return []
    d = result.get("meta", {}).get("durations", {})
    base = _metric(result, KUBECTL, "eof_MBps")
    lines = [
        "",
        "## Download to EOF (blocking socket)",
        "",
        f"A plain blocking socket sends a 9-byte request, then only reads (recv_into, 1 MiB buffer) "
        f"until EOF; the target sends {d.get('eof_mib')} MiB of pattern bytes and closes, as a pod's "
        "server does after its reply (curl, a browser, pg_dump). MB/s from before connect to the last "
        "byte (median of the runs whose bytes all arrived, every byte verified); EOF delay: last byte "
        f"→ EOF, the pod's close reaching the local client. {d.get('eof_reps')} runs per row, one row "
        f"after the other; no EOF within {d.get('eof_timeout')} s or no complete transfer within "
        f"{d.get('eof_transfer_timeout')} s is an error.",
        "",
        "| row | MB/s | vs kubectl 1.33 | EOF delay ms (median / max) | runs ok | failures |",
        "|---|--:|--:|--:|--:|---|",
    ]
    for key, r in rows:
        m = r["metrics"]
        v = m.get("eof_MBps")
        ratio = f"{v / base:.2f}×" if v is not None and base else "–"
        ms = {k: m[k] * 1e3 for k in ("eof_delay_s", "eof_delay_max_s") if m.get(k) is not None}
        lines.append(
            f"| {r.get('label', key)} | {_f(v)} | {ratio} "
            f"| {_pair(ms, 'eof_delay_s', 'eof_delay_max_s', 1)} "
            f"| {m.get('eof_ok', 0)}/{m.get('eof_runs')} | {_eof_failures(m)} |"
        )
    return lines


def markdown(result: dict[str, Any]) -> str:
    meta = result.get("meta", {})
    mach = meta.get("machine", {})
    d = meta.get("durations", {})
    lines = [
        f"# fastpf end-to-end benchmark — {meta.get('started', '?')} ({meta.get('mode', '?')} mode)",
        "",
        f"Machine: {mach.get('cpus')} CPU ({mach.get('cpu', '?')}), Python {mach.get('python')}, "
        f"uvloop {mach.get('uvloop')}; kubectl {mach.get('kubectl.1.33')} / {mach.get('kubectl.1.29')}; "
        f"{mach.get('socat') or 'socat ?'}; fastpf {mach.get('fastpf_commit')}. "
        f"fastpf serve with {'TLS' if meta.get('tls') else 'no TLS'}. Run took {meta.get('seconds')} s"
        + (" (INTERRUPTED: partial)" if meta.get("interrupted") else "")
        + ".",
        "",
        *[f"**Build:** {n}\n" for n in meta.get("build_notes", [])],
        _load_note(meta),
        f"Bulk: 1 connection {d.get('bulk1_seconds')} s × {d.get('bulk1_reps')} (median), "
        f"8 connections {d.get('bulk8_seconds')} s × {d.get('bulk8_reps')} (median); churn "
        f"{d.get('churn_seconds')} s at concurrency {d.get('churn_concurrency')} "
        f"(5-byte request, 128-byte response per connection); ping-pong 1 byte "
        f"{d.get('pingpong_seconds')} s; RSS with {d.get('hold_conns')} connections open "
        "(fresh forwarder; VmHWM of its process tree). MB = 10^6 bytes. CPU s/GiB from "
        "/proc/PID/stat utime+stime (+ reaped children) over all bulk runs of that direction "
        "(by connection count: its own table below).",
        "",
        "## Results (medians)",
        "",
        "| row | down 1c MB/s | up 1c MB/s | down 8c MB/s | up 8c MB/s | client CPU s/GiB ↓ / ↑ "
        "| serve CPU s/GiB ↓ / ↑ | churn conn/s | churn p50 / p99 ms | ping-pong p50 / p99 ms "
        "| RSS idle / peak @1000 MiB | errors |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    unavailable = []
    for key, r in result.get("rows", {}).items():
        if r.get("status") != "ok":
            unavailable.append((key, r))
            lines.append(f"| {r.get('label', key)} | unavailable | | | | | | | | | | |")
            continue
        m = r.get("metrics", {})
        lines.append(
            f"| {r.get('label', key)} | {_f(m.get('down1_MBps'))} | {_f(m.get('up1_MBps'))} "
            f"| {_f(m.get('down8_MBps'))} | {_f(m.get('up8_MBps'))} "
            f"| {_pair(m, 'cpu_client_down_s_per_GiB', 'cpu_client_up_s_per_GiB', 2)} "
            f"| {_pair(m, 'cpu_serve_down_s_per_GiB', 'cpu_serve_up_s_per_GiB', 2)} "
            f"| {_f(m.get('churn_per_s'))} | {_pair(m, 'churn_p50_ms', 'churn_p99_ms', 2)} "
            f"| {_pair(m, 'pp_p50_ms', 'pp_p99_ms', 3)} | {_pair(m, 'rss_idle_MiB', 'rss_hwm_MiB', 1)} "
            f"| {r.get('errors', 0)} |"
        )
    lines += eof_table(result)
    tg = result.get("targets") or targets(result)
    rows = [k for k in FASTPF_ROWS if k in result.get("rows", {})]
    if tg and rows:
        lines += [
            "",
            "## Targets (ratio = fastpf / reference; kubectl 1.33 = its default WebSocket tunnel)",
            "",
            "| target | goal | " + " | ".join(rows) + " |",
            "|---|---|" + "---|" * len(rows),
        ]
        for t in tg:
            cells = []
            for row in rows:
                e = t["by_row"].get(row, {})
                if e.get("pass") is None:
                    cells.append(f"n/a ({e.get('detail', '')})")
                elif t["metric"] == "errors":
                    cells.append(f"{'✅' if e['pass'] else '❌'} {e['detail']}")
                else:
                    cells.append(f"{'✅' if e['pass'] else '❌'} {e['ratio']:.2f}× ({e['detail']})")
            lines.append(f"| {t['target']} | {t['goal']} | " + " | ".join(cells) + " |")
    if unavailable:
        lines += ["", "## Unavailable rows", ""]
        lines += [f"- **{r.get('label', k)}**: {r.get('reason', '?')}" for k, r in unavailable]
    errs = [(k, r) for k, r in result.get("rows", {}).items() if r.get("errors")]
    if errs:
        lines += ["", "## Errors", ""]
        for k, r in errs:
            lines.append(
                f"- **{r.get('label', k)}** ({r['errors']}): "
                + "; ".join(str(s)[:300] for s in r.get("error_samples", []))
            )
    lg = [
        (r.get("label", k), r["metrics"])
        for k, r in result.get("rows", {}).items()
        if r.get("status") == "ok"
        and r.get("metrics", {}).get("cpu_harness_down_s_per_GiB") is not None
    ]
    if lg:
        lines += [
            "",
            "## Load generator + target CPU (is the harness the bottleneck?)",
            "",
            "CPU s/GiB of the load-generator and target processes together, and error/traceback "
            "lines the forwarder printed (informational; errors above count failed transfers).",
            "",
            "| row | loadgen+target CPU s/GiB ↓ / ↑ | forwarder error lines |",
            "|---|--:|--:|",
        ]
        for label, m in lg:
            found: dict[str, Any] = next(
                (r for r in result["rows"].values() if r.get("label") == label), {}
            )
            lines.append(
                f"| {label} | {_pair(m, 'cpu_harness_down_s_per_GiB', 'cpu_harness_up_s_per_GiB', 2)} "
                f"| {_f(found.get('log_error_lines'))} |"
            )
    by_conns = [
        (r.get("label", k), r.get("metrics", {}))
        for k, r in result.get("rows", {}).items()
        if r.get("metrics", {}).get("cpu_client_down1_s_per_GiB") is not None
    ]
    if by_conns:
        lines += [
            "",
            "## Client CPU per GiB by connection count",
            "",
            "CPU s/GiB of the forwarder process over the bulk runs with one connection (the "
            "CPU targets above compare these) and with eight; the results table's column "
            "counts both.",
            "",
            "| row | 1 conn ↓ / ↑ | 8 conns ↓ / ↑ |",
            "|---|--:|--:|",
        ]
        for label, m in by_conns:
            lines.append(
                f"| {label} | {_pair(m, 'cpu_client_down1_s_per_GiB', 'cpu_client_up1_s_per_GiB', 2)} "
                f"| {_pair(m, 'cpu_client_down8_s_per_GiB', 'cpu_client_up8_s_per_GiB', 2)} |"
            )
    churn_cpu = [
        (r.get("label", k), r.get("metrics", {}))
        for k, r in result.get("rows", {}).items()
        if r.get("metrics", {}).get("cpu_client_churn_ms_per_conn") is not None
    ]
    if churn_cpu:
        lines += [
            "",
            "## Connection churn: CPU per connection",
            "",
            "CPU milliseconds per short connection during the churn runs (far less sensitive to "
            "other load on the machine than conn/s and latency above).",
            "",
            "| row | client ms/conn | serve ms/conn | loadgen+target ms/conn |",
            "|---|--:|--:|--:|",
        ]
        for label, m in churn_cpu:
            lt = [m.get(f"cpu_{p}_churn_ms_per_conn") for p in ("loadgen", "target")]
            harness = sum(x for x in lt if x is not None) if None not in lt else None
            lines.append(
                f"| {label} | {_f(m.get('cpu_client_churn_ms_per_conn'), 3)} "
                f"| {_f(m.get('cpu_serve_churn_ms_per_conn'), 3)} | {_f(harness, 3)} |"
            )
    micro = result.get("micro")
    if micro:
        lines += ["", "## Micro benchmarks (bench/bench_frames.py)", ""]
        if micro.get("benchmarks"):
            lines += ["| benchmark | median µs | ops/s |", "|---|--:|--:|"]
            for b in micro["benchmarks"]:
                lines.append(f"| {b['name']} | {_f(b.get('median_us'), 2)} | {_f(b.get('ops'))} |")
            if micro.get("status") != "ok":
                lines.append(f"\nstatus: {micro.get('status')}")
        else:
            lines.append(f"{micro.get('status')}: {micro.get('reason', '')}")
    lines += [
        "",
        "## Topology",
        "",
        meta.get("topology", ""),
        "",
        "Commands: `python3 bench/run.py` (full), `python3 bench/run.py --quick`; "
        "see `python3 bench/run.py --help`.",
        "",
    ]
    cmds = [
        (r.get("label", k), r.get("command"))
        for k, r in result.get("rows", {}).items()
        if r.get("command")
    ]
    if cmds:
        lines += ["Forwarder command lines (ports vary per run):", ""]
        lines += [f"- {label}: `{c}`" for label, c in cmds]
        lines.append("")
    return "\n".join(lines)


def chart(result: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [(k, r) for k, r in result.get("rows", {}).items()]
    labels = [r.get("label", k).replace(" (", "\n(") for k, r in rows]

    def vals(key: str) -> list[float]:
        return [
            float(r.get("metrics", {}).get(key) or 0) if r.get("status") == "ok" else 0.0
            for _, r in rows
        ]

    panels = [
        (
            "Bulk throughput, 1 connection (MB/s)",
            [("download", "down1_MBps"), ("upload", "up1_MBps"), ("download to EOF", "eof_MBps")],
        ),
        (
            "Bulk throughput, 8 connections (MB/s)",
            [("download", "down8_MBps"), ("upload", "up8_MBps")],
        ),
        (
            "Client CPU s/GiB (lower is better)",
            [("download", "cpu_client_down_s_per_GiB"), ("upload", "cpu_client_up_s_per_GiB")],
        ),
        ("Connection churn (conn/s, c=50)", [("conn/s", "churn_per_s")]),
        (
            "p99 latency (ms, lower is better)",
            [("churn", "churn_p99_ms"), ("ping-pong", "pp_p99_ms")],
        ),
        ("Peak RSS with 1,000 connections (MiB)", [("VmHWM", "rss_hwm_MiB")]),
    ]
    fig, axes = plt.subplots(3, 2, figsize=(15, 13))
    x = list(range(len(rows)))
    for ax, (title, series) in zip(axes.flat, panels, strict=False):
        w = 0.8 / len(series)
        for i, (name, key) in enumerate(series):
            v = vals(key)
            bars = ax.bar([xi + (i - (len(series) - 1) / 2) * w for xi in x], v, w, label=name)
            for b, val, (_, r) in zip(bars, v, rows, strict=True):
                if r.get("status") != "ok":
                    ax.annotate(
                        "n/a",
                        (b.get_x() + b.get_width() / 2, 0),
                        ha="center",
                        va="bottom",
                        fontsize=7,
                        color="grey",
                    )
                elif val:
                    ax.annotate(
                        f"{val:,.0f}" if val >= 100 else f"{val:.3g}",
                        (b.get_x() + b.get_width() / 2, val),
                        ha="center",
                        va="bottom",
                        fontsize=6,
                    )
        ax.set_title(title, fontsize=10)
        if "latency" in title and any(v > 0 for _, key in series for v in vals(key)):
            ax.set_yscale("log")  # churn (tens of ms) and ping-pong (sub-ms) on one panel
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=7)
        if len(series) > 1:
            ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    meta = result.get("meta", {})
    fig.suptitle(
        f"fastpf benchmark {meta.get('started', '')} ({meta.get('mode', '')}, "
        f"{'TLS' if meta.get('tls') else 'no TLS'}; medians)",
        fontsize=12,
    )
    fig.subplots_adjust(left=0.05, right=0.99, top=0.94, bottom=0.09, hspace=0.55, wspace=0.12)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python3 bench/report.py RESULT.json", file=sys.stderr)
        return 2
    src = Path(argv[0])
    result = json.loads(src.read_text())
    result["targets"] = targets(result)
    out = src.parent
    (out / "latest.md").write_text(markdown(result))
    chart(result, out / "latest.png")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
