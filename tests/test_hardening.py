"""Load and hostile peers (issue 10): descriptor limits, slowloris, bounded floods, deadlines,
honest errors. Every test is loopback only and bounded in time; memory is read from /proc."""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Callable

import pytest
from conftest import ServeInstance, Targets
from support_hostile import (
    concurrent_echo,
    ensure_nofile,
    fastpf_client,
    lowered_nofile,
    nofile_of,
)

# ---------------------------------------------------------------------------------------------
# descriptor limits


def test_serve_raises_its_soft_descriptor_limit(serve_factory: Callable[..., ServeInstance]) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard <= 1024:
        pytest.skip("hard descriptor limit is 1024: nothing to raise")
    with lowered_nofile(1024):
        srv = serve_factory()
    assert nofile_of(srv.process.pid) == (hard, hard)


def test_client_at_soft_limit_1024_holds_2000_connections(serve: ServeInstance, targets: Targets) -> None:
    """kubectl raises its soft limit (Go does) and completes all 2,000; so must we."""
    if ensure_nofile(6000) < 6000:
        pytest.skip("this test needs 6000 descriptors for its own end of the connections")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    with lowered_nofile(1024):
        pf = fastpf_client(serve.kubeconfig, "--protocol", "spdy", "pod/x", f":{targets.echo}")
    try:
        pf.wait_forwarding(1)
        result = asyncio.run(concurrent_echo(pf.local_port(targets.echo), 2000))
        assert result.failures == []
        assert result.ok == 2000 and result.peak_open == 2000
        assert nofile_of(pf.proc.pid) == (hard, hard)
    finally:
        pf.stop()


def test_client_out_of_descriptors_says_so_once_and_drops_nothing(
        serve: ServeInstance, targets: Targets) -> None:
    """With the hard limit itself reached, connections wait in the backlog (none is accepted
    and dropped, as uvloop's accept does) and the user gets one line for the listener."""
    pf = fastpf_client(serve.kubeconfig, "--protocol", "spdy", "pod/x", f":{targets.echo}")
    try:
        pf.wait_forwarding(1)
        resource.prlimit(pf.proc.pid, resource.RLIMIT_NOFILE, (96, 96))
        result = asyncio.run(concurrent_echo(pf.local_port(targets.echo), 400, hold=False,
                                             connect_parallel=200))
        assert result.failures == []
        assert result.ok == 400
    finally:
        pf.stop()
    lines = [ln for ln in pf.stderr if "too many open files" in ln]
    assert lines, pf.stderr
    assert len(lines) <= 2  # rate-limited: one line per listener per 10 s
    assert "error accepting connection on port" in lines[0]
    assert "open file limit 96" in lines[0]
