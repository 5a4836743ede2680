"""Load and hostile peers (issue 10): descriptor limits, slowloris, bounded floods, deadlines,
honest errors. Every test is loopback only and bounded in time; memory is read from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import random
import resource
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fastpf import _frames as F
from fastpf.errors import HandshakeError
from fastpf.listen import Acceptor, exhausted_text
from fastpf.serve import server as server_module
from fastpf.serve.server import Server
from fastpf.transport import handshake, upgrade
from fastpf.transport.kubelet import MAX_UNPAIRED
from fastpf.types import ApiDialer
from tests.support.fake_api import SPDY_101, HostileApi
from tests.support.kubectl import run_kubectl
from tests.support.patterns import concurrent_echo
from tests.support.processes import (
    ensure_nofile,
    fastpf_client,
    fastpf_cmd,
    last_line,
    lowered_nofile,
    nofile_of,
    rss_kib,
    run_command,
    subprocess_env,
)
from tests.support.proxies import Mitm, kubeconfig_via
from tests.support.serve_process import ServeInstance
from tests.support.targets import Targets
from tests.support.waits import wait_until

PATH = "/api/v1/namespaces/default/pods/x/portforward"

# ---------------------------------------------------------------------------------------------
# descriptor limits


def test_serve_raises_its_soft_descriptor_limit(
    serve_factory: Callable[..., ServeInstance],
) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard <= 1024:
        pytest.skip("hard descriptor limit is 1024: nothing to raise")
    with lowered_nofile(1024):
        srv = serve_factory()
    assert nofile_of(srv.process.pid) == (hard, hard)


def test_client_at_soft_limit_1024_holds_2000_connections(
    serve: ServeInstance, targets: Targets
) -> None:
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
    serve: ServeInstance, targets: Targets
) -> None:
    """With the hard limit itself reached, connections wait in the backlog (none is accepted
    and dropped, as uvloop's accept does) and the user gets one line for the listener."""
    pf = fastpf_client(serve.kubeconfig, "--protocol", "spdy", "pod/x", f":{targets.echo}")
    try:
        pf.wait_forwarding(1)
        resource.prlimit(pf.proc.pid, resource.RLIMIT_NOFILE, (96, 96))
        result = asyncio.run(
            concurrent_echo(pf.local_port(targets.echo), 400, hold=False, connect_parallel=200)
        )
        assert result.failures == []
        assert result.ok == 400
    finally:
        pf.stop()
    lines = [ln for ln in pf.stderr if "too many open files" in ln]
    assert lines, pf.stderr
    assert len(lines) <= 2  # rate-limited: one line per listener per 10 s
    assert "error accepting connection on port" in lines[0]
    assert "open file limit 96" in lines[0]


# ---------------------------------------------------------------------------------------------
# slowloris


async def _slowloris(srv: ServeInstance, n: int) -> list[asyncio.StreamWriter]:
    """Half the connections never start TLS; the other half finish TLS and send an endless
    request head (one header line, then silence)."""
    held: list[asyncio.StreamWriter] = []
    ctx = srv.ssl_context()
    for i in range(n):
        try:
            if i % 2:
                _, w = await asyncio.open_connection(srv.host, srv.port)
            else:
                _, w = await asyncio.wait_for(
                    asyncio.open_connection(srv.host, srv.port, ssl=ctx), 10
                )
                w.write(b"GET /api HTTP/1.1\r\nHost: x\r\n")
        except (OSError, asyncio.TimeoutError):
            continue  # shed before the handshake finished: what serve is meant to do
        held.append(w)
    return held


def test_slowloris_does_not_starve_rest_or_forwards(serve: ServeInstance, targets: Targets) -> None:
    """1,000 slowloris connections against serve at a 1024 descriptor limit (soft = hard):
    REST requests and new forwards keep working (serve sheds the oldest waiting ones)."""
    if ensure_nofile(4000) < 4000:
        pytest.skip("needs 4000 descriptors for the slowloris side")
    resource.prlimit(serve.process.pid, resource.RLIMIT_NOFILE, (1024, 1024))

    async def body() -> None:
        await asyncio.sleep(1.1)  # serve re-reads its limit once a second
        held = await _slowloris(serve, 1000)
        try:
            status, _, _ = await asyncio.to_thread(serve.get, "/api")
            assert status == 200
            pf = fastpf_client(serve.kubeconfig, "--protocol", "spdy", "pod/x", f":{targets.echo}")
            try:
                await asyncio.to_thread(pf.wait_forwarding, 1)
                result = await concurrent_echo(pf.local_port(targets.echo), 50, timeout=20)
                assert result.failures == [] and result.ok == 50
            finally:
                await asyncio.to_thread(pf.stop)
            status, _, _ = await asyncio.to_thread(serve.get, "/api")
            assert status == 200
        finally:
            for w in held:
                w.transport.abort()

    asyncio.run(asyncio.wait_for(body(), 90))
    assert "too many open files" not in serve.stderr_text()


# ---------------------------------------------------------------------------------------------
# floods: what a peer can make us hold is bounded


def _pings(first: int, count: int) -> bytes:
    enc = F.SpdyEncoder()
    return b"".join(enc.ping(first + 2 * i) for i in range(count))


async def _flood(writer: asyncio.StreamWriter, chunk: bytes, total: int) -> int:
    """Write `chunk` until `total` bytes went out or the peer stops reading (1 s); -> bytes."""
    sent = 0
    while sent < total:
        writer.write(chunk)
        sent += len(chunk)
        try:
            await asyncio.wait_for(writer.drain(), 1.0)
        except asyncio.TimeoutError:
            break
    return sent


def test_client_pauses_a_ping_flood_it_cannot_answer(tmp_path: Path) -> None:
    """A server that floods PINGs and never reads the echoes: the client stops reading once
    its unsent echoes pass the bound (it grew by the flood's size before: 59 MB -> +50 MiB)."""
    chunk = _pings(2, 1 << 14)  # even ids: the server's pings, which the client echoes
    flood_now = asyncio.Event()
    sent: list[int] = []

    async def on_upgrade(
        head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(SPDY_101)
        await flood_now.wait()
        sent.append(await _flood(writer, chunk, 64 << 20))
        await asyncio.sleep(3600)  # never read, never close

    async def body() -> None:
        async with HostileApi(on_upgrade) as api:
            pf = fastpf_client(
                api.kubeconfig(tmp_path / "kc"), "--protocol", "spdy", "pod/x", ":80"
            )
            try:
                await asyncio.to_thread(pf.wait_forwarding, 1)
                before = rss_kib(pf.proc.pid)
                flood_now.set()
                assert await wait_until(lambda: bool(sent), 60)
                grown = rss_kib(pf.proc.pid) - before
                assert pf.proc.poll() is None
            finally:
                await asyncio.to_thread(pf.stop)
        assert sent[0] < 40 << 20, "the client read the whole flood"
        assert grown < 16 << 10, f"client grew {grown} KiB"

    asyncio.run(asyncio.wait_for(body(), 120))


async def _raw_spdy(srv: ServeInstance) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(srv.host, srv.port)
    _, raw = handshake.spdy_request("127.0.0.1", PATH, [("Authorization", f"Bearer {srv.token}")])
    writer.write(raw)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert b" 101 " in head, head
    return reader, writer


def test_serve_pauses_a_ping_flood_it_cannot_answer(
    serve_factory: Callable[..., ServeInstance],
) -> None:
    """A client that floods PINGs and never reads: serve stops reading (it held 200 MiB of
    echoes for a 200 MB flood before)."""
    srv = serve_factory(tls=False)
    chunk = _pings(1, 1 << 14)  # odd ids: the client's pings, which serve echoes

    async def body() -> tuple[int, int]:
        _, writer = await _raw_spdy(srv)
        before = rss_kib(srv.process.pid)
        sent = await _flood(writer, chunk, 64 << 20)
        grown = rss_kib(srv.process.pid) - before
        writer.transport.abort()
        return sent, grown

    sent, grown = asyncio.run(asyncio.wait_for(body(), 120))
    assert sent < 40 << 20, "serve read the whole flood"
    assert grown < 16 << 10, f"serve grew {grown} KiB"


def test_serve_bounds_streams_that_never_pair(serve_factory: Callable[..., ServeInstance]) -> None:
    """200,000 SYN_STREAMs that never pair (5 MB): serve held ~480 MiB and kept it after the
    session closed. Now at most MAX_UNPAIRED are held, the rest refused, and memory goes back."""
    srv = serve_factory(tls=False)
    count = 200_000
    enc = F.SpdyEncoder()
    flood = b"".join(
        enc.syn_stream(1 + 2 * i, {"streamtype": "error", "port": "80", "requestid": f"r{i}"})
        for i in range(count)
    )

    async def body() -> tuple[int, int, int, dict[int, int]]:
        reader, writer = await _raw_spdy(srv)
        base = rss_kib(srv.process.pid)
        kinds: dict[int, int] = {}
        dec = F.SpdyDecoder()

        async def read_replies() -> None:
            for _ in range(1 << 20):
                data = await reader.read(1 << 16)
                if not data:
                    return
                dec.feed(data)
                for _ in range(1 << 16):
                    frame = dec.next_frame()
                    if frame is None:
                        break
                    kinds[frame.type] = kinds.get(frame.type, 0) + 1
                if kinds.get(F.RST_STREAM, 0) + kinds.get(F.SYN_REPLY, 0) >= count:
                    return

        replies = asyncio.ensure_future(read_replies())
        writer.write(flood)
        await asyncio.wait_for(replies, 60)
        peak = rss_kib(srv.process.pid)
        writer.transport.abort()
        after = peak
        for _ in range(100):  # up to 20 s for the session to end and the memory to go back
            await asyncio.sleep(0.2)
            after = rss_kib(srv.process.pid)
            if after - base < 8 << 10:
                break
        return base, peak, after, kinds

    base, peak, after, kinds = asyncio.run(asyncio.wait_for(body(), 120))
    assert kinds.get(F.SYN_REPLY) == MAX_UNPAIRED
    assert kinds.get(F.RST_STREAM) == count - MAX_UNPAIRED  # REFUSED_STREAM
    assert peak - base < 48 << 10, f"serve grew {peak - base} KiB"
    assert after - base < 8 << 10, f"serve kept {after - base} KiB after the session ended"


def test_idle_sessions_are_small_and_give_their_memory_back(serve: ServeInstance) -> None:
    """2,000 idle upgraded TLS sessions: ~130 KiB each before (a zlib deflate state made per
    session) and never given back; now the state is made on first use, and after the
    sessions end serve returns to near its baseline."""
    if ensure_nofile(4000) < 4000:
        pytest.skip("needs 4000 descriptors")
    ctx = serve.ssl_context()
    n = 2000

    async def one() -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_connection(serve.host, serve.port, ssl=ctx)
        _, raw = handshake.spdy_request(
            "127.0.0.1", PATH, [("Authorization", f"Bearer {serve.token}")]
        )
        writer.write(raw)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        assert b" 101 " in head
        return writer

    async def body() -> tuple[int, int, int]:
        await asyncio.sleep(0.5)
        base = rss_kib(serve.process.pid)
        held: list[asyncio.StreamWriter] = []
        for _ in range(n // 100):
            held += await asyncio.gather(*(one() for _ in range(100)))
        await asyncio.sleep(0.5)
        peak = rss_kib(serve.process.pid)
        for w in held:
            w.close()
        after = peak
        for _ in range(100):  # up to 20 s
            await asyncio.sleep(0.2)
            after = rss_kib(serve.process.pid)
            if after - base < 16 << 10:
                break
        return base, peak, after

    base, peak, after = asyncio.run(asyncio.wait_for(body(), 150))
    assert (peak - base) / n < 72, f"{(peak - base) / n:.1f} KiB per idle session"
    assert after - base < 16 << 10, f"serve kept {after - base} KiB after 2,000 sessions ended"


# ---------------------------------------------------------------------------------------------
# honest errors, in kubectl's words (each compared with what kubectl prints for the same peer)

GARBAGE = random.Random(1).randbytes(4096)


async def _garbage(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.write(GARBAGE)
    await asyncio.sleep(30)  # and keep the connection open
    return True


async def _hang_up(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.close()
    return True


async def _redirect_loop(
    head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> bool:
    target = head.split(b" ", 2)[1]
    writer.write(b"HTTP/1.1 302 Found\r\nLocation: " + target + b"\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()
    writer.close()
    return True


ANSWERS = {"garbage": _garbage, "hang-up": _hang_up, "redirect-loop": _redirect_loop}


@pytest.mark.parametrize("protocol", ["auto", "spdy"])  # kubectl 1.33 with and without websockets
@pytest.mark.parametrize("answer", list(ANSWERS))
def test_bad_upgrade_answers_get_kubectls_error_at_once(
    answer: str,
    protocol: str,
    serve_factory: Callable[..., ServeInstance],
    kubectl_bin: Callable[[str], str],
    kubectl_cache_dir: Path,
    tmp_path: Path,
) -> None:
    """Garbage instead of an HTTP answer, a server that hangs up without answering, endless
    redirects: fastpf says exactly what kubectl 1.33 says (no h11 text, no "i/o timeout"
    after 30 s), at once."""
    kubectl = kubectl_bin("1.33")
    srv = serve_factory(tls=False)
    ws = "true" if protocol == "auto" else "false"

    async def body() -> tuple[tuple[int | None, str, float], tuple[int | None, str, float]]:
        async with Mitm(srv.port, ANSWERS[answer]) as mitm:
            kc = kubeconfig_via(srv, mitm.port, tmp_path / "kc")
            ours = await run_command(fastpf_cmd(kc, "--protocol", protocol, "pod/x", ":80"), 20)
            theirs = await run_command(
                [
                    kubectl,
                    "--kubeconfig",
                    str(kc),
                    "--cache-dir",
                    str(kubectl_cache_dir),
                    "port-forward",
                    "pod/x",
                    ":80",
                ],
                40,
                env={"KUBECTL_PORT_FORWARD_WEBSOCKETS": ws},
            )
        return ours, theirs

    ours, theirs = asyncio.run(body())
    assert theirs[0] == 1 and "error upgrading connection: " in theirs[1], theirs
    assert ours[0] == 1, ours
    assert last_line(ours[1]) == last_line(theirs[1])
    assert ours[2] < 10  # at once: the garbage stays open for 30 s


def test_spdy_upgrade_follows_a_redirect_as_client_go(
    serve_factory: Callable[..., ServeInstance], targets: Targets, tmp_path: Path
) -> None:
    """302 on the SPDY upgrade: followed (as a GET, as Go's client does), and forwarding works."""
    srv = serve_factory(tls=False)
    seen: list[bytes] = []

    async def redirect_once(
        head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        request_line = head.split(b"\r\n", 1)[0]
        seen.append(request_line)
        if b"redirected" in request_line:
            return False  # pass it on to serve
        target = head.split(b" ", 2)[1]
        writer.write(
            b"HTTP/1.1 302 Found\r\nLocation: " + target + b"?redirected=1\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        await writer.drain()
        writer.close()
        return True

    async def body() -> None:
        async with Mitm(srv.port, redirect_once) as mitm:
            kc = kubeconfig_via(srv, mitm.port, tmp_path / "kc")
            pf = fastpf_client(kc, "--protocol", "spdy", "pod/x", f":{targets.echo}")
            try:
                await asyncio.to_thread(pf.wait_forwarding, 1)
                result = await concurrent_echo(pf.local_port(targets.echo), 5, timeout=20)
                assert result.failures == [] and result.ok == 5
            finally:
                await asyncio.to_thread(pf.stop)

    asyncio.run(asyncio.wait_for(body(), 60))
    assert seen[0].startswith(b"POST ") and seen[1].startswith(b"GET ")
    assert seen[1].endswith(b"?redirected=1 HTTP/1.1")


def test_tls_server_name_that_fails_is_named(
    serve: ServeInstance, kubectl_bin: Callable[[str], str], kubectl_cache_dir: Path
) -> None:
    """--tls-server-name wrong.example: the error names wrong.example (it named 127.0.0.1)."""
    code, err, _ = asyncio.run(
        run_command(
            fastpf_cmd(serve.kubeconfig, "--tls-server-name", "wrong.example", "pod/x", ":80"), 20
        )
    )
    assert code == 1
    assert last_line(err) == (
        "Unable to connect to the server: tls: failed to verify certificate: "
        "x509: certificate is not valid for wrong.example"
    )
    kubectl = kubectl_bin("1.33")  # names the same server name (and lists the certificate's)
    theirs = run_kubectl(
        kubectl,
        serve.kubeconfig,
        kubectl_cache_dir,
        "--tls-server-name",
        "wrong.example",
        "port-forward",
        "pod/x",
        ":80",
    )
    assert "not wrong.example" in theirs.stderr


@pytest.mark.parametrize("token", ["abc\r\nX-Injected: 1", "abc\x01"])
def test_token_with_control_characters_is_refused_locally(
    serve: ServeInstance, token: str, kubectl_bin: Callable[[str], str], kubectl_cache_dir: Path
) -> None:
    """A token HTTP cannot carry: Go's net/http refuses it before sending (we got "server sent
    goaway" or a 401 from the server)."""
    code, err, _ = asyncio.run(
        run_command(fastpf_cmd(serve.kubeconfig, "--token", token, "pod/x", ":80"), 20)
    )
    theirs = run_kubectl(
        kubectl_bin("1.33"),
        serve.kubeconfig,
        kubectl_cache_dir,
        "--token",
        token,
        "port-forward",
        "pod/x",
        ":80",
    )
    assert code == 1
    assert (
        last_line(err)
        == last_line(theirs.stderr)
        == (
            'Unable to connect to the server: net/http: invalid header field value for "Authorization"'
        )
    )


def test_serve_refuses_a_complete_request_head_over_64_kib(
    serve_factory: Callable[..., ServeInstance],
) -> None:
    """h11 caps only incomplete heads: a 100 KiB head arriving whole was accepted."""
    srv = serve_factory(tls=False)

    async def body() -> bytes:
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        big = b"X-Big: " + b"a" * (100 << 10) + b"\r\n"
        writer.write(b"GET /api HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)  # serve closes after its answer
        writer.close()
        return answer

    answer = asyncio.run(body())
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b"RequestHeaderFieldsTooLarge" in answer


# ---------------------------------------------------------------------------------------------
# unit level: the acceptor, serve's deadlines and budget, the client's answer deadline


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


class _OutOfDescriptors(socket.socket):
    """A listening socket whose first `failures` accept() calls fail with EMFILE."""

    failures = 5

    def accept(self) -> tuple[socket.socket, Any]:
        if self.failures > 0:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return super().accept()


def test_acceptor_waits_out_emfile_and_reports_once() -> None:
    async def body() -> tuple[list[bytes], list[tuple[str, int]]]:
        sock = _OutOfDescriptors(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        reports: list[tuple[str, int]] = []
        acceptor = Acceptor(
            sock, _Echo, report=lambda exc, n: reports.append((exhausted_text(exc), n))
        )
        port = sock.getsockname()[1]

        async def echo(i: int) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"%d" % i)
            got = await asyncio.wait_for(reader.readexactly(1), 10)
            writer.close()
            return got

        try:
            got = await asyncio.gather(*(echo(i) for i in range(3)))
        finally:
            acceptor.close()
        assert acceptor.exhausted == 5 and acceptor.accepted == 3
        return got, reports

    got, reports = asyncio.run(asyncio.wait_for(body(), 30))
    assert sorted(got) == [b"0", b"1", b"2"]  # none dropped
    assert reports == [("accept4: too many open files", 0)]  # one line for five failures


def test_acceptor_without_add_reader_uses_the_loops_accept(monkeypatch: pytest.MonkeyPatch) -> None:
    async def body() -> bytes:
        loop = asyncio.get_running_loop()

        def no_reader(*_args: Any) -> None:
            raise NotImplementedError

        monkeypatch.setattr(loop, "add_reader", no_reader)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        acceptor = Acceptor(sock, _Echo)
        reader, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        writer.write(b"x")
        got = await asyncio.wait_for(reader.readexactly(1), 10)
        writer.close()
        acceptor.close()
        return got

    assert asyncio.run(asyncio.wait_for(body(), 30)) == b"x"


def _in_process_server() -> Server:
    from fastpf.serve.api import Api
    from fastpf.serve.cluster import Cluster
    from fastpf.types import ServerOptions

    return Server(Api(Cluster(), "tok", allow_anonymous=True), None, ServerOptions(), quiet=True)


def test_serve_cuts_a_connection_without_a_request_head_at_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_module, "HEAD_TIMEOUT", 0.3)

    async def body() -> tuple[bytes, bytes]:
        server = _in_process_server()
        (host, port), *_ = await server.start("127.0.0.1", 0)
        try:
            slow_r, slow_w = await asyncio.open_connection(host, port)
            slow_w.write(b"GET /api HTTP/1.1\r\nHost: x\r\n")  # and never the end of the head
            ok_r, ok_w = await asyncio.open_connection(host, port)
            ok_w.write(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await asyncio.wait_for(ok_r.readuntil(b"\r\n\r\n"), 5)
            cut = await asyncio.wait_for(slow_r.read(), 5)  # EOF (or reset) well within 5 s
            slow_w.close()
            ok_w.close()
            return answer, cut
        finally:
            await server.shutdown()

    answer, cut = asyncio.run(asyncio.wait_for(body(), 30))
    assert answer.startswith(b"HTTP/1.1 200 ") and cut == b""


def test_serve_sheds_the_oldest_waiting_connections_beyond_its_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_module, "nofile_limit", lambda: 256)  # budget: 64 waiting

    async def body() -> tuple[int, int, int]:
        server = _in_process_server()
        (host, port), *_ = await server.start("127.0.0.1", 0)
        try:
            conns = [await asyncio.open_connection(host, port) for _ in range(100)]
            await wait_until(lambda: server.shed_count >= 36, 5)
            closed = 0
            for reader, _w in conns[:36]:
                with contextlib.suppress(ConnectionError):
                    closed += await asyncio.wait_for(reader.read(), 5) == b""
            waiting = len(server.waiting)
            for _r, w in conns:
                w.close()
            return closed, waiting, server.shed_count
        finally:
            await server.shutdown()

    closed, waiting, shed = asyncio.run(asyncio.wait_for(body(), 30))
    assert closed == 36 and shed == 36 and waiting <= 64


def test_client_says_the_server_never_answered_not_dial_timeout() -> None:
    async def body() -> str:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            asyncio.Protocol, "127.0.0.1", 0
        )  # accepts, never answers
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(HandshakeError) as info:
                await upgrade.connect(ApiDialer("127.0.0.1", port), PATH, "spdy", [], timeout=0.3)
            return f"{info.value}|{port}"
        finally:
            server.close()

    text, port = asyncio.run(asyncio.wait_for(body(), 30)).split("|")
    assert text == (
        f'error upgrading connection: error sending request: Post "http://127.0.0.1:{port}'
        f'{PATH}": net/http: timeout awaiting response headers'
    )


def test_load_script_500_connections(tmp_path: Path) -> None:
    """bench/load.py (10,000 connections by hand) at 500: every connection's echo checks out."""
    out = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).parent.parent / "bench" / "load.py"),
            "--conns",
            "500",
            "--rounds",
            "2",
            "--settle",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(),
    )
    result = json.loads(out.stdout[out.stdout.index("{") :])
    assert out.returncode == 0, out.stdout + out.stderr
    assert result["ok"] == 500 and result["lost"] == 0 and result["peak_open"] == 500


def test_ping_flood_injected_into_a_live_session_pauses_then_recovers(
    serve_factory: Callable[..., ServeInstance], targets: Targets, tmp_path: Path
) -> None:
    """A man in the middle floods a live client session with PINGs and stops passing the
    client's bytes on: the client stops reading (bounded memory) instead of queueing every
    echo, and once its bytes flow again the session and its open connection carry on."""
    srv = serve_factory(tls=False)
    chunk = _pings(2, 1 << 14)

    async def body() -> tuple[int, int]:
        async with Mitm(srv.port) as mitm:
            kc = kubeconfig_via(srv, mitm.port, tmp_path / "kc")
            pf = fastpf_client(kc, "--protocol", "spdy", "pod/x", f":{targets.echo}")
            try:
                await asyncio.to_thread(pf.wait_forwarding, 1)
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", pf.local_port(targets.echo)
                )
                writer.write(b"hello")
                assert await asyncio.wait_for(reader.readexactly(5), 10) == b"hello"
                leg = await mitm.upgraded_leg()
                mitm.reading_client.clear()  # the "server" no longer reads
                await asyncio.sleep(0.2)
                before = rss_kib(pf.proc.pid)
                sent = await _flood(leg.client_writer, chunk, 64 << 20)
                grown = rss_kib(pf.proc.pid) - before
                mitm.reading_client.set()
                writer.write(b"again")
                assert await asyncio.wait_for(reader.readexactly(5), 30) == b"again"
                writer.close()
                assert pf.proc.poll() is None
            finally:
                await asyncio.to_thread(pf.stop)
        return sent, grown

    sent, grown = asyncio.run(asyncio.wait_for(body(), 120))
    assert sent < 40 << 20, "the client read the whole flood"
    assert grown < 16 << 10, f"client grew {grown} KiB"
