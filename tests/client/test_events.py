"""`-o json` events (checked against docs/EVENTS.md), `--ready-file`, and `--stats` (golden
output of the plain-line mode; the terminal mode's redraw)."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fastpf.client.events import SCHEMA, JsonLines, Target, Tracker, ready_document
from fastpf.client.stats import StatsView, human_bytes, human_duration
from tests.support.patterns import echo_once, upload
from tests.support.processes import REPO, KubectlPortForward, subprocess_env
from tests.support.serve_process import ServeInstance
from tests.support.targets import Targets, free_port, manifest

GOLDEN = Path(__file__).parent.parent / "golden"
_TYPES: dict[str, Callable[[Any], bool]] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def doc_schema() -> dict[str, dict[str, str]]:
    """docs/EVENTS.md's tables: event name -> {field: type}, common fields included."""
    text = (REPO / "docs" / "EVENTS.md").read_text()
    row = re.compile(r"^\| `(\w+)` \| ([\w\\|]+) \|", re.M)

    def fields(chunk: str) -> dict[str, str]:
        return {m.group(1): m.group(2).replace("\\|", "|") for m in row.finditer(chunk)}

    common_part = text.split("## Events", 1)[0]
    every = fields(common_part.split("Every event except", 1)[0])
    target = fields(common_part.split("Every event except", 1)[1])
    events = {}
    for section in text.split("\n### ")[1:]:
        name, _, body = section.partition("\n")
        events[name.strip()] = {
            **every,
            **({} if name.strip() == "ready" else target),
            **fields(body),
        }
    return events


SCHEMA_DOC = doc_schema()


def check_event(event: dict[str, Any]) -> None:
    """The event has exactly the documented fields, each of the documented type."""
    assert event.get("event") in SCHEMA_DOC, event
    spec = SCHEMA_DOC[event["event"]]
    assert sorted(event) == sorted(spec), (event["event"], sorted(event), sorted(spec))
    for name, kind in spec.items():
        assert any(_TYPES[k](event[name]) for k in kind.split("|")), (
            event["event"],
            name,
            event[name],
        )
    assert event["schema"] == SCHEMA


def test_schema_doc_covers_every_observer_event() -> None:
    assert set(SCHEMA_DOC) == {
        "listening",
        "ready",
        "connection_opened",
        "connection_closed",
        "error",
        "lost",
        "reconnecting",
        "reconnected",
        "pod_changed",
    }
    assert SCHEMA_DOC["connection_closed"]["bytes_to_pod"] == "int"
    assert SCHEMA_DOC["error"]["id"] == "int|null"


def test_reconnect_events_match_the_schema() -> None:
    """The reconnect hooks (called by the reconnect machinery) emit documented events."""
    got: list[dict[str, Any]] = []
    tracker = Tracker(Target("svc/db", "prod", "ctx", "db-0"), got.append)
    tracker.lost("db-0", "connection reset by peer", 1, 4)
    tracker.reconnecting(2, 0.5, "dial tcp: connection refused")
    tracker.pod_changed("db-0", "db-1", "is being deleted")
    tracker.reconnected("db-1", 2, 1.25)
    tracker.error("error: lost connection to pod", fatal=True)
    for event in got:
        check_event(event)
    assert [e["event"] for e in got] == [
        "lost",
        "reconnecting",
        "pod_changed",
        "reconnected",
        "error",
    ]
    assert got[2]["pod"] == "db-1" and got[2]["old_pod"] == "db-0"
    assert tracker.reconnects == 1 and got[-1]["fatal"] is True and got[-1]["id"] is None


def test_json_lines_survive_a_closed_reader() -> None:
    class Closed(io.StringIO):
        def write(self, s: str) -> int:
            raise BrokenPipeError

    out = JsonLines(Closed())
    out({"event": "x"})
    out({"event": "y"})  # no exception: the forward goes on without output
    assert out.broken


# ---- end to end against fastpf serve ----------------------------------------------------------


class Run(KubectlPortForward):
    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            lines = list(self.stdout)
        return [json.loads(line) for line in lines]

    def wait_for(self, pred: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"{what}: rc={self.proc.poll()} stdout={self.stdout!r} stderr={self.stderr!r}"
        )

    def interrupt(self) -> int:
        os.kill(self.proc.pid, signal.SIGINT)
        return self.wait_exit(20)


@pytest.fixture
def start(
    serve_factory: Callable[..., ServeInstance], targets: Targets
) -> Iterator[Callable[..., Run]]:
    srv = serve_factory(manifest=manifest(targets))
    runs: list[Run] = []

    def go(*args: str, env: dict[str, str] | None = None) -> Run:
        cmd = [sys.executable, "-m", "fastpf", "--kubeconfig", str(srv.kubeconfig), *args]
        run = Run(cmd, subprocess_env(env))
        runs.append(run)
        return run

    yield go
    for run in runs:
        run.stop()


def _wait_file(path: Path, run: Run) -> dict[str, Any]:
    """The ready file's document, once it is fastpf's (a stale one is removed at start)."""
    run.wait_for(lambda: path.exists() and path.read_text().startswith("{"), "ready file")
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


@pytest.mark.parametrize("protocol", ["spdy", "ws-channel"])
def test_json_events_follow_the_schema(
    start: Callable[..., Run], targets: Targets, tmp_path: Path, protocol: str
) -> None:
    ready = tmp_path / "ready.json"
    closed = free_port()
    run = start(
        "-o",
        "json",
        "--ready-file",
        str(ready),
        "--protocol",
        protocol,
        "web-1",
        f":{targets.echo}",
        f":{targets.sink}",
        f"0:{closed}",
    )
    doc = _wait_file(ready, run)
    ports = {f["remote_port"]: f["local_port"] for f in doc["forwards"]}
    assert {f["address"] for f in doc["forwards"]} == {"127.0.0.1", "::1"}
    assert echo_once(ports[targets.echo], b"x" * 1000) == b"x" * 1000
    assert upload(ports[targets.sink], 5000).startswith("5000 ")
    with socket.create_connection(("127.0.0.1", ports[closed]), timeout=20) as s:
        s.settimeout(20)
        assert s.recv(10) == b""  # the pod refused it

    def closed_count() -> int:
        return sum(1 for e in run.events() if e["event"] == "connection_closed")

    run.wait_for(lambda: closed_count() >= 3, "three connection_closed events")
    assert run.interrupt() == 0
    events = run.events()
    for event in events:
        check_event(event)
    names = [e["event"] for e in events]
    assert names[:6] == ["listening"] * 6 and names[6] == "ready"
    assert [e["forwards"] for e in events if e["event"] == "ready"] == [doc["forwards"]]
    listening = {(e["address"], e["remote_port"]): e["local_port"] for e in events[:6]}
    assert listening == {(f["address"], f["remote_port"]): f["local_port"] for f in doc["forwards"]}
    assert all(
        e["target"] == "web-1"
        and e["pod"] == "web-1"
        and e["namespace"] == "default"
        and e["context"] == "fastpf"
        for e in events
        if e["event"] != "ready"
    )
    by_port = {e["remote_port"]: e for e in events if e["event"] == "connection_closed"}
    echo, sink, refused = by_port[targets.echo], by_port[targets.sink], by_port[closed]
    assert (echo["bytes_to_pod"], echo["bytes_from_pod"], echo["error"]) == (1000, 1000, None)
    assert sink["bytes_to_pod"] == 5 + 5000 and sink["bytes_from_pod"] == len(f"5000 {'0' * 64}\n")
    assert refused["error"] and "connection refused" in refused["error"]
    errors = [e for e in events if e["event"] == "error"]
    assert len(errors) == 1 and errors[0]["id"] == refused["id"] and not errors[0]["fatal"]
    opened = {e["id"] for e in events if e["event"] == "connection_opened"}
    assert opened == {e["id"] for e in by_port.values()}
    assert not ready.exists()  # removed at exit
    assert run.stderr and all(re.match(r"^E\d{4} ", ln) for ln in run.stderr)  # kubectl's E-line


def test_ready_file_replaces_a_stale_one_and_counts_every_listener(
    start: Callable[..., Run], targets: Targets, tmp_path: Path
) -> None:
    ready = tmp_path / "ready.json"
    ready.write_text("stale")
    run = start(
        "--ready-file",
        str(ready),
        "--address",
        "127.0.0.1",
        "--stats",
        "--stats-interval=1h",
        "web-1",
        f":{targets.echo}",
    )
    doc = _wait_file(ready, run)
    assert doc["pid"] == run.proc.pid and len(doc["forwards"]) == 1
    local = doc["forwards"][0]["local_port"]
    assert run.stdout[0] == f"Forwarding from 127.0.0.1:{local} -> {targets.echo}"
    os.kill(run.proc.pid, signal.SIGTERM)  # SIGTERM, like Ctrl-C: clean exit with the summary
    assert run.wait_exit(20) == 0 and not ready.exists()
    assert run.stderr[-1].startswith(f"[summary] web-1 {local}->{targets.echo}: 0 connections, ")


def _normalise(lines: list[str], names: dict[int, str]) -> list[str]:
    out = []
    for line in lines:
        line = re.sub(r"\((?:\d+ B|[\d.]+ [kMGT]B)/s\)", "(RATE)", line)
        line = re.sub(r" in [\dhms.]+$", " in DURATION", line)
        line = re.sub(r"\d+", lambda m: names.get(int(m.group(0)), m.group(0)), line)
        out.append(line)
    return out


def test_stats_plain_lines_golden(start: Callable[..., Run], targets: Targets) -> None:
    """Not a terminal: periodic `[stats]` lines, one per port, and `[summary]` lines at exit."""
    closed = free_port()
    run = start(
        "--stats",
        "--stats-interval",
        "100ms",
        "--address",
        "127.0.0.1",
        "web-1",
        f":{targets.echo}",
        f":{targets.sink}",
        f":{closed}",
    )
    run.wait_forwarding(3)
    local = {remote: lp for _, lp, remote in run.forwards}
    for _ in range(2):
        assert echo_once(local[targets.echo], b"e" * 1000) == b"e" * 1000
    assert upload(local[targets.sink], 5000).startswith("5000 ")
    with socket.create_connection(("127.0.0.1", local[closed]), timeout=20) as s:
        s.settimeout(20)
        assert s.recv(10) == b""

    def settled() -> bool:
        lines = [ln for ln in run.stderr[-3:] if ln.startswith("[stats]")]
        return (
            len(lines) == 3
            and "conns 2" in lines[0]
            and "conns 1  down 0 B" in lines[2]
            and "last error: -" not in lines[2]
            and "5.0 kB" in lines[1]
            and "active 0" in lines[1]
        )

    run.wait_for(settled, "stats lines with every connection counted")
    assert run.interrupt() == 0
    names = {
        targets.echo: "ECHO",
        targets.sink: "SINK",
        closed: "CLOSED",
        local[targets.echo]: "L1",
        local[targets.sink]: "L2",
        local[closed]: "L3",
    }
    stderr = list(run.stderr)
    assert all(ln.startswith(("[stats] ", "[summary] ", "E")) for ln in stderr), stderr
    stats = [ln for ln in stderr if ln.startswith("[stats]")]
    assert len(stats) % 3 == 0 and len(stats) >= 6  # a block per refresh
    summary = [ln for ln in stderr if ln.startswith("[summary]")]
    got = _normalise(stats[-3:] + summary, names)
    golden = (GOLDEN / "stats_plain.txt").read_text().splitlines()
    if os.environ.get("FASTPF_UPDATE_GOLDEN") == "1":  # pragma: no cover - maintainer aid
        (GOLDEN / "stats_plain.txt").write_text("\n".join(got) + "\n")
    assert got == golden


class FakeTracker(Tracker):
    def __init__(self) -> None:
        super().__init__(Target("pod/p", "default", "c"), clock=lambda: 0.0)
        self.listening("127.0.0.1", 5000, 80)


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_stats_terminal_redraws_in_place_below_other_lines() -> None:
    from fastpf.client.console import Console

    clock = iter(range(100))
    stream = Tty()
    view = StatsView([FakeTracker()], stream, interval=1.0, clock=lambda: float(next(clock)))
    assert view.tty
    view.refresh()
    first = stream.getvalue()
    assert first.startswith("pod/p 5000->80  active 0  conns 0") and first.count("\n") == 1
    view.refresh()
    assert stream.getvalue()[len(first) :].startswith("\x1b[1F\x1b[J")  # up one line, clear, draw
    console = Console(io.StringIO(), stream)
    console.live = view
    mark = len(stream.getvalue())
    console.conn_error("boom")
    tail = stream.getvalue()[mark:]
    # the block goes, the error line is written, the block comes back under it
    assert tail.startswith("\x1b[1F\x1b[JE") and "boom" in tail
    assert tail.splitlines()[-1].startswith("pod/p 5000->80  active 0")
    view.stop()
    assert stream.getvalue().endswith("0 errors, 0 reconnects in 3.0s\n")


def test_human_units() -> None:
    assert [human_bytes(n) for n in (0, 999, 1000, 1_234_567, 5e12)] == [
        "0 B",
        "999 B",
        "1.0 kB",
        "1.2 MB",
        "5.0 TB",
    ]
    assert [human_duration(s) for s in (0.25, 61, 3723)] == ["0.2s", "1m01s", "1h02m03s"]


def test_ready_document_lists_every_listener() -> None:
    tracker = Tracker(Target("svc/db", "prod", "a"))
    tracker.listening("127.0.0.1", 5432, 5432)
    tracker.listening("::1", 5432, 5432)
    doc = ready_document([tracker])
    assert [(f["address"], f["local_port"]) for f in doc["forwards"]] == [
        ("127.0.0.1", 5432),
        ("::1", 5432),
    ]
    assert doc["forwards"][0]["context"] == "a" and doc["pid"] == os.getpid()
