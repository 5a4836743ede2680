"""The client's loop handler for errors nobody awaited: a cancelled background task's network
error is one verbose line, never a traceback; anything else still reaches the default handler."""

from __future__ import annotations

import asyncio
import gc
import io
import logging

import pytest

from fastpf.client.console import Console
from fastpf.client.main import _quiet_network_errors
from fastpf.loop import new_event_loop


async def _fails(exc: BaseException) -> None:
    await asyncio.sleep(0)
    raise exc


def _orphan(loop: asyncio.AbstractEventLoop, exc: BaseException) -> None:
    """A task that ends with `exc` and is dropped unawaited (as a cancelled wait_for can)."""
    task = loop.create_task(_fails(exc))
    loop.run_until_complete(asyncio.sleep(0.01))
    assert task.done()
    del task
    gc.collect()  # the loop reports "Task exception was never retrieved" now


@pytest.mark.parametrize("verbosity", [0, 4])
def test_a_network_error_nobody_awaited_is_one_line_at_most(
    verbosity: int, caplog: pytest.LogCaptureFixture
) -> None:
    err = io.StringIO()
    loop = new_event_loop()
    try:
        loop.set_exception_handler(_quiet_network_errors(Console(err=err, verbosity=verbosity)))
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            _orphan(loop, ConnectionResetError(104, "Connection reset by peer"))
    finally:
        loop.close()
    assert "Traceback" not in err.getvalue() and not caplog.records
    lines = err.getvalue().splitlines()
    if verbosity:
        assert len(lines) == 1 and "Connection reset by peer" in lines[0], lines
    else:
        assert lines == []


def test_any_other_error_still_gets_the_default_report(caplog: pytest.LogCaptureFixture) -> None:
    err = io.StringIO()
    loop = new_event_loop()
    try:
        loop.set_exception_handler(_quiet_network_errors(Console(err=err)))
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            _orphan(loop, ValueError("a bug"))
    finally:
        loop.close()
    assert any("never retrieved" in r.getMessage() for r in caplog.records), caplog.records
