"""`fastpf [flags] TYPE/NAME [LOCAL:]REMOTE ...`: kubectl port-forward's behaviour and exit codes.

Exit 0 after SIGINT/SIGTERM (GOAWAY sent, listeners closed); 1 for every error, printed as one
stderr line (PROTOCOL.md 2.4). Never a traceback: anything unexpected becomes one line too.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from fastpf.client.args import USAGE, Options, parse_args
from fastpf.client.console import Console
from fastpf.client.errors import ClientError, UsageError
from fastpf.client.forward import Forwarder, prepare
from fastpf.errors import FastpfError
from fastpf.limits import raise_nofile_limit
from fastpf.loop import run


async def _run(opts: Options, console: Console) -> int:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def on_signal() -> None:
        if not stop.done():
            stop.set_result(None)

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
    try:
        setup = asyncio.ensure_future(_setup(opts, console))
        done, _ = await asyncio.wait({setup, stop}, return_when=asyncio.FIRST_COMPLETED)
        if setup not in done:  # interrupted while resolving / upgrading
            setup.cancel()
            with contextlib.suppress(BaseException):
                await setup
            return 0
        fwd = setup.result()
        lost = asyncio.ensure_future(fwd.wait())
        done, _ = await asyncio.wait({lost, stop}, return_when=asyncio.FIRST_COMPLETED)
        if lost in done and lost.result():
            await fwd.stop()
            console.error(f"error: {lost.result()}")
            return 1
        lost.cancel()
        await fwd.stop()
        return 0
    finally:
        for sig in installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)


async def _setup(opts: Options, console: Console) -> Forwarder:
    fwd = await prepare(opts, console)
    try:
        await fwd.start()
    except BaseException:
        await fwd.stop()
        raise
    return fwd


def main(argv: list[str]) -> int:
    console = Console()
    try:
        opts = parse_args(argv)
    except UsageError as exc:
        console.error(exc.line)
        if exc.help_hint:
            console.error("See 'fastpf -h' for help and examples")
        elif exc.show_usage:
            console.error("See 'fastpf --help' for usage.")
        return exc.exit_code
    if opts.help:
        console.usage(USAGE.rstrip("\n"))
        return 0
    console.quiet = opts.quiet
    console.verbosity = opts.verbosity
    raise_nofile_limit()  # as kubectl (Go) does: thousands of connections, not 1024
    try:
        return run(_run(opts, console))
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
