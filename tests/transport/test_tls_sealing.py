"""fastpf._tls's own record sealing: after the first bulk write of a TLS 1.3 AES-GCM connection
the client seals records itself (no copy through OpenSSL's record buffer). The peer is Python's
blocking ssl server (OpenSSL) in a thread, which checks every record's tag: a wrong key, nonce,
sequence number or KeyUpdate ends its connection with bad_record_mac. Every byte is compared,
in order; every wait is bounded."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fastpf import _tls
from fastpf.loop import new_event_loop
from fastpf.serve import certs
from fastpf.transport import tls
from tests.support.tls_records import client_context as _client_ctx
from tests.support.tls_records import expand_label, pattern
from tests.support.tls_records import server_context as _server_ctx

pytestmark = pytest.mark.skipif(
    not tls.available(ssl.create_default_context()) or not _tls.sealing_bound(),
    reason="own record sealing needs CPython's _ssl on OpenSSL 1.1.1+",
)

WAIT = 20.0  # seconds: every wait below is bounded by this
MIB = 1 << 20
CHUNK = 256 * 1024  # what the relay hands the transport per local read


@pytest.fixture(scope="module")
def material() -> certs.TlsMaterial:
    return certs.generate(["127.0.0.1"])


class Received:
    """What the server thread read: sha256 and count, how the stream ended, any error."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.count = 0
        self.end = ""
        self.error: BaseException | None = None
        self.done = threading.Event()


@contextmanager
def _server(
    ctx: ssl.SSLContext, script: Callable[[ssl.SSLSocket, Received], None] | None = None
) -> Iterator[tuple[int, Received]]:
    """One connection: handshake, `script(conn, received)` if given, then read to the end.
    The end is "close_notify" only for a valid sealed close_notify (ragged EOFs raise)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(WAIT)
    got = Received()

    def serve() -> None:
        try:
            raw, _ = listener.accept()
            raw.settimeout(WAIT)
            with ctx.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False) as conn:
                if script is not None:
                    script(conn, got)
                while True:
                    data = conn.recv(MIB)
                    if not data:
                        got.end = "close_notify"
                        break
                    got.hash.update(data)
                    got.count += len(data)
        except BaseException as exc:  # reported to the test
            got.error = exc
        finally:
            got.done.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], got
    finally:
        thread.join(WAIT)
        listener.close()


class Client(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.buf = bytearray(64 * 1024)
        self.count = 0
        self.arrived = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buf)

    def buffer_updated(self, nbytes: int) -> None:
        self.count += nbytes
        self.arrived.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


def _run(main: Callable[[], Any]) -> Any:
    loop = new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(main(), WAIT * 2))
    finally:
        loop.close()


async def _open(ctx: ssl.SSLContext, port: int) -> tuple[Any, Client]:
    proto = Client()
    sock = await tls.connect_tcp("127.0.0.1", port)
    transport = await tls.open_tls(sock, ctx, "127.0.0.1", proto)
    return transport, proto


async def _write(transport: Any, proto: Client, data: bytes) -> None:
    """As the relay writes: one chunk per local read, waiting while the queue is high."""
    view = memoryview(data)
    for start in range(0, len(data), CHUNK):
        await asyncio.wait_for(proto.writable.wait(), WAIT)
        transport.write(view[start : start + CHUNK])


async def _close(transport: Any, proto: Client) -> None:
    transport.close()
    assert await asyncio.wait_for(proto.lost, WAIT) is None
    await tls.lingering_done(WAIT)  # the loop ends next (see the last test)


def _wait(got: Received) -> None:
    assert got.done.wait(WAIT), "the server thread did not finish"
    assert got.error is None, repr(got.error)


# -- the key schedule, against published vectors and an independent HKDF --------------------------
@pytest.mark.parametrize(
    ("secret", "key", "iv"),
    [  # RFC 8448 section 3: client and server application_traffic_secret_0, TLS_AES_128_GCM_SHA256
        (
            "9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5",
            "17422dda596ed5d9acd890e3c63f5051",
            "5b78923dee08579033e523d9",
        ),
        (
            "a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643",
            "9f02283b6c9c07efc26bb9f2ac92e356",
            "cf782b88dd83549aadf1e984",
        ),
    ],
)
def test_traffic_keys_match_rfc8448(secret: str, key: str, iv: str) -> None:
    assert _tls.expand_label(bytes.fromhex(secret), b"key", 16).hex() == key
    assert _tls.expand_label(bytes.fromhex(secret), b"iv", 12).hex() == iv


@pytest.mark.parametrize("size", [32, 48])
def test_key_schedule_matches_an_independent_hkdf(size: int) -> None:
    for seed in range(20):
        secret = hashlib.sha512(bytes([seed, size])).digest()[:size]
        for label, length in ((b"key", 16), (b"key", 32), (b"iv", 12), (b"traffic upd", size)):
            assert _tls.expand_label(secret, label, length) == expand_label(secret, label, length)
    with pytest.raises(ValueError):
        _tls.expand_label(b"x" * 31, b"key", 16)
    with pytest.raises(ValueError):
        _tls.expand_label(b"x" * 32, b"key", 33)


# -- against OpenSSL as the peer -------------------------------------------------------------------
@pytest.mark.parametrize(
    "suite", [b"TLS_AES_128_GCM_SHA256", b"TLS_AES_256_GCM_SHA384"], ids=["aes128", "aes256"]
)
def test_bulk_records_sealed_by_us_continue_openssls_sequence(
    material: certs.TlsMaterial, suite: bytes
) -> None:
    """Small writes go through OpenSSL (its sequence numbers), the first bulk write takes over
    at the next number; the peer checks every tag, and our close_notify is a valid alert."""
    small = [b"s" * n for n in (1, 100, 5000, 16383)]
    bulk = pattern(6 * MIB + 12345, 3)

    async def main() -> tuple[bool, bool, int]:
        transport, proto = await _open(_client_ctx(material), port)
        for data in small:
            transport.write(data)
        before = _tls.sealing(transport._ssl)[0]
        await _write(transport, proto, bulk)
        taken, seq, _ = _tls.sealing(transport._ssl)
        await _close(transport, proto)
        return before, taken, seq

    with _server(_server_ctx(material, suite)) as (port, got):
        before, taken, seq = _run(main)
        _wait(got)
    assert (before, taken) == (False, True)
    records = len(small) + -(-len(bulk) // 16384)
    assert seq == records
    assert got.count == sum(map(len, small)) + len(bulk)
    assert got.hash.hexdigest() == hashlib.sha256(b"".join(small) + bulk).hexdigest()
    assert got.end == "close_notify"


@pytest.mark.parametrize(
    "suite", [b"TLS_AES_128_GCM_SHA256", b"TLS_AES_256_GCM_SHA384"], ids=["aes128", "aes256"]
)
def test_our_key_updates_at_the_record_limit_keep_the_stream_whole(
    material: certs.TlsMaterial, suite: bytes
) -> None:
    data = pattern(3 * MIB, 3)
    old = _tls.set_records_per_key(7)

    async def main() -> int:
        transport, proto = await _open(_client_ctx(material), port)
        await _write(transport, proto, data)
        updates = _tls.sealing(transport._ssl)[2]
        await _close(transport, proto)
        return updates

    try:
        with _server(_server_ctx(material, suite)) as (port, got):
            updates = _run(main)
            _wait(got)
    finally:
        _tls.set_records_per_key(old)
    assert updates == len(data) // 16384 // 7  # 192 records: a KeyUpdate before every 8th
    assert got.hash.hexdigest() == hashlib.sha256(data).hexdigest()
    assert got.end == "close_notify"


def test_a_peer_asking_for_a_key_update_gets_ours_every_time(material: certs.TlsMaterial) -> None:
    """The peer's KeyUpdate(update_requested) leaves OpenSSL owing an answer for its next write;
    that answer would reuse a nonce, so it goes into the void and ours, under our key, takes its
    place. The peer switches its read key on our answer: what follows decrypts only if it was
    right. Asked twice, answered twice (OpenSSL's flag is cleared each time)."""
    parts = [pattern(MIB, 1), pattern(2 * MIB, 2), pattern(MIB + 7, 3)]
    server_ctx = _server_ctx(material)

    def ask(conn: ssl.SSLSocket, got: Received) -> None:
        ssl_ptr = _tls.ssl_of(conn._sslobj, conn.fileno(), server_ctx)  # type: ignore[attr-defined]
        for upto in (len(parts[0]), len(parts[0]) + len(parts[1])):
            while got.count < upto:
                data = conn.recv(min(MIB, upto - got.count))
                got.hash.update(data)
                got.count += len(data)
            _tls.request_key_update(ssl_ptr)
            conn.sendall(b"k")  # the KeyUpdate goes first

    async def main() -> tuple[list[int], int]:
        transport, proto = await _open(_client_ctx(material), port)
        updates = []
        for i, part in enumerate(parts):
            if i:
                while proto.count < i:
                    proto.arrived.clear()
                    await asyncio.wait_for(proto.arrived.wait(), WAIT)
            updates.append(_tls.sealing(transport._ssl)[2])
            await _write(transport, proto, part)
        await _close(transport, proto)
        return updates, proto.count

    with _server(server_ctx, ask) as (port, got):
        updates, replies = _run(main)
        _wait(got)
    assert (updates, replies) == ([0, 1, 2], 2)
    assert got.hash.hexdigest() == hashlib.sha256(b"".join(parts)).hexdigest()
    assert got.end == "close_notify"


def test_a_key_update_openssl_answered_first_leaves_the_records_to_openssl(
    material: certs.TlsMaterial,
) -> None:
    """Before any bulk write OpenSSL answers the peer's request itself and moves to a key we
    do not know: this connection must never take over."""
    data = pattern(2 * MIB, 3)
    server_ctx = _server_ctx(material)

    def ask(conn: ssl.SSLSocket, got: Received) -> None:
        ssl_ptr = _tls.ssl_of(conn._sslobj, conn.fileno(), server_ctx)  # type: ignore[attr-defined]
        _tls.request_key_update(ssl_ptr)
        conn.sendall(b"k")

    async def main() -> bool:
        transport, proto = await _open(_client_ctx(material), port)
        await asyncio.wait_for(proto.arrived.wait(), WAIT)
        await asyncio.sleep(0.05)  # the answer is flushed
        await _write(transport, proto, data)
        taken = _tls.sealing(transport._ssl)[0]
        await _close(transport, proto)
        return taken

    with _server(server_ctx, ask) as (port, got):
        taken = _run(main)
        _wait(got)
    assert not taken
    assert got.hash.hexdigest() == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("case", ["tls12", "chacha20", "small-writes", "switched-off"])
def test_openssl_keeps_the_records_where_we_do_not_seal(
    material: certs.TlsMaterial, case: str
) -> None:
    data = pattern(MIB, 3) if case != "small-writes" else b"m" * (16384 - 1)
    server_ctx = _server_ctx(
        material,
        suite=b"TLS_CHACHA20_POLY1305_SHA256" if case == "chacha20" else None,
        tls12=case == "tls12",
    )
    old = _tls.set_sealing(case != "switched-off")

    async def main() -> bool:
        transport, proto = await _open(_client_ctx(material), port)
        for _ in range(200 if case == "small-writes" else 1):
            await _write(transport, proto, data)
        taken = _tls.sealing(transport._ssl)[0]
        await _close(transport, proto)
        return taken

    try:
        with _server(server_ctx) as (port, got):
            taken = _run(main)
            _wait(got)
    finally:
        _tls.set_sealing(old)
    assert not taken
    rounds = 200 if case == "small-writes" else 1
    assert got.hash.hexdigest() == hashlib.sha256(data * rounds).hexdigest()
    assert got.end == "close_notify"


def test_a_key_log_file_is_still_written(material: certs.TlsMaterial, tmp_path: Path) -> None:
    """SSLKEYLOGFILE (CPython's key-log callback) keeps working: ours calls it on."""
    client_ctx = _client_ctx(material)
    client_ctx.keylog_filename = str(tmp_path / "keys.log")
    data = pattern(MIB, 3)

    async def main() -> bool:
        transport, proto = await _open(client_ctx, port)
        await _write(transport, proto, data)
        taken = _tls.sealing(transport._ssl)[0]
        await _close(transport, proto)
        return taken

    with _server(_server_ctx(material)) as (port, got):
        taken = _run(main)
        _wait(got)
    assert taken
    assert got.hash.hexdigest() == hashlib.sha256(data).hexdigest()
    labels = [line.split()[0] for line in (tmp_path / "keys.log").read_text().splitlines() if line]
    assert "CLIENT_TRAFFIC_SECRET_0" in labels and "SERVER_TRAFFIC_SECRET_0" in labels


def test_records_per_key_must_be_positive() -> None:
    with pytest.raises(ValueError):
        _tls.set_records_per_key(0)


def test_a_loop_ending_right_after_close_loses_none_of_our_bytes(
    material: certs.TlsMaterial,
) -> None:
    """The client stops its loop as soon as its connections are closed. A socket still reading
    until the peer's FIN (the close linger) would then be closed by the collector with the
    peer's session tickets unread: RST, and the peer's kernel drops what it had not read yet
    (seen: 114,688 of 1 MiB). lingering_done() waits for those sockets first."""
    data = pattern(MIB, 3)
    for suite in [b"TLS_CHACHA20_POLY1305_SHA256", b"TLS_AES_128_GCM_SHA256"] * 10:

        async def main() -> None:
            transport, proto = await _open(_client_ctx(material), port)
            await _write(transport, proto, data)
            await _close(transport, proto)  # ends with lingering_done()

        with _server(_server_ctx(material, suite)) as (port, got):
            _run(main)
            _wait(got)
        assert (got.count, got.end) == (len(data), "close_notify")


def test_lingering_done_also_waits_for_a_queue_still_being_sent(
    material: certs.TlsMaterial,
) -> None:
    """close() with megabytes still queued for a slow peer: the transport is closing, not yet
    lingering. A loop stopped after lingering_done() still delivers every byte."""
    data = pattern(8 * MIB, 3)

    def slow_start(conn: ssl.SSLSocket, got: Received) -> None:
        threading.Event().wait(0.3)  # our queue fills the socket meanwhile

    async def main() -> None:
        transport, proto = await _open(_client_ctx(material), port)
        transport.write(data)  # one call: most of it waits in our queue
        transport.close()
        await tls.lingering_done(WAIT)

    with _server(_server_ctx(material), slow_start) as (port, got):
        _run(main)
        _wait(got)
    assert (got.count, got.end) == (len(data), "close_notify")
    assert got.hash.hexdigest() == hashlib.sha256(data).hexdigest()
