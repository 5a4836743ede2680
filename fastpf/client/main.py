"""`fastpf [flags] TYPE/NAME [LOCAL:]REMOTE ...`: kubectl port-forward's behaviour and exit codes.

Exit 0 after SIGINT/SIGTERM (GOAWAY sent, listeners closed); 1 for every error, printed as one
stderr line (PROTOCOL.md 2.4). Never a traceback: anything unexpected becomes one line too.

fastpf's own options sit around that without changing it unless given: `-o json` replaces the
stdout lines by JSON events, `--stats` adds a live view and exit summary on stderr,
`--ready-file` is written once every listener is bound, and `-f FILE` runs many targets (each
its own Forwarder) in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastpf.client.args import USAGE, Options, parse_args
from fastpf.client.console import Console
from fastpf.client.events import (
    JsonLines,
    Target,
    Tracker,
    ready_document,
    write_ready_file,
)
from fastpf.client.forward import Forwarder, prepare
from fastpf.errors import ClientError, FastpfError, UsageError
from fastpf.goparity import errno_text, format_rfc3339_micro
from fastpf.limits import raise_nofile_limit
from fastpf.loop import run
from fastpf.transport.tls import lingering_done


@dataclass
class Job:
    """One target to forward: its options, its console and its accounting."""

    opts: Options
    console: Console
    tracker: Tracker
    label: str = ""  # "" for the one target of a plain command line
    fwd: Forwarder | None = None


@dataclass
class Run:
    jobs: list[Job]
    console: Console
    ready_file: str | None = None
    stats: bool = False
    stats_interval: float = 0.0
    emit: JsonLines | None = None
    config_file: str | None = None
    wrote_ready: bool = field(default=False, init=False)

    def fail(self, job: Job, line: str) -> None:
        """A fatal error line (kubectl's words), naming the target when there are several."""
        job.console.error(f"{job.label}: {line}" if job.label else line)
        job.tracker.error(line, fatal=True)


def _quiet_network_errors(console: Console) -> Callable[[Any, dict[str, Any]], None]:
    """The loop's handler for errors nobody awaited: a background task (a pod lookup, a
    session's reader) that ended with a network error while being cancelled has been
    reported, or made moot, by the path that cancelled it. One verbose line, not the
    default handler's traceback. Anything else keeps the default handler (a bug's trace)."""

    def handle(loop: Any, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError):
            console.info(4, f"{context.get('message', 'background task')}: {exc}")
            return
        loop.default_exception_handler(context)

    return handle


async def _run(run_: Run) -> int:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_quiet_network_errors(run_.console))
    stop = loop.create_future()

    def on_signal() -> None:
        if not stop.done():
            stop.set_result(None)

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
    view = None
    try:
        # Resolve every target first (in order: a target's lines stay together), then check
        # that no two claim one local port, then bind and accept.
        for phase in (_prepare, _start):
            for job in run_.jobs:
                step = asyncio.ensure_future(phase(job))
                done, _ = await asyncio.wait({step, stop}, return_when=asyncio.FIRST_COMPLETED)
                if step not in done:  # interrupted while resolving / upgrading
                    step.cancel()
                    with contextlib.suppress(BaseException):
                        await step
                    await _stop_all(run_)
                    return 0
                try:
                    step.result()
                except (ClientError, FastpfError, OSError) as exc:
                    line = exc.line if isinstance(exc, ClientError) else f"error: {exc}"
                    run_.fail(job, line)
                    await _stop_all(run_)
                    return exc.exit_code if isinstance(exc, ClientError) else 1
            clash = _clash(run_) if phase is _prepare else None
            if clash:
                run_.console.error(f"error: {run_.config_file}: {clash}")
                await _stop_all(run_)
                return 1
        _ready(run_)
        if run_.stats:
            from fastpf.client.stats import StatsView

            view = StatsView(
                [j.tracker for j in run_.jobs],
                run_.console.err,
                interval=run_.stats_interval,
                show_where=len(run_.jobs) > 1,
            )
            if view.tty:
                for job in run_.jobs:
                    job.console.live = view
            view.start()
        waits = {asyncio.ensure_future(j.fwd.wait()): j for j in run_.jobs if j.fwd is not None}
        done, _ = await asyncio.wait({*waits, stop}, return_when=asyncio.FIRST_COMPLETED)
        lost = [(waits[w], w.result()) for w in done if w in waits and w.result()]
        for w in waits:
            w.cancel()
        await _stop_all(run_)
        for job, message in lost[:1]:
            run_.fail(job, f"error: {message}")
        return 1 if lost else 0
    finally:
        if view is not None:
            for job in run_.jobs:
                job.console.live = None
            view.stop()
        _unready(run_)
        for sig in installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)


async def _prepare(job: Job) -> None:
    fwd = await prepare(job.opts.forward_spec(), job.console)
    cfg = fwd.api.cfg
    job.tracker.target.namespace = cfg.namespace
    job.tracker.target.context = cfg.context
    job.tracker.target.pod = _pod_of(fwd.path)
    fwd.observer = job.tracker
    job.fwd = fwd


def _clash(run_: Run) -> str | None:
    """Many targets: the local ports they resolved to must not collide (checked before any
    listener is bound; numeric ones were checked when the file was read)."""
    if len(run_.jobs) < 2:
        return None
    from fastpf.client.config_file import find_clashes

    clashes = find_clashes(
        [(j.label, j.fwd.addresses, j.fwd.pairs) for j in run_.jobs if j.fwd is not None]
    )
    return clashes[0] if clashes else None


async def _start(job: Job) -> None:
    assert job.fwd is not None
    try:
        await job.fwd.start()
    except BaseException:
        await job.fwd.stop()
        raise


def _pod_of(path: str) -> str:
    """The pod name of a `.../namespaces/NS/pods/NAME/portforward` path ("" for a raw path)."""
    parts = path.strip("/").split("/")
    if len(parts) >= 3 and parts[-1] == "portforward" and parts[-3] == "pods":
        from urllib.parse import unquote

        return unquote(parts[-2])
    return ""


async def _stop_all(run_: Run) -> None:
    for job in run_.jobs:
        if job.fwd is not None:
            await job.fwd.stop()
    await lingering_done()  # the last bytes of closed connections reach the API server


def _ready(run_: Run) -> None:
    doc = ready_document([j.tracker for j in run_.jobs])
    if run_.emit is not None:
        run_.emit(
            {
                "schema": doc["schema"],
                "event": "ready",
                "time": format_rfc3339_micro(),
                "forwards": doc["forwards"],
            }
        )
    if run_.ready_file:
        try:
            write_ready_file(run_.ready_file, doc)
            run_.wrote_ready = True
        except OSError as exc:  # the forward itself works: say so once, go on
            run_.console.warn(f"cannot write --ready-file {run_.ready_file}: {errno_text(exc)}")


def _unready(run_: Run) -> None:
    if run_.wrote_ready and run_.ready_file:
        with contextlib.suppress(OSError):
            os.remove(run_.ready_file)


def _jobs(opts: Options, console: Console, emit: JsonLines | None) -> list[Job]:
    if opts.config_file is None:
        tracker = Tracker(Target(opts.target), emit)
        console.on_error = tracker.error
        return [Job(opts, console, tracker)]
    from fastpf.client.config_file import load_forwards

    jobs = []
    for entry in load_forwards(opts.config_file, opts):
        tracker = Tracker(Target(entry.opts.target, name=entry.name), emit)
        jobs.append(
            Job(entry.opts, console.for_target(entry.label, tracker.error), tracker, entry.label)
        )
    return jobs


def main(argv: list[str], prog: str = "fastpf") -> int:
    """`prog` names the program in hints: "kubectl fastpf" when run as kubectl's plugin."""
    console = Console()
    try:
        opts = parse_args(argv)
    except UsageError as exc:
        console.error(exc.line)
        if exc.help_hint:
            console.error(f"See '{prog} -h' for help and examples")
        elif exc.show_usage:
            console.error(f"See '{prog} --help' for usage.")
        return exc.exit_code
    if opts.help:
        console.usage(USAGE.format(prog=prog).rstrip("\n"))
        return 0
    if opts.version:
        from fastpf.client import version

        return version.main(argv, console, quick=True)
    console.quiet = opts.quiet
    console.verbosity = opts.verbosity
    console.json = opts.output == "json"
    emit = JsonLines(console.out) if console.json else None
    if opts.ready_file:
        with contextlib.suppress(FileNotFoundError):  # a previous run's: not ready yet
            os.remove(opts.ready_file)
    raise_nofile_limit()  # as kubectl (Go) does: thousands of connections, not 1024
    try:
        jobs = _jobs(opts, console, emit)
        return run(
            _run(
                Run(
                    jobs,
                    console,
                    opts.ready_file,
                    opts.stats,
                    opts.stats_interval,
                    emit,
                    opts.config_file,
                )
            )
        )
    except ClientError as exc:
        console.error(exc.line)
        return exc.exit_code
    except FastpfError as exc:
        console.error(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        if opts.verbosity >= 4:
            import traceback

            traceback.print_exc()
        console.error(f"error: {str(exc) or type(exc).__name__}")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
