"""Default verbosity prints only lines kubectl prints: `Forwarding from` / `Handling connection
for` on stdout, klog E-lines for per-connection errors on stderr, nothing else (no library
warnings such as uvloop's "returning true from eof_received() has no effect when using ssl",
which `--protocol ws-channel` used to print)."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable

import pytest

from tests.support.patterns import download, echo_once, upload
from tests.support.processes import KubectlPortForward, subprocess_env
from tests.support.serve_process import ServeInstance
from tests.support.targets import Targets, free_port, manifest

STDOUT_OK = re.compile(
    r"^(Forwarding from (127\.0\.0\.1|\[::1\]):\d+ -> \d+|Handling connection for \d+)$"
)
# klog's header, then kubectl's "Unhandled Error" form for a forwarded connection's failure
STDERR_OK = re.compile(
    r'^E\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ \S+\] "Unhandled Error" '
    r'err="(an error occurred forwarding|error copying for port|'
    r"error creating (error |forwarding )?stream for port|error forwarding) "
)


def _abort_mid_download(port: int) -> None:
    """Ask for a lot, read a little, then reset the connection (SO_LINGER 0)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"%d\n" % (64 << 20))
        s.recv(65536)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


@pytest.mark.parametrize("protocol", ["spdy", "websocket", "ws-channel"])
def test_forward_prints_only_kubectl_lines(
    serve_factory: Callable[..., ServeInstance], targets: Targets, protocol: str
) -> None:
    srv = serve_factory(manifest=manifest(targets))
    closed = free_port()
    cmd = [
        sys.executable,
        "-m",
        "fastpf",
        "--kubeconfig",
        str(srv.kubeconfig),
        "--protocol",
        protocol,
        "web-1",
        f":{targets.echo}",
        f":{targets.sink}",
        f":{targets.source}",
        f":{closed}",
    ]
    pf = KubectlPortForward(cmd, subprocess_env())
    try:
        pf.wait_forwarding(4)
        local = {remote: lp for addr, lp, remote in pf.forwards if addr == "127.0.0.1"}
        for _ in range(3):
            assert echo_once(local[targets.echo], b"hello") == b"hello"
        assert upload(local[targets.sink], 1 << 20).startswith(f"{1 << 20} ")
        assert download(local[targets.source], 1 << 20)[0] == 1 << 20
        _abort_mid_download(local[targets.source])
        with socket.create_connection(("127.0.0.1", local[closed]), timeout=20) as s:
            s.settimeout(20)
            assert s.recv(10) == b""
        assert echo_once(local[targets.echo], b"after") == b"after"
        time.sleep(0.5)  # late lines (error text after the data stream) get their chance
        os.kill(pf.proc.pid, signal.SIGINT)
        assert pf.wait_exit(20) == 0
    finally:
        pf.stop()
    bad_out = [ln for ln in pf.stdout if not STDOUT_OK.match(ln)]
    bad_err = [ln for ln in pf.stderr if not STDERR_OK.match(ln)]
    assert (bad_out, bad_err) == ([], [])
    assert any("an error occurred forwarding" in ln for ln in pf.stderr)  # the refused one
