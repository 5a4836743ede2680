"""fastpf._tls's own record opening: once a TLS 1.3 AES-GCM connection has read a bulk of data,
the client receives records into its own buffer and opens them straight into the protocol's
buffer (no copy out of OpenSSL's record buffer), at the sequence number OpenSSL's reading
reached. The server is OpenSSL on memory BIOs in a thread, so each test decides how its
ciphertext is cut, when keys change and what is tampered with. Every byte is compared, in
order; every wait is bounded."""

from __future__ import annotations

import _ssl
import asyncio
import ctypes
import hashlib
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastpf import _tls
from fastpf.loop import new_event_loop
from fastpf.serve import certs
from fastpf.transport import tls
from tests.support.tls_records import client_context as _client_ctx
from tests.support.tls_records import pattern
from tests.support.tls_records import server_context as _server_ctx

pytestmark = pytest.mark.skipif(
    not tls.available(ssl.create_default_context()) or not _tls.opening_bound(),
    reason="own record opening needs CPython's _ssl on OpenSSL 1.1.1+",
)

WAIT = 20.0  # seconds: every wait below is bounded by this
KIB = 1024
MIB = 1 << 20
WARM_UP = 512 * KIB  # read through OpenSSL before the takeover (fastpf._tls: 256 KiB)


@pytest.fixture(scope="module")
def material() -> certs.TlsMaterial:
    return certs.generate(["127.0.0.1"])


class Peer:
    """The server's side of one connection: OpenSSL on memory BIOs over a blocking socket."""

    def __init__(self, ctx: ssl.SSLContext, raw: socket.socket) -> None:
        self.ctx = ctx
        self.raw = raw
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=True)

    def _pull(self) -> None:
        data = self.raw.recv(256 * KIB)
        if not data:
            raise ConnectionError("the client closed during the handshake")
        self.incoming.write(data)

    def handshake(self) -> None:
        for _ in range(100):
            try:
                self.obj.do_handshake()
                self.raw.sendall(self.outgoing.read())
                return
            except ssl.SSLWantReadError:
                self.raw.sendall(self.outgoing.read())
                self._pull()
        raise AssertionError("no handshake")

    def records(self, data: bytes) -> bytes:
        """`data` sealed into records (not sent)."""
        self.obj.write(data)
        return self.outgoing.read()

    def send(self, data: bytes) -> None:
        self.raw.sendall(self.records(data))

    def key_update(self, requested: bool) -> None:
        ssl_ptr = _tls.ssl_of(self.obj._sslobj, -1, self.ctx)  # type: ignore[attr-defined]
        _tls.request_key_update(ssl_ptr, requested)

    def read_to_end(self) -> str:
        """Read until the client's close_notify ("close_notify") or a bare FIN ("fin")."""
        for _ in range(100_000):
            try:
                if not self.obj.read(64 * KIB):  # what CPython's read makes of close_notify
                    return "close_notify"
            except ssl.SSLZeroReturnError:
                return "close_notify"
            except ssl.SSLWantReadError:
                data = self.raw.recv(256 * KIB)
                if not data:
                    return "fin"
                self.incoming.write(data)
        raise AssertionError("the client did not end")

    def read(self, n: int) -> bytes:
        """n bytes of the client's data."""
        out = b""
        for _ in range(100_000):
            if len(out) >= n:
                return out
            try:
                out += self.obj.read(n - len(out))
            except ssl.SSLWantReadError:
                self._pull()
        raise AssertionError("the client's data did not come")


class Client(asyncio.BufferedProtocol):
    """Hashes what arrives; `warm` is set (thread-safely) once WARM_UP bytes are in. `opening`
    is the transport's probe (taken over, records opened, KeyUpdates followed) as of the last
    delivery or the end of the stream."""

    def __init__(self, buffer_size: int) -> None:
        self.transport: Any = None
        self.opening: tuple[bool, int, int] = (False, 0, 0)
        self.buf = bytearray(buffer_size)
        self.hash = hashlib.sha256()
        self.count = 0
        self.warm = threading.Event()
        self.eof = False
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buf

    def _probe(self) -> None:
        if self.transport._ssl:
            self.opening = _tls.opening(self.transport._ssl)

    def buffer_updated(self, nbytes: int) -> None:
        self.hash.update(memoryview(self.buf)[:nbytes])
        self.count += nbytes
        if self.count >= WARM_UP:
            self.warm.set()
        self._probe()

    def eof_received(self) -> bool:
        self.eof = True
        self._probe()
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


@contextmanager
def _server(
    ctx: ssl.SSLContext, script: Callable[[Peer], None]
) -> Iterator[tuple[int, list[BaseException]]]:
    """One connection: handshake, then `script(peer)`; its error is reported to the test."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(WAIT)
    errors: list[BaseException] = []
    done = threading.Event()

    def serve() -> None:
        try:
            raw, _ = listener.accept()
            raw.settimeout(WAIT)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with raw:
                peer = Peer(ctx, raw)
                peer.handshake()
                script(peer)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], errors
    finally:
        assert done.wait(WAIT), "the server thread did not finish"
        thread.join(WAIT)
        listener.close()


class Outcome:
    def __init__(self, proto: Client) -> None:
        self.hash = proto.hash.hexdigest()
        self.count = proto.count
        self.eof = proto.eof
        self.error = proto.lost.result()
        self.opening = proto.opening


def _download(
    material: certs.TlsMaterial,
    script: Callable[[Peer, Client], None],
    server_ctx: ssl.SSLContext | None = None,
    buffer_size: int = 256 * KIB,
    then: Callable[[Any, Client], Any] | None = None,
) -> Outcome:
    """Connect, let the server run `script(peer, client)` and read until the connection
    ends; `then(transport, client)` runs in the client's loop once it is connected."""
    ctx = server_ctx or _server_ctx(material)
    holder: dict[str, Client] = {}
    ready = threading.Event()

    def run(peer: Peer) -> None:
        assert ready.wait(WAIT)
        script(peer, holder["client"])

    async def main(port: int) -> Outcome:
        sock = await tls.connect_tcp("127.0.0.1", port)
        proto = Client(buffer_size)
        holder["client"] = proto
        transport = await tls.open_tls(sock, _client_ctx(material), "127.0.0.1", proto)
        ready.set()
        if then is not None:
            await then(transport, proto)
        await asyncio.wait_for(asyncio.shield(proto.lost), WAIT)
        await tls.lingering_done(WAIT)
        return Outcome(proto)

    with _server(ctx, run) as (port, errors):
        loop = new_event_loop()
        try:
            outcome = loop.run_until_complete(asyncio.wait_for(main(port), WAIT * 2))
        finally:
            loop.close()
    assert not errors, repr(errors)
    return outcome


def _warm_up(peer: Peer, client: Client) -> None:
    """WARM_UP bytes, then a pause in which the client drains its socket at a record boundary:
    the moment it takes its reads over."""
    peer.send(pattern(WARM_UP, 1))
    assert client.warm.wait(WAIT)
    time.sleep(0.05)


def _close_notify(peer: Peer) -> None:
    with pytest.raises(ssl.SSLWantReadError):
        peer.obj.unwrap()  # writes close_notify, then would wait for the client's
    peer.raw.sendall(peer.outgoing.read())


def _expected(*parts: bytes) -> str:
    return hashlib.sha256(pattern(WARM_UP, 1) + b"".join(parts)).hexdigest()


@pytest.mark.parametrize("suite", [b"TLS_AES_128_GCM_SHA256", b"TLS_AES_256_GCM_SHA384"])
def test_bulk_reads_are_opened_by_us_and_arrive_whole(
    material: certs.TlsMaterial, suite: bytes
) -> None:
    """After the warm-up OpenSSL reads nothing more: every later record is ours to open, at
    the sequence number OpenSSL reached (the session tickets and the warm-up's records: a
    count off by one fails the first tag). The server's close_notify ends the stream."""
    bulk = pattern(6 * MIB + 13, 2)

    def script(peer: Peer, client: Client) -> None:
        _warm_up(peer, client)
        peer.send(bulk)
        _close_notify(peer)

    out = _download(material, script, _server_ctx(material, suite))
    assert out.error is None and out.eof
    assert (out.count, out.hash) == (WARM_UP + len(bulk), _expected(bulk))
    opened, records, updates = out.opening
    assert opened and records >= len(bulk) // 16384 and updates == 0


def test_records_cut_anywhere_reach_a_small_buffer_whole(material: certs.TlsMaterial) -> None:
    """Ciphertext cut at random points (headers and tags split across reads) into a protocol
    buffer smaller than a record (the rest of a record waits for the next call); the server's
    FIN without close_notify (as Go may close) ends the stream after the last byte."""
    bulk = pattern(2 * MIB + 1, 3)
    cuts = random.Random(7)

    def script(peer: Peer, client: Client) -> None:
        _warm_up(peer, client)
        wire = memoryview(peer.records(bulk))
        at = 0
        for piece in range(100_000):
            if at >= len(wire):
                break
            size = cuts.choice((1, 2, 4, 5, 6, 17, 700, 16_405, 16_406, 16_407, 40_000))
            peer.raw.sendall(wire[at : at + size])
            at += size
            if piece % 64 == 0:
                time.sleep(0.001)  # let the client read what came so far
        peer.raw.shutdown(socket.SHUT_WR)

    out = _download(material, script, buffer_size=1000)
    assert out.error is None and out.eof
    assert (out.count, out.hash) == (WARM_UP + len(bulk), _expected(bulk))
    assert out.opening[0] and out.opening[1] >= len(bulk) // 16384


class KeyUpdatesSeen:
    """The server's message callback: the client's KeyUpdates it reads."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.count = 0
        ctx._msg_callback = self  # type: ignore[attr-defined]

    def __call__(
        self, conn: Any, direction: str, version: Any, kind: Any, msg: Any, data: Any
    ) -> None:
        if direction == "read" and msg == ssl._TLSMessageType.KEY_UPDATE:  # type: ignore[attr-defined]
            self.count += 1


@pytest.mark.parametrize("client_seals", [True, False], ids=["we-seal", "openssl-seals"])
@pytest.mark.parametrize("requested", [True, False], ids=["answer-asked", "no-answer"])
def test_the_servers_key_updates_are_followed_and_answered(
    material: certs.TlsMaterial, client_seals: bool, requested: bool
) -> None:
    """Three KeyUpdates after the takeover: each moves our key for the records after it (a
    wrong key fails the next tag). Asked for an answer, the client gives one per request
    before its next data, sealed by us or written by OpenSSL; the server reads the client's
    data after it under the new key."""
    ctx = _server_ctx(material)
    seen = KeyUpdatesSeen(ctx)
    parts = [pattern(MIB + i, 10 + i) for i in range(3)]
    first = pattern(MIB, 20) if client_seals else b""
    last = pattern(MIB + 3, 21) if client_seals else b"after the updates"
    got_last: list[bytes] = []

    def script(peer: Peer, client: Client) -> None:
        assert peer.read(len(first)) == first
        _warm_up(peer, client)
        for part in parts:
            peer.key_update(requested)
            peer.send(part)
        got_last.append(peer.read(len(last)))
        _close_notify(peer)

    async def then(transport: Any, proto: Client) -> None:
        transport.write(first)
        total = WARM_UP + sum(map(len, parts))
        for _ in range(int(WAIT / 0.002)):
            if proto.count >= total or proto.lost.done():
                break
            await asyncio.sleep(0.002)
        transport.write(last)

    out = _download(material, script, ctx, then=then)
    assert out.error is None and out.eof
    assert (out.count, out.hash) == (WARM_UP + sum(map(len, parts)), _expected(*parts))
    assert out.opening[0] and out.opening[2] == 3
    assert got_last == [last]
    assert seen.count == (3 if requested else 0)


def test_an_answer_owed_to_the_server_leaves_our_close_notify_possible(
    material: certs.TlsMaterial,
) -> None:
    """A client that never writes again after the server asked for a KeyUpdate: its answer
    goes out at once, so OpenSSL is not left in a state that refuses close_notify."""
    ctx = _server_ctx(material)
    seen = KeyUpdatesSeen(ctx)
    bulk = pattern(MIB, 70)
    ends: list[str] = []

    def script(peer: Peer, client: Client) -> None:
        _warm_up(peer, client)
        peer.key_update(True)
        peer.send(bulk)
        ends.append(peer.read_to_end())

    async def then(transport: Any, proto: Client) -> None:
        for _ in range(int(WAIT / 0.002)):
            if proto.count >= WARM_UP + len(bulk) or proto.lost.done():
                break
            await asyncio.sleep(0.002)
        transport.close()

    out = _download(material, script, ctx, then=then)
    assert out.error is None
    assert (out.count, out.hash) == (WARM_UP + len(bulk), _expected(bulk))
    assert out.opening[0] and out.opening[2] == 1
    assert (ends, seen.count) == (["close_notify"], 1)


def test_session_tickets_after_the_takeover_are_dropped(material: certs.TlsMaterial) -> None:
    """A NewSessionTicket among the records we open is read and dropped; the data around it
    arrives whole."""
    new_ticket = ctypes.CDLL(_ssl.__file__).SSL_new_session_ticket
    new_ticket.argtypes = [ctypes.c_void_p]
    bulk = [pattern(300 * KIB + i, 30 + i) for i in range(3)]
    ctx = _server_ctx(material)

    def script(peer: Peer, client: Client) -> None:
        _warm_up(peer, client)
        ssl_ptr = _tls.ssl_of(peer.obj._sslobj, -1, ctx)  # type: ignore[attr-defined]
        for part in bulk:
            assert new_ticket(ssl_ptr) == 1  # sent before the next application data
            peer.send(part)
        _close_notify(peer)

    out = _download(material, script, ctx)
    assert out.error is None and out.eof
    assert (out.count, out.hash) == (WARM_UP + sum(map(len, bulk)), _expected(*bulk))
    assert out.opening[0]


def _flip(records: bytes, at: int) -> bytes:
    return records[:at] + bytes([records[at] ^ 0x01]) + records[at + 1 :]


TAMPERING: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "ciphertext": (lambda r: _flip(r, 100), "bad_record_mac"),
    "tag": (lambda r: _flip(r, len(r) - 3), "bad_record_mac"),
    "header length": (lambda r: r[:3] + (len(r) - 4).to_bytes(2, "big") + r[5:], "bad_record_mac"),
    "record type": (lambda r: b"\x16" + r[1:], "malformed"),
    "oversized": (lambda r: b"\x17\x03\x03\x41\x01" + r[5:], "malformed"),
    "too short": (lambda r: b"\x17\x03\x03\x00\x10" + r[5:21], "malformed"),
}


@pytest.mark.parametrize("how", sorted(TAMPERING))
def test_a_tampered_record_ends_the_connection_after_what_came_before(
    material: certs.TlsMaterial, how: str
) -> None:
    """Whole records before a tampered one are delivered; the tampered one ends the connection
    with an error that says why, and nothing of it or after it is delivered."""
    tamper, reason = TAMPERING[how]
    good = pattern(64 * KIB + 5, 40)

    def script(peer: Peer, client: Client) -> None:
        _warm_up(peer, client)
        before = peer.records(good)
        bad = tamper(peer.records(pattern(10 * KIB, 41)))  # one record, sealed after those
        peer.raw.sendall(before + bad + peer.records(b"never"))
        time.sleep(0.2)  # the client ends the connection; a FIN now would race with that

    out = _download(material, script)
    assert isinstance(out.error, ConnectionError) and reason in str(out.error)
    assert not out.eof
    assert (out.count, out.hash) == (WARM_UP + len(good), _expected(good))


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(noise=st.binary(min_size=1, max_size=3000), valid=st.integers(0, 3))
def test_hostile_bytes_after_the_takeover_end_the_connection_cleanly(
    material: certs.TlsMaterial, noise: bytes, valid: int
) -> None:
    """Random bytes after some valid records: never a crash or a hang; the valid records
    arrive, and the stream ends with an error or, if the noise is an unfinished record, at
    the FIN."""
    good = pattern(valid * 5000, 50)

    def script(peer: Peer, client: Client) -> None:
        _warm_up(peer, client)
        peer.raw.sendall(peer.records(good) + noise)
        time.sleep(0.05)
        peer.raw.shutdown(socket.SHUT_WR)

    out = _download(material, script)
    assert isinstance(out.error, ConnectionError) or (out.error is None and out.eof)
    assert (out.count, out.hash) == (WARM_UP + len(good), _expected(good))


@pytest.mark.parametrize(
    "setup",
    ["tls12", "chacha20", "switched off"],
)
def test_openssl_keeps_the_records_where_we_do_not_open_them(
    material: certs.TlsMaterial, setup: str
) -> None:
    """TLS 1.2, ChaCha20-Poly1305 and FASTPF_OPENSSL_RECORDS=1 (set_opening(False)) leave every
    record to OpenSSL; the data is the same."""
    bulk = pattern(MIB + 9, 60)
    ctx = _server_ctx(
        material,
        suite=b"TLS_CHACHA20_POLY1305_SHA256" if setup == "chacha20" else None,
        tls12=setup == "tls12",
    )

    def script(peer: Peer, client: Client) -> None:
        _warm_up(peer, client)
        peer.send(bulk)
        _close_notify(peer)

    old = _tls.set_opening(setup != "switched off")
    try:
        out = _download(material, script, ctx)
    finally:
        _tls.set_opening(old)
    assert out.error is None and out.eof
    assert (out.count, out.hash) == (WARM_UP + len(bulk), _expected(bulk))
    assert out.opening == (False, 0, 0)
