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
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastpf import _tls
from fastpf.loop import new_event_loop
from fastpf.serve import certs
from fastpf.transport import tls
from tests.support.tls_records import RecordForge, count_records, pattern, server_secret
from tests.support.tls_records import client_context as _client_ctx
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
        self.records_sent = 0  # under the server's application key (RecordForge goes on)
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
                tickets = self.outgoing.read()  # written after the client's Finished
                self.records_sent += count_records(tickets)
                self.raw.sendall(tickets)
                return
            except ssl.SSLWantReadError:
                self.raw.sendall(self.outgoing.read())
                self._pull()
        raise AssertionError("no handshake")

    def records(self, data: bytes) -> bytes:
        """`data` sealed into records (not sent)."""
        self.obj.write(data)
        wire = self.outgoing.read()
        self.records_sent += count_records(wire)
        return wire

    def forge(self) -> RecordForge:
        """Records of our own from here on (OpenSSL's would reuse sequence numbers)."""
        keylog = self.ctx.keylog_filename
        assert keylog, "the server context needs keylog_filename"
        return RecordForge(server_secret(Path(keylog)), self.records_sent)

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

    def __init__(self, buffer_size: int, pausing: bool = False) -> None:
        self.transport: Any = None
        self.pausing = pausing  # pause reading after every delivery, resume on the next turn
        self.opening: tuple[bool, int, int] = (False, 0, 0)
        self.sealing: tuple[bool, int, int] = (False, 0, 0)
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
            self.sealing = _tls.sealing(self.transport._ssl)

    def buffer_updated(self, nbytes: int) -> None:
        self.hash.update(memoryview(self.buf)[:nbytes])
        self.count += nbytes
        if self.count >= WARM_UP:
            self.warm.set()
        self._probe()
        if self.pausing:
            self.transport.pause_reading()
            asyncio.get_running_loop().call_soon(self.transport.resume_reading)

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
        self.sealing = proto.sealing


def _download(
    material: certs.TlsMaterial,
    script: Callable[[Peer, Client], None],
    server_ctx: ssl.SSLContext | None = None,
    buffer_size: int = 256 * KIB,
    then: Callable[[Any, Client], Any] | None = None,
    pausing: bool = False,
    client_ctx: ssl.SSLContext | None = None,
    open_from: int | None = None,
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
        proto = Client(buffer_size, pausing)
        holder["client"] = proto
        ctx_of_client = client_ctx or _client_ctx(material)
        transport = await tls.open_tls(sock, ctx_of_client, "127.0.0.1", proto)
        ready.set()
        if then is not None:
            await then(transport, proto)
        await asyncio.wait_for(asyncio.shield(proto.lost), WAIT)
        await tls.lingering_done(WAIT)
        return Outcome(proto)

    old = _tls.set_open_from(open_from) if open_from is not None else None
    try:
        with _server(ctx, run) as (port, errors):
            loop = new_event_loop()
            try:
                outcome = loop.run_until_complete(asyncio.wait_for(main(port), WAIT * 2))
            finally:
                loop.close()
    finally:
        if old is not None:
            _tls.set_open_from(old)
    assert not errors, repr(errors)
    return outcome


def _warm_up(peer: Peer, client: Client) -> None:
    """WARM_UP bytes, then a pause in which the client drains its socket at a record boundary:
    the moment it takes its reads over."""
    peer.send(pattern(WARM_UP, 1))
    assert client.warm.wait(WAIT)
    time.sleep(0.05)


def _wait_count(client: Client, n: int) -> None:
    """Until the client has n bytes (polled from the server's thread, bounded)."""
    for _ in range(int(WAIT / 0.005)):
        if client.count >= n:
            return
        time.sleep(0.005)
    raise AssertionError(f"the client got {client.count} of {n} bytes")


def _close_notify(peer: Peer) -> None:
    with pytest.raises(ssl.SSLWantReadError):
        peer.obj.unwrap()  # writes close_notify, then would wait for the client's
    peer.raw.sendall(peer.outgoing.read())


def _assert_whole(out: Outcome, data: list[bytes]) -> None:
    """Every byte arrived, in order, the stream ended cleanly, and we opened records."""
    assert out.error is None and out.eof
    assert out.count == sum(map(len, data))
    assert out.hash == hashlib.sha256(b"".join(data)).hexdigest()
    assert out.opening[0]


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


@pytest.mark.parametrize("pausing", [False, True], ids=["reading", "paused-per-delivery"])
def test_records_cut_anywhere_reach_a_small_buffer_whole(
    material: certs.TlsMaterial, pausing: bool
) -> None:
    """Ciphertext cut at random points (headers and tags split across reads) into a protocol
    buffer smaller than a record (the rest of a record waits for the next call, also across a
    pause: no readiness event announces it); the server's FIN without close_notify (as Go may
    close) ends the stream after the last byte."""
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

    out = _download(material, script, buffer_size=1000, pausing=pausing)
    assert out.error is None and out.eof
    assert (out.count, out.hash) == (WARM_UP + len(bulk), _expected(bulk))
    assert out.opening[0] and out.opening[1] >= len(bulk) // 16384


def _record_starts(wire: bytes) -> list[int]:
    starts, at = [], 0
    while at < len(wire):
        starts.append(at)
        at += 5 + int.from_bytes(wire[at + 3 : at + 5], "big")
    return starts


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_takeover_amid_pieces_cut_as_a_proxy_cuts_them_loses_nothing(
    material: certs.TlsMaterial, seed: int
) -> None:
    """Through a proxy, the client's reads end anywhere: at a record's end, just after a
    header, inside a body. The takeover may come after any of those reads (here: as soon as
    64 KiB are in), and only the first kind is a moment when OpenSSL holds nothing."""
    data = pattern(3 * MIB, 40 + seed)
    rng = random.Random(seed)

    def script(peer: Peer, client: Client) -> None:
        wire = peer.records(data)
        starts = _record_starts(wire)
        at = 0
        ends = starts[1:] + [len(wire)]
        for i, (prev, start) in enumerate(zip(starts, ends, strict=True)):
            # record end, header end, or in a body; the first chance past 64 KiB: a header end
            end = (
                prev + 8000
                if i < 5
                else prev + 5
                if i == 5
                else rng.choice((start, prev + 5, prev + 8000))
            )
            if end <= at:
                continue
            peer.raw.sendall(wire[at:end])
            at = end
            time.sleep(0.002)  # the client drains its socket: a chance to take over
        peer.raw.sendall(wire[at:])
        _close_notify(peer)

    _assert_whole(_download(material, script, open_from=64 * KIB), [data])


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
    assert out.sealing[0] == client_seals
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


@pytest.fixture
def forging_ctx(material: certs.TlsMaterial, tmp_path: Path) -> ssl.SSLContext:
    """A server context whose key log lets the test seal records as the server."""
    ctx = _server_ctx(material)
    ctx.keylog_filename = str(tmp_path / "server-keys")
    return ctx


def _ticket(size: int) -> bytes:
    """A well-formed NewSessionTicket message (RFC 8446 4.6.1) carrying a `size`-byte ticket:
    OpenSSL parses it before the takeover; after it, it is dropped."""
    nonce = bytes(8)
    body = (7200).to_bytes(4, "big") + b"\x01\x02\x03\x04" + bytes([len(nonce)]) + nonce
    body += size.to_bytes(2, "big") + bytes(i % 251 for i in range(size)) + b"\x00\x00"
    return b"\x04" + len(body).to_bytes(3, "big") + body


def _key_update(requested: bool) -> bytes:
    return b"\x18\x00\x00\x01" + bytes([requested])


def test_handshake_messages_across_records_padding_and_user_canceled(
    material: certs.TlsMaterial, forging_ctx: ssl.SSLContext
) -> None:
    """What OpenSSL servers do not write but others may: a ticket split inside its header and
    across three records, a KeyUpdate split across two, zero padding, empty records and a
    user_canceled warning. The data around them arrives whole; the key moves on once."""
    data = [pattern(40 * KIB + i, 80 + i) for i in range(4)]

    def script(peer: Peer, client: Client) -> None:
        _warm_up(peer, client)
        forge = peer.forge()
        ticket = _ticket(700)
        update = _key_update(False)
        wire = [
            forge.record(data[0][:16384]),
            forge.record(ticket[:2], kind=22),
            forge.record(ticket[2:300], kind=22, padding=5),
            forge.record(ticket[300:], kind=22),
            forge.record(b""),
            forge.data(data[0][16384:], padding=100),
            forge.record(b"\x01\x5a", kind=21),  # user_canceled
            forge.record(data[1][:9000]),
            forge.record(update[:3], kind=22),
            forge.record(update[3:], kind=22),
        ]
        forge.update()
        wire += [forge.data(data[1][9000:]), forge.record(data[2][:1]), forge.data(data[2][1:])]
        wire += [forge.data(data[3]), forge.record(b"\x01\x00", kind=21)]  # close_notify
        peer.raw.sendall(b"".join(wire))

    out = _download(material, script, forging_ctx)
    assert out.error is None and out.eof
    assert (out.count, out.hash) == (WARM_UP + sum(map(len, data)), _expected(*data))
    assert out.opening[0] and out.opening[2] == 1


def test_a_handshake_header_split_at_the_takeover_point_leaves_reading_to_openssl(
    material: certs.TlsMaterial, forging_ctx: ssl.SSLContext
) -> None:
    """Some data, then a record holding only a ticket's first two bytes, then a pause: the
    client has read enough to take over, but OpenSSL keeps those two bytes where no probe sees
    them, so the takeover waits for a data record. Taking over there would lose them (the
    ticket's rest would start mid-header)."""
    data = [pattern(300 * KIB + i, 90 + i) for i in range(2)]
    ticket = _ticket(300)
    # open_from=1: any data read, so the pause below is the first chance

    def script(peer: Peer, client: Client) -> None:
        forge = peer.forge()
        peer.raw.sendall(forge.data(data[0][:100]) + forge.record(ticket[:2], kind=22))
        time.sleep(0.1)  # the client reads both (one segment) and drains its socket
        peer.raw.sendall(forge.record(ticket[2:], kind=22) + forge.data(data[0][100:]))
        _wait_count(client, len(data[0]))
        time.sleep(0.05)
        peer.raw.sendall(forge.data(data[1]) + forge.record(b"\x01\x00", kind=21))

    _assert_whole(_download(material, script, forging_ctx, open_from=1), data)


def test_a_record_header_read_alone_at_the_takeover_point_leaves_reading_to_openssl(
    material: certs.TlsMaterial, forging_ctx: ssl.SSLContext
) -> None:
    """Data records and then the next record's 5-byte header alone, then a pause: OpenSSL has
    taken the header out of its buffer (nothing is pending there) and waits for the body.
    Taking over there would lose the header; the takeover waits for a whole record."""
    data = [pattern(300 * KIB + i, 95 + i) for i in range(3)]

    def script(peer: Peer, client: Client) -> None:
        forge = peer.forge()
        first = forge.data(data[0])
        second = forge.data(data[1])
        peer.raw.sendall(first + second[:5])
        _wait_count(client, len(data[0]))
        time.sleep(0.1)  # the client reads the header and drains its socket
        peer.raw.sendall(second[5:])
        _wait_count(client, len(data[0]) + len(data[1]))
        time.sleep(0.05)
        peer.raw.sendall(forge.data(data[2]) + forge.record(b"\x01\x00", kind=21))

    _assert_whole(_download(material, script, forging_ctx, open_from=1), data)


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ([("alert", b"\x02\x28")], "alert 40"),
        ([("hs", _ticket(50)[:10]), ("data", b"between")], "unexpected"),
        ([("data", b"")] * 70, "unexpected"),
        ([("hs", b"\x0d\x00\x00\x01\x00")], "unexpected"),  # a CertificateRequest
        ([("hs", _key_update(False) + _ticket(20))], "unexpected"),  # not at a record's end
        ([("hs", b"\x18\x00\x00\x01\x02")], "unexpected"),  # a KeyUpdate of value 2
        ([("kind 24", b"x")], "unexpected"),
        ([("alert", b"\x01")], "malformed"),
        ([("hs", b"\x04\x01\x00\x00")], "oversized"),  # a 64 KiB ticket
    ],
    ids=[
        "fatal alert",
        "data inside a handshake message",
        "70 empty records",
        "certificate request",
        "key update not last",
        "key update value",
        "unknown content type",
        "short alert",
        "huge ticket",
    ],
)
def test_what_the_server_may_not_send_ends_the_connection_with_its_reason(
    material: certs.TlsMaterial,
    forging_ctx: ssl.SSLContext,
    wire: list[tuple[str, bytes]],
    reason: str,
) -> None:
    good = pattern(20 * KIB + 3, 99)
    kinds = {"alert": 21, "hs": 22, "data": 23, "kind 24": 24}

    def script(peer: Peer, client: Client) -> None:
        _warm_up(peer, client)
        forge = peer.forge()
        records = [forge.record(good[:16384]), forge.record(good[16384:])]
        records += [forge.record(content, kind=kinds[kind]) for kind, content in wire]
        peer.raw.sendall(b"".join(records) + forge.record(b"never"))
        time.sleep(0.2)

    out = _download(material, script, forging_ctx)
    assert isinstance(out.error, ConnectionError) and reason in str(out.error), out.error
    assert (out.count, out.hash) == (WARM_UP + len(good), _expected(good))


def test_a_contexts_own_message_callback_keeps_the_records_with_openssl(
    material: certs.TlsMaterial,
) -> None:
    """A client context with its own message callback (ssl's debugging hook): the connection
    is not watched, so its reads stay with OpenSSL, and that callback still sees every record
    to the end (the server's close_notify)."""
    client_ctx = _client_ctx(material)
    alerts: list[str] = []

    def trace(conn: Any, direction: str, version: Any, kind: Any, msg: Any, data: Any) -> None:
        if kind == ssl._TLSContentType.ALERT:  # type: ignore[attr-defined]
            alerts.append(direction)

    client_ctx._msg_callback = trace  # type: ignore[attr-defined]
    bulk = pattern(MIB, 75)

    def script(peer: Peer, client: Client) -> None:
        _warm_up(peer, client)
        peer.send(bulk)
        _close_notify(peer)

    out = _download(material, script, client_ctx=client_ctx)
    assert out.error is None and out.eof
    assert (out.count, out.hash) == (WARM_UP + len(bulk), _expected(bulk))
    assert out.opening == (False, 0, 0)
    assert "read" in alerts
