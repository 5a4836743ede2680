"""fastpf.transport.tls: the client's TLS over OpenSSL's socket BIO, with the compiled record
loops (fastpf._tls). The peer is the event loop's own TLS server (memory BIO, an independent
implementation) or Python's blocking ssl socket in a thread. Every byte is checked, in order;
every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from fastpf import _tls
from fastpf.loop import new_event_loop
from fastpf.serve import certs
from fastpf.transport import tls

pytestmark = pytest.mark.skipif(
    not tls.available(ssl.create_default_context()), reason="socket-BIO TLS needs CPython"
)

WAIT = 20.0  # seconds: every wait below is bounded by this
MIB = 1 << 20


def _pattern(n: int, seed: int = 7) -> bytes:
    block = hashlib.sha256(seed.to_bytes(4, "big")).digest() * 2048  # 64 KiB
    return (block * (n // len(block) + 1))[:n]


def _contexts() -> tuple[ssl.SSLContext, ssl.SSLContext, ssl.SSLContext]:
    material = certs.generate(["localhost", "127.0.0.1"])
    server = certs.server_context(material)
    client = ssl.create_default_context(cadata=material.ca_pem.decode())
    stranger = ssl.create_default_context(cadata=certs.generate(["127.0.0.1"]).ca_pem.decode())
    return server, client, stranger


def _run(main: Callable[[], Awaitable[Any]]) -> Any:
    loop = new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(main(), WAIT * 2))
    finally:
        loop.close()


class Collector(asyncio.BufferedProtocol):
    """Client side: hashes what arrives, notes the order of events, can pause itself."""

    def __init__(self, buffer_size: int = 256 * 1024) -> None:
        self.buf = bytearray(buffer_size)
        self.hash = hashlib.sha256()
        self.count = 0
        self.events: list[str] = []
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self.paused_writing = 0
        self.writable = asyncio.Event()
        self.writable.set()
        self.pause_after: int | None = None
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buf)

    def buffer_updated(self, nbytes: int) -> None:
        self.hash.update(self.buf[:nbytes])
        self.count += nbytes
        if self.pause_after is not None and self.count >= self.pause_after:
            self.pause_after = None
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.events.append("eof")
        return False

    def pause_writing(self) -> None:
        self.paused_writing += 1
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)


class Peer(asyncio.Protocol):
    """Server side (the loop's TLS): sends `reply` on connect, then closes or stays; hashes
    what it receives; may hold off reading to make the client's queue fill."""

    def __init__(self, reply: bytes = b"", close_after: bool = True) -> None:
        self.reply = reply
        self.close_after = close_after
        self.hash = hashlib.sha256()
        self.count = 0
        self.eof = asyncio.get_running_loop().create_future()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self.reply:
            transport.write(self.reply)
            if self.close_after:
                transport.close()

    def data_received(self, data: bytes) -> None:
        self.hash.update(data)
        self.count += len(data)

    def eof_received(self) -> bool:
        if not self.eof.done():
            self.eof.set_result(self.count)
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.eof.done():
            self.eof.set_result(self.count)


async def _serve(ctx: ssl.SSLContext, make: Callable[[], Peer]) -> tuple[asyncio.Server, int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(make, "127.0.0.1", 0, ssl=ctx)
    return server, server.sockets[0].getsockname()[1]


@contextlib.contextmanager
def _blocking_tls_server(
    ctx: ssl.SSLContext, after_handshake: Callable[[ssl.SSLSocket], None]
) -> Iterator[int]:
    """Python's blocking ssl server for one connection, in a thread: it shakes hands and calls
    `after_handshake(tls_conn)`, then closes (without close_notify). Yields the port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(WAIT)

    def serve_once() -> None:
        conn, _ = listener.accept()
        conn.settimeout(WAIT)
        with ctx.wrap_socket(conn, server_side=True) as tls_conn:
            after_handshake(tls_conn)

    thread = threading.Thread(target=serve_once, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        thread.join(WAIT)
        listener.close()


async def _serve_recording(ctx: ssl.SSLContext) -> tuple[asyncio.Server, int, list[Peer]]:
    """A server whose peers (one per accepted connection, in order) the test can reach."""
    peers: list[Peer] = []

    def make() -> Peer:
        peers.append(Peer())
        return peers[-1]

    server, port = await _serve(ctx, make)
    return server, port, peers


async def _connect(ctx: ssl.SSLContext, port: int, proto: asyncio.BaseProtocol) -> Any:
    sock = await tls.connect_tcp("127.0.0.1", port)
    return await tls.open_tls(sock, ctx, "127.0.0.1", proto)


def test_download_to_eof_every_byte_in_order() -> None:
    server_ctx, client_ctx, _ = _contexts()
    data = _pattern(32 * MIB)

    async def main() -> None:
        server, port = await _serve(server_ctx, lambda: Peer(data))
        async with server:
            proto = Collector()
            t0 = time.monotonic()
            transport = await _connect(client_ctx, port, proto)
            assert transport.get_extra_info("ssl_object").version() in ("TLSv1.3", "TLSv1.2")
            assert transport.get_extra_info("cipher")[0]  # asked of the SSL socket on demand
            assert transport.get_extra_info("peercert")["subject"]
            assert transport.get_extra_info("no such thing", 7) == 7
            exc = await asyncio.wait_for(proto.lost, WAIT)
            elapsed = time.monotonic() - t0
            assert exc is None
            assert proto.count == len(data)
            assert proto.hash.digest() == hashlib.sha256(data).digest()
            assert proto.events == ["eof", "lost"]
            # A floor 100x below the expected figure (several hundred MB/s): not a stall.
            assert len(data) / elapsed > 3e6

    _run(main)


def test_upload_throttled_by_a_slow_reader_arrives_whole() -> None:
    server_ctx, client_ctx, _ = _contexts()
    data = _pattern(48 * MIB, seed=3)

    async def main() -> None:
        server, port, peers = await _serve_recording(server_ctx)
        async with server:
            proto = Collector()
            transport = await _connect(client_ctx, port, proto)
            await asyncio.sleep(0.05)
            peer = peers[0]
            peer.transport.pause_reading()  # a reader that stops: the client's queue fills
            view = memoryview(data)
            largest = 0
            chunk = 256 * 1024
            peer_paused = True
            for offset in range(0, len(data), chunk):
                if not proto.writable.is_set() and peer_paused:
                    peer_paused = False  # the client is throttled: let the peer read again
                    peer.transport.resume_reading()
                await asyncio.wait_for(proto.writable.wait(), WAIT)
                transport.write(view[offset : offset + chunk])
                largest = max(largest, transport.get_write_buffer_size())
            assert proto.paused_writing >= 1 and not peer_paused
            # bounded: at most the high-water mark plus the write that crossed it
            assert largest <= transport.get_write_buffer_limits()[1] + chunk
            transport.close()
            got = await asyncio.wait_for(peer.eof, WAIT)
            assert got == len(data)
            assert peer.hash.digest() == hashlib.sha256(data).digest()
            assert await asyncio.wait_for(proto.lost, WAIT) is None

    _run(main)


@pytest.mark.parametrize(
    ("size", "buffer_size"), [(4 * MIB, 16 * 1024), (60 * 1024, 4 * 1024)], ids=["4MiB", "60KiB"]
)
def test_resume_reading_delivers_records_already_read_ahead(size: int, buffer_size: int) -> None:
    """The peer sends everything and then waits: after pause_reading the rest sits in the
    kernel and in OpenSSL's read-ahead buffer, where no readiness event will announce it
    (60 KiB: all of it is there, the kernel has nothing left)."""
    server_ctx, client_ctx, _ = _contexts()
    data = _pattern(size, seed=5)

    async def main() -> None:
        server, port = await _serve(server_ctx, lambda: Peer(data, close_after=False))
        async with server:
            proto = Collector(buffer_size=buffer_size)
            proto.pause_after = 1
            transport = await _connect(client_ctx, port, proto)
            for _ in range(200):  # bounded: the first buffer arrives
                if proto.count:
                    break
                await asyncio.sleep(0.01)
            held = proto.count
            assert 0 < held < len(data)
            await asyncio.sleep(0.3)
            assert proto.count == held  # paused: nothing delivered
            assert not transport.is_reading()
            transport.resume_reading()
            deadline = time.monotonic() + WAIT
            while proto.count < len(data) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert proto.count == len(data)
            assert proto.hash.digest() == hashlib.sha256(data).digest()
            transport.close()
            assert await asyncio.wait_for(proto.lost, WAIT) is None

    _run(main)


def test_a_new_protocol_gets_the_bytes_the_first_left_unread() -> None:
    """The upgrade's handshake protocol stops reading at the 101 and the session takes over
    (set_protocol, resume_reading): nothing is lost or reordered at the switch."""
    server_ctx, client_ctx, _ = _contexts()
    data = _pattern(2 * MIB, seed=9)

    async def main() -> None:
        server, port = await _serve(server_ctx, lambda: Peer(data, close_after=False))
        async with server:
            first = Collector(buffer_size=1000)
            first.pause_after = 1
            transport = await _connect(client_ctx, port, first)
            for _ in range(200):
                if first.count:
                    break
                await asyncio.sleep(0.01)
            second = Collector()
            second.transport = transport
            transport.set_protocol(second)
            assert transport.get_protocol() is second
            transport.resume_reading()
            deadline = time.monotonic() + WAIT
            while first.count + second.count < len(data) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert first.count == 1000
            joined = hashlib.sha256(data[:1000]).digest()
            assert first.hash.digest() == joined
            assert second.count == len(data) - 1000
            assert second.hash.digest() == hashlib.sha256(data[1000:]).digest()
            transport.abort()
            assert await asyncio.wait_for(second.lost, WAIT) is None

    _run(main)


def test_close_writes_the_queue_first_and_abort_does_not() -> None:
    server_ctx, client_ctx, _ = _contexts()
    data = _pattern(8 * MIB, seed=11)

    async def main() -> None:
        server, port, peers = await _serve_recording(server_ctx)
        async with server:
            # close(): every queued byte, then close_notify (the peer sees a clean EOF)
            proto = Collector()
            transport = await _connect(client_ctx, port, proto)
            await asyncio.sleep(0.05)
            peers[0].transport.pause_reading()
            transport.write(data)
            assert transport.get_write_buffer_size() > 0
            transport.close()
            assert transport.is_closing()
            transport.write(b"after close")  # ignored, as the loops' transports do
            peers[0].transport.resume_reading()
            assert await asyncio.wait_for(peers[0].eof, WAIT) == len(data)
            assert peers[0].hash.digest() == hashlib.sha256(data).digest()
            assert await asyncio.wait_for(proto.lost, WAIT) is None
            # abort(): the queue is dropped, the socket closed at once
            proto2 = Collector()
            transport2 = await _connect(client_ctx, port, proto2)
            await asyncio.sleep(0.05)
            peers[1].transport.pause_reading()
            transport2.write(data)
            assert transport2.get_write_buffer_size() > 0
            transport2.abort()
            assert transport2.get_write_buffer_size() == 0
            assert await asyncio.wait_for(proto2.lost, WAIT) is None
            assert transport2.get_extra_info("socket").fileno() == -1
            peers[1].transport.resume_reading()
            assert await asyncio.wait_for(peers[1].eof, WAIT) < len(data)

    _run(main)


@pytest.mark.parametrize("close_notify", [True, False], ids=["close_notify", "tcp_close"])
def test_peer_end_is_eof_with_or_without_close_notify(close_notify: bool) -> None:
    """Python's blocking ssl server: unwrap() sends close_notify; close() alone ends TCP
    without it (as some servers do). Both are an EOF after every byte."""
    server_ctx, client_ctx, _ = _contexts()
    data = _pattern(3 * MIB, seed=13)

    def send_and_end(tls_conn: ssl.SSLSocket) -> None:
        tls_conn.sendall(data)
        if close_notify:
            with contextlib.suppress(ssl.SSLError, OSError):
                tls_conn.unwrap().close()

    async def main(port: int) -> None:
        proto = Collector()
        await _connect(client_ctx, port, proto)
        assert await asyncio.wait_for(proto.lost, WAIT) is None
        assert proto.count == len(data)
        assert proto.hash.digest() == hashlib.sha256(data).digest()
        assert proto.events == ["eof", "lost"]

    with _blocking_tls_server(server_ctx, send_and_end) as port:
        _run(lambda: main(port))


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_handshake_failures_raise_and_close_the_socket() -> None:
    server_ctx, client_ctx, stranger_ctx = _contexts()

    async def main() -> None:
        server, port = await _serve(server_ctx, Peer)
        async with server:
            before = _open_fds()
            for _ in range(3):
                with pytest.raises(ssl.SSLCertVerificationError):
                    await _connect(stranger_ctx, port, Collector())
            sock = await tls.connect_tcp("127.0.0.1", port)
            with pytest.raises(ssl.SSLCertVerificationError):  # the name is checked too
                await tls.open_tls(sock, client_ctx, "api.test", Collector())
            await asyncio.sleep(0.05)
            assert _open_fds() == before
            # refused: the loops' wording (the client maps it to kubectl's text)
            free = socket.socket()
            free.bind(("127.0.0.1", 0))
            closed_port = free.getsockname()[1]
            free.close()
            with pytest.raises(ConnectionRefusedError) as info:
                await tls.connect_tcp("127.0.0.1", closed_port)
            assert info.value.strerror == os.strerror(info.value.errno or 0)
            assert _open_fds() == before  # the refused socket is closed

    _run(main)


def test_a_handshake_cut_by_a_timeout_leaves_nothing_behind() -> None:
    """A server that accepts and never answers: the caller's timeout cancels the handshake;
    the reader is removed and the socket closed."""
    _, client_ctx, _ = _contexts()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    async def main() -> None:
        before = _open_fds()
        sock = await tls.connect_tcp("127.0.0.1", port)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(tls.open_tls(sock, client_ctx, "127.0.0.1", Collector()), 0.2)
        await asyncio.sleep(0.05)
        assert _open_fds() == before

    try:
        _run(main)
    finally:
        listener.close()


def test_compiled_loops_check_their_arguments() -> None:
    assert _tls.bound()
    with pytest.raises(ValueError):
        _tls.read_into(0, bytearray(10))
    with pytest.raises(ValueError):
        _tls.encrypt(0, b"x")
    with pytest.raises(ValueError):
        _tls.pending(0)
    with pytest.raises(ValueError):
        _tls.flush(0, 1)
    with pytest.raises(OSError):
        _tls.load("/nonexistent/libssl.so")  # not a loaded object: nothing is opened
    with pytest.raises(OSError):
        _tls.load(os.__file__)  # not a shared object at all
    _tls.load()  # idempotent once bound
    with pytest.raises((TypeError, ValueError, BufferError)):
        _tls.read_into(1, b"read-only")  # type: ignore[arg-type]
    assert _tls.read_into(1, bytearray()) == (0, 0)  # nothing asked: OpenSSL is not called
    assert _tls.encrypt(1, b"") == 0


def test_the_ssl_pointer_is_trusted_only_when_openssl_agrees() -> None:
    """ssl_of reads CPython's _ssl object layout; it answers 0 unless the SSL object there has
    this descriptor and this context's SSL_CTX, and ctx_of answers 0 for anything that is not
    an SSLContext."""
    _, client_ctx, stranger_ctx = _contexts()
    a, b = socket.socketpair()
    try:
        sslsock = client_ctx.wrap_socket(a, do_handshake_on_connect=False, server_hostname="x")
        inner = sslsock._sslobj  # type: ignore[attr-defined]
        fd = sslsock.fileno()
        assert _tls.ctx_of(client_ctx) != 0
        assert _tls.ctx_of(client_ctx) != _tls.ctx_of(stranger_ctx)
        assert _tls.ssl_of(inner, fd, client_ctx) != 0
        assert _tls.ssl_of(inner, b.fileno(), client_ctx) == 0  # another descriptor
        assert _tls.ssl_of(inner, fd, stranger_ctx) == 0  # another SSL_CTX
        assert _tls.ssl_of(sslsock, fd, client_ctx) == 0  # the Python wrapper, not _ssl's
        assert _tls.ssl_of(bytearray(64), fd, client_ctx) == 0
        assert _tls.ctx_of(bytearray(64)) == 0  # type: ignore[arg-type]
        assert _tls.ctx_of(object()) == 0  # type: ignore[arg-type]
        sslsock.close()
    finally:
        a.close()
        b.close()


def test_close_with_replies_unread_loses_none_of_our_bytes() -> None:
    """The peer's reply (and its session tickets) may still be unread when we close: closing
    a socket with unread bytes would send RST, and an RST makes the peer's kernel drop the
    bytes its application has not read yet. close() half-closes and reads on instead."""
    server_ctx, client_ctx, _ = _contexts()
    data = _pattern(8 * MIB, seed=23)

    async def main() -> None:
        replies: list[Peer] = []

        def make() -> Peer:
            replies.append(Peer(reply=_pattern(MIB, seed=29), close_after=False))
            return replies[-1]

        server, port = await _serve(server_ctx, make)
        async with server:
            proto = Collector()
            proto.pause_after = 1  # our reader stops at once: the reply stays unread
            transport = await _connect(client_ctx, port, proto)
            transport.write(data)
            transport.close()
            assert await asyncio.wait_for(replies[0].eof, WAIT) == len(data)
            assert replies[0].hash.digest() == hashlib.sha256(data).digest()
            assert await asyncio.wait_for(proto.lost, WAIT) is None

    _run(main)


def test_lingering_done_waits_for_its_own_loops_sockets_only() -> None:
    """lingering_done() holds a stopping loop until its closed sockets saw the peer's FIN; a
    socket left lingering by a loop that ended without waiting is closed, and never holds
    another loop (a per-process count once made every later wait run to its timeout)."""
    server_ctx, client_ctx, _ = _contexts()
    release = threading.Event()

    def hold(conn: ssl.SSLSocket) -> None:  # never answers our FIN until released
        release.wait(WAIT)

    with _blocking_tls_server(server_ctx, hold) as port:

        async def close_without_waiting() -> int:
            proto = Collector()
            transport = await _connect(client_ctx, port, proto)
            transport.close()
            await asyncio.wait_for(proto.lost, WAIT)
            sock: socket.socket = transport.get_extra_info("socket")
            return sock.fileno()

        left_fd = _run(close_without_waiting)  # the loop ends with the socket lingering

        async def another_loop() -> float:
            start = time.monotonic()
            await tls.lingering_done(WAIT)
            return time.monotonic() - start

        assert _run(another_loop) < 1.0
        release.set()
    assert left_fd not in tls._lingering


class TailOnResume(Collector):
    """Writes `tail` and closes from inside resume_writing, as a sender with a backlog does."""

    def __init__(self, tail: bytes) -> None:
        super().__init__()
        self.tail = tail

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.tail:
            tail, self.tail = self.tail, b""
            self.transport.write(tail)  # more than the socket takes: queued again
            self.transport.close()


def test_a_tail_written_and_closed_in_resume_writing_arrives_whole() -> None:
    server_ctx, client_ctx, _ = _contexts()
    head, tail = _pattern(32 * MIB, seed=31), _pattern(16 * MIB, seed=37)

    async def main() -> None:
        server, port, peers = await _serve_recording(server_ctx)
        async with server:
            proto = TailOnResume(tail)
            transport = await _connect(client_ctx, port, proto)
            await asyncio.sleep(0.05)  # the server's side of the handshake ends too
            peers[0].transport.pause_reading()  # the socket fills: the queue stays high
            transport.write(head)  # over the high-water mark: pause_writing, then resume
            assert proto.paused_writing == 1
            peers[0].transport.resume_reading()
            assert await asyncio.wait_for(peers[0].eof, WAIT) == len(head) + len(tail)
            assert peers[0].hash.digest() == hashlib.sha256(head + tail).digest()

    _run(main)


class FailsToStart(Collector):
    def connection_made(self, transport: Any) -> None:
        raise RuntimeError("protocol refused the connection")


def test_a_protocol_failing_in_connection_made_leaves_nothing_registered() -> None:
    server_ctx, client_ctx, _ = _contexts()

    async def main() -> None:
        server, port = await _serve(server_ctx, Peer)
        async with server:
            await asyncio.wait_for(_connect(client_ctx, port, Collector()), WAIT)  # warm
            before = _open_fds()
            for _ in range(3):
                with pytest.raises(RuntimeError, match="refused the connection"):
                    await _connect(client_ctx, port, FailsToStart())
            await asyncio.sleep(0.05)
            assert _open_fds() <= before  # no socket kept alive by a reader

    _run(main)


def test_small_writes_keep_a_small_ciphertext_buffer() -> None:
    """A connection that writes only small messages (a ws-channel client's upgrade request and
    frames, one TLS connection per local connection) keeps a page of buffer, not 64 KiB; the
    buffer grows for bulk writes."""
    server_ctx, client_ctx, _ = _contexts()

    async def main() -> None:
        server, port, peers = await _serve_recording(server_ctx)
        async with server:
            transport = await _connect(client_ctx, port, Collector())
            message = b"GET /api/v1/namespaces/default/pods/p/portforward?ports=5000 HTTP/1.1\r\n"
            for _ in range(20):
                transport.write(message)
            assert 0 < transport.write_buffer_capacity() <= 4096
            transport.write(_pattern(MIB))
            assert transport.write_buffer_capacity() >= 64 * 1024 or (
                transport.get_write_buffer_size() == 0
            )
            transport.close()
            assert await asyncio.wait_for(peers[0].eof, WAIT) == 20 * len(message) + MIB

    _run(main)


def test_the_ciphertext_buffer_is_the_write_queue_and_is_given_back() -> None:
    """Records wait in the write BIO while the socket is full (flow control counts them) and
    the buffer is freed once sent; after close the transport reports an empty queue."""
    server_ctx, client_ctx, _ = _contexts()
    data = _pattern(24 * MIB, seed=17)

    async def main() -> None:
        server, port, peers = await _serve_recording(server_ctx)
        async with server:
            proto = Collector()
            transport = await _connect(client_ctx, port, proto)
            await asyncio.sleep(0.05)
            peers[0].transport.pause_reading()
            transport.set_write_buffer_limits(high=1 * MIB)
            transport.write(data)  # one write larger than every buffer on the way
            waiting = transport.get_write_buffer_size()
            assert len(data) // 2 < waiting <= len(data) + len(data) // 50  # + record overhead
            assert proto.paused_writing == 1
            peers[0].transport.resume_reading()
            await asyncio.wait_for(proto.writable.wait(), WAIT)
            assert transport.get_write_buffer_size() <= 256 * 1024  # the low-water mark
            deadline = time.monotonic() + WAIT
            while transport.get_write_buffer_size() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert transport.write_buffer_capacity() == 0  # all sent: the buffer is freed
            transport.close()
            assert await asyncio.wait_for(peers[0].eof, WAIT) == len(data)
            assert peers[0].hash.digest() == hashlib.sha256(data).digest()
            await asyncio.wait_for(proto.lost, WAIT)
            assert transport.get_write_buffer_size() == 0

    _run(main)


class PlainCollector(asyncio.Protocol):
    """A plain Protocol (as the upgrade's handshake protocol is): data_received copies."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.count = 0
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.hash.update(data)
        self.count += len(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


def _rss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads VmRSS from /proc")
def test_plain_protocols_get_every_byte_without_a_buffer_per_connection() -> None:
    """A ws-channel client holds one TLS connection per local connection, each read first by
    the upgrade's plain Protocol: their reads share one scratch buffer per thread."""
    server_ctx, client_ctx, _ = _contexts()
    data = _pattern(32 * 1024, seed=19)
    conns = 150

    async def main() -> None:
        server, port = await _serve(server_ctx, lambda: Peer(data, close_after=False))
        async with server:
            protos = [PlainCollector() for _ in range(conns)]
            transports = []
            await _connect(client_ctx, port, PlainCollector())  # warm: first allocations
            before = _rss_kib()
            for proto in protos:
                transports.append(await _connect(client_ctx, port, proto))
            deadline = time.monotonic() + WAIT
            while any(p.count < len(data) for p in protos) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            per_conn_kib = (_rss_kib() - before) / conns
            digest = hashlib.sha256(data).digest()
            assert all(p.count == len(data) and p.hash.digest() == digest for p in protos)
            # Both ends live in this process (~100 KiB per connection together); a 256 KiB
            # read buffer per connection would be well above this bound.
            assert per_conn_kib < 220, per_conn_kib
            for t in transports:
                t.abort()
            await asyncio.wait_for(asyncio.gather(*(p.lost for p in protos)), WAIT)

    _run(main)


@pytest.mark.parametrize(
    "garbage", [b"\x17\x03\x03\x00\x20" + bytes(range(32)), b"GET / HTTP/1.1\r\n\r\n"]
)
def test_a_corrupt_record_ends_the_connection_with_the_tls_error(garbage: bytes) -> None:
    """After the handshake the peer writes bytes that are no valid record (a forged
    application-data record, plain text): every byte before them arrives, then the connection
    ends with ssl.SSLError; nothing hangs or is delivered from the garbage."""
    server_ctx, client_ctx, _ = _contexts()
    data = _pattern(100_000, seed=23)

    def send_then_garbage(tls_conn: ssl.SSLSocket) -> None:
        tls_conn.sendall(data)
        with socket.socket(fileno=os.dup(tls_conn.fileno())) as raw:
            raw.sendall(garbage)
            time.sleep(0.5)  # the client reads it before this end closes

    async def main(port: int) -> None:
        proto = Collector()
        await _connect(client_ctx, port, proto)
        exc = await asyncio.wait_for(proto.lost, WAIT)
        assert isinstance(exc, ssl.SSLError), repr(exc)
        assert proto.count == len(data)
        assert proto.hash.digest() == hashlib.sha256(data).digest()

    with _blocking_tls_server(server_ctx, send_then_garbage) as port:
        _run(lambda: main(port))
