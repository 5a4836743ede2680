"""The client's TLS connection to the API server over OpenSSL's socket BIO.

The event loops' TLS (uvloop and asyncio alike) runs OpenSSL on memory BIOs: every received
byte is copied into the incoming BIO (which zero-fills its growth first), out again into the
record buffer, decrypted, and copied to the reader; every sent byte takes the same way back,
plus one Python call per TLS record. Here OpenSSL reads the socket itself (the C-level SSL
socket that ssl.SSLSocket wraps), with read-ahead so that one recv(2) brings several records, and the
compiled loops of fastpf._tls move a whole buffer of records per call. What remains per byte
is the kernel's copy, the cipher and one copy out of the record buffer.

`TlsTransport` is an asyncio transport over such a socket for one protocol (BufferedProtocol
or Protocol) with asyncio's flow control on both sides; `open_tls` connects, shakes hands and
builds one. `available()` says whether this interpreter allows it (CPython, whose `_ssl` object
layout and libssl symbols fastpf can reach); elsewhere the caller uses the loop's TLS.

Writes: after the handshake the SSL object writes its records into fastpf._tls's ciphertext
buffer (one copy, no zero-fill), which is sent with as few send(2) calls as the kernel allows;
a send per 16 KiB record would cost the kernel about twice as much per byte. The buffer is the
transport's write queue: asyncio's high/low marks apply to it, so its size stays bounded by
the protocol's pause_writing. Renegotiation (TLS 1.2 only) is refused, so a write never waits
for a read. On TLS 1.3 with AES-GCM, bulk writes are sealed by fastpf._tls itself, straight
from the caller's buffer (no copy through OpenSSL's record buffer): see `_tls.encrypt`.
Likewise, once such a connection has read a bulk of data, its records are received and opened
by fastpf._tls straight into the protocol's buffer (see `_tls.read_into`); OpenSSL then reads
nothing more, so its reading errors are never asked for (`_read_failed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

from fastpf import _tls

READ_AHEAD_BUFFER = 128 * 1024  # OpenSSL's record buffer: one recv(2) takes several records
READ_ROUNDS = 64  # buffers read per readiness event before other connections get a turn
PLAIN_READ = 64 * 1024  # scratch buffer for a plain Protocol (one per thread, see _scratch)
LINGER = 10.0  # seconds a closed connection reads on until the peer's FIN (see _linger)
LINGER_BYTES = 16 * 1024 * 1024  # ... and bytes
LINGER_MAX = 256  # sockets lingering at once (each holds a descriptor); beyond: closed at once
LINGER_AT_EXIT = 2.0  # seconds a stopping client waits for its lingering sockets
# the sockets lingering now (descriptor -> its loop and socket), see _linger
_lingering: dict[int, tuple[asyncio.AbstractEventLoop, socket.socket]] = {}
# transports closed while their queue (or close_notify) still waits for the socket
_closing_now: dict[int, tuple[asyncio.AbstractEventLoop, TlsTransport]] = {}
WRITE_HIGH = 64 * 1024  # asyncio's default write-buffer limits


@lru_cache(maxsize=1)
def _loaded() -> bool:
    """Bind fastpf._tls to the libssl that `_ssl` is linked to (the one that owns its SSL
    objects); False where that cannot be done."""
    try:
        _tls.load()
    except OSError:
        return False
    if os.environ.get("FASTPF_OPENSSL_RECORDS") == "1":
        _tls.set_sealing(False)
        _tls.set_opening(False)
    return True


def _wrap(ctx: ssl.SSLContext, sock: socket.socket, server_hostname: str | None) -> Any:
    """The C-level SSL socket (`_ssl._SSLSocket`) of a client connection on `sock`: what
    ssl.SSLSocket wraps, without the wrapper (whose do_handshake asks getpeername and sets the
    timeout twice per call, and whose creation converts enums: CPU a ws-channel client spends
    per local connection). OpenSSL checks the certificate and the name as with wrap_socket."""
    if ctx.check_hostname and not server_hostname:
        raise ValueError("check_hostname requires server_hostname")
    hostname = ctx._encode_hostname(server_hostname)  # type: ignore[attr-defined]
    return ctx._wrap_socket(sock, False, hostname)  # type: ignore[attr-defined]


def _ssl_pointer(sslobj: Any, sock: socket.socket, ctx: ssl.SSLContext) -> int:
    """The SSL* of a C-level SSL socket, or 0 (see fastpf._tls.ssl_of: trusted only if OpenSSL
    agrees that it uses this socket's descriptor and SSL_CTX)."""
    return _tls.ssl_of(sslobj, sock.fileno(), ctx)


_layout_ok: bool | None = None  # proven once per process (see _probe_layout)


def _probe_layout(ctx: ssl.SSLContext) -> bool:
    """Prove the SSL socket layout on a socket pair of our own, wrapped with the caller's
    context (no handshake), before trusting it on a real connection."""
    a, b = socket.socketpair()
    try:
        probe = _wrap(ctx, a, "probe.invalid")
        return _ssl_pointer(probe, a, ctx) != 0
    except (OSError, ssl.SSLError, ValueError, AttributeError, TypeError):
        return False
    finally:
        a.close()
        b.close()


def available(ctx: ssl.SSLContext) -> bool:
    """True when client TLS with `ctx` can run over the socket BIO here (else: the loop's
    TLS). FASTPF_LOOP_TLS=1 chooses the event loop's TLS (memory BIO) instead."""
    global _layout_ok
    if os.environ.get("FASTPF_LOOP_TLS") == "1":
        return False
    if not _loaded():
        return False
    if _layout_ok is None:
        _layout_ok = _probe_layout(ctx)
    return _layout_ok


# get_extra_info names answered by the SSL socket's method of that name
_FROM_SSL = {"peercert": "getpeercert", "cipher": "cipher", "compression": "compression"}

_local = threading.local()


def _scratch() -> bytearray:
    """The thread's read buffer for plain Protocols (the upgrade's handshake protocol), whose
    data_received gets a copy: one per thread instead of one per connection (a ws-channel
    client holds a connection per local connection)."""
    buf: bytearray | None = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = bytearray(PLAIN_READ)
    return buf


class TlsTransport(asyncio.Transport):
    """An asyncio transport over a connected, non-blocking socket and its handshaken C-level
    SSL socket (see _wrap)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        sslobj: Any,
        ssl_ptr: int,
        protocol: asyncio.BaseProtocol,
        reader_registered: bool = False,
    ) -> None:
        """`reader_registered`: the socket's descriptor has a reader (open_tls's) that this
        transport takes over: one poll registration for the whole connection."""
        super().__init__()
        self._loop = loop
        self._sock = sock
        self._sslobj: Any = sslobj  # dropped at connection_lost (frees the SSL object)
        self._ssl = ssl_ptr
        self._fd = sock.fileno()
        self._protocol: asyncio.BaseProtocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)
        self._closing = False  # close() called: no more reading, flush then close
        self._notified = False  # our close_notify is queued
        self._lost = False  # the socket is closed; connection_lost is (being) called
        self._read_paused = False
        self._reader = reader_registered  # add_reader in force
        self._writer = False  # add_writer in force
        self._read_soon: asyncio.Handle | None = None
        self._high = WRITE_HIGH
        self._low = WRITE_HIGH // 4
        self._write_paused = False  # the protocol was told pause_writing()
        self._extra: dict[str, Any] = {"socket": sock, "sslcontext": sslobj.context}
        with contextlib.suppress(OSError):
            self._extra["peername"] = sock.getpeername()
        with contextlib.suppress(OSError):
            self._extra["sockname"] = sock.getsockname()

    def _start(self) -> None:
        if self._reader:  # take over the registration (replaces its callback)
            self._loop.add_reader(self._fd, self._read_ready)
        self._protocol.connection_made(self)
        if not self._lost and not self._read_paused and not self._closing:
            self._want_read()
            # Read-ahead may already hold records that came with the handshake's last flight.
            self._schedule_read()

    # -- asyncio.BaseTransport ----------------------------------------------------------------
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._sslobj if self._sslobj is not None else default
        if name in _FROM_SSL and not self._lost:  # asked for rarely: not made per connection
            return getattr(self._sslobj, _FROM_SSL[name])()
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def close(self) -> None:
        """Stop reading, write what is queued, send close_notify, close the socket."""
        if self._closing or self._lost:
            return
        self._closing = True
        if self.get_write_buffer_size():
            self._stop_reading()
            self._want_write()  # _write_ready shuts down once all is sent
            _closing_now[id(self)] = (self._loop, self)  # see lingering_done
        else:
            self._shutdown(None)  # connection_lost still comes from the loop (call_soon)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    # -- asyncio.ReadTransport ----------------------------------------------------------------
    def is_reading(self) -> bool:
        return not (self._read_paused or self._closing or self._lost)

    def pause_reading(self) -> None:
        if self._closing or self._lost or self._read_paused:
            return
        self._read_paused = True
        self._stop_reading()

    def resume_reading(self) -> None:
        if self._closing or self._lost or not self._read_paused:
            return
        self._read_paused = False
        self._want_read()
        self._schedule_read()  # records may wait in OpenSSL's buffer: no readiness event

    # -- asyncio.WriteTransport ---------------------------------------------------------------
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = WRITE_HIGH if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._check_high()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low, self._high)

    def get_write_buffer_size(self) -> int:
        return _tls.pending(self._ssl) if self._ssl else 0

    def write_buffer_capacity(self) -> int:
        """Bytes the ciphertext buffer holds allocated (memory accounting; 0: none)."""
        return _tls.capacity(self._ssl) if self._ssl else 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._lost or not len(data):  # after close(): dropped
            return
        self._encrypt(data)
        self._after_write()

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        """Every part's records, then one flush: a gather write through TLS."""
        if self._closing or self._lost:
            return
        for data in list_of_data:
            if len(data) and not self._encrypt(data):
                return
        self._after_write()

    def can_write_eof(self) -> bool:
        return False  # TLS has no half-close (close_notify ends both directions)

    def write_eof(self) -> None:
        raise NotImplementedError("TLS transports cannot write EOF")

    def abort(self) -> None:
        self._force_close(None)

    # -- reading ------------------------------------------------------------------------------
    def _want_read(self) -> None:
        if not self._reader and not self._lost:
            self._loop.add_reader(self._fd, self._read_ready)
            self._reader = True

    def _stop_reading(self) -> None:
        if self._reader:
            self._loop.remove_reader(self._fd)
            self._reader = False
        if self._read_soon is not None:
            self._read_soon.cancel()
            self._read_soon = None

    def _schedule_read(self) -> None:
        if self._read_soon is None:
            self._read_soon = self._loop.call_soon(self._read_ready)

    def _read_ready(self) -> None:
        self._read_soon = None
        self._read_rounds()
        if not self._lost and not self._writer and _tls.pending(self._ssl):
            self._after_write()  # reading made records to send (a TLS 1.3 KeyUpdate answer)

    def _read_rounds(self) -> None:
        for _ in range(READ_ROUNDS):
            if self._read_paused or self._closing or self._lost:
                return
            try:
                if self._buffered:
                    buf = self._protocol.get_buffer(-1)  # type: ignore[attr-defined]
                    n, status = _tls.read_into(self._ssl, buf)
                    del buf
                    if n:
                        self._protocol.buffer_updated(n)  # type: ignore[attr-defined]
                else:
                    scratch = _scratch()
                    n, status = _tls.read_into(self._ssl, scratch)
                    if n:
                        self._protocol.data_received(bytes(scratch[:n]))  # type: ignore[attr-defined]
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:  # the protocol failed: as asyncio does, end here
                self._force_close(exc)
                return
            if status == _tls.SSL_ERROR_NONE:
                if not n:
                    self._force_close(RuntimeError("get_buffer() returned an empty buffer"))
                    return
                continue  # the buffer is full; more may be waiting
            if status == _tls.SSL_ERROR_WANT_READ:
                return
            if status == _tls.PEER_CLOSED:  # our own record opening saw the end
                self._eof()
            elif status == _tls.RECORD_ERROR:
                self._force_close(_tls.read_error(self._ssl))
            else:
                self._read_failed()  # OpenSSL's reading failed
            return
        self._schedule_read()  # a busy connection: let others run, then go on

    def _read_failed(self) -> None:
        """SSL_read_ex failed for good: let Python's ssl module say how (and raise it)."""
        try:
            data = self._sslobj.read(1)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return  # it was transient after all
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            self._eof()  # close_notify, or the peer closed TCP without it (as Go may)
            return
        except (ssl.SSLError, OSError) as exc:
            self._force_close(exc)
            return
        if data:  # not expected; deliver it rather than lose it
            self._deliver_bytes(data)
            self._schedule_read()
        else:
            self._eof()

    def _deliver_bytes(self, data: bytes) -> None:
        if self._buffered:
            buf = self._protocol.get_buffer(len(data))  # type: ignore[attr-defined]
            view = memoryview(buf)
            view[: len(data)] = data
            del view, buf
            self._protocol.buffer_updated(len(data))  # type: ignore[attr-defined]
        else:
            self._protocol.data_received(data)  # type: ignore[attr-defined]

    def _eof(self) -> None:
        self._stop_reading()
        try:
            keep_open = self._protocol.eof_received()  # type: ignore[attr-defined]
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._force_close(exc)
            return
        if not keep_open:
            self.close()

    # -- writing ------------------------------------------------------------------------------
    def _encrypt(self, data: bytes | bytearray | memoryview) -> bool:
        """`data` as records into the ciphertext buffer (it is copied: the caller may reuse
        its buffer at once). False: the connection ended."""
        try:
            status = _tls.encrypt(self._ssl, data)
        except (ValueError, RuntimeError, MemoryError) as exc:
            self._force_close(exc)
            return False
        if status != _tls.SSL_ERROR_NONE:
            self._write_failed(status)
            return False
        return True

    def _after_write(self) -> None:
        """Send what the records made, now if the socket takes it, else when writable."""
        if self._lost:
            return
        if not self._writer:
            self._flush()
            if self._lost:
                return
            if _tls.pending(self._ssl):
                self._want_write()
        self._check_high()

    def _flush(self) -> None:
        try:
            _tls.flush(self._ssl, self._fd)
        except OSError as exc:
            self._force_close(exc)

    def _write_failed(self, status: int) -> None:
        """SSL_write_ex failed for good (a fatal alert before, or a renegotiation refused)."""
        try:
            self._sslobj.write(b"")
        except (ssl.SSLError, OSError) as exc:
            self._force_close(exc)
            return
        self._force_close(ssl.SSLError(status, "TLS write failed"))

    def _want_write(self) -> None:
        if not self._writer and not self._lost:
            self._loop.add_writer(self._fd, self._write_ready)
            self._writer = True

    def _stop_writing(self) -> None:
        if self._writer:
            self._loop.remove_writer(self._fd)
            self._writer = False

    def _write_ready(self) -> None:
        self._flush()
        if self._lost:
            return
        if not _tls.pending(self._ssl):
            self._stop_writing()
            if self._closing:  # before the protocol hears of it: it may write and close again
                self._shutdown(None)
                return
            self._check_low()
            return
        self._check_low()

    def _check_high(self) -> None:
        if not self._write_paused and self.get_write_buffer_size() > self._high:
            self._write_paused = True
            self._call_protocol("pause_writing")

    def _check_low(self) -> None:
        if self._write_paused and self.get_write_buffer_size() <= self._low:
            self._write_paused = False
            self._call_protocol("resume_writing")

    def _call_protocol(self, name: str) -> None:
        try:
            getattr(self._protocol, name)()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler(
                {"message": f"protocol.{name}() failed", "exception": exc, "transport": self}
            )

    # -- ending -------------------------------------------------------------------------------
    def _shutdown(self, exc: BaseException | None) -> None:
        """All written: send close_notify (never waiting for the peer's), then close. A send
        buffer still full from the last data cannot take the alert at once: it waits for
        writability (_write_ready comes back here), else the peer would see a truncation."""
        if self._lost:
            return
        if not self._notified:
            self._notified = True
            # best effort: a failing close_notify (a sealing error) still closes
            with contextlib.suppress(OSError, ValueError, RuntimeError, MemoryError):
                _tls.close_notify(self._ssl)
                _tls.flush(self._ssl, self._fd)
            if not self._lost and self.get_write_buffer_size():
                self._stop_reading()  # level-triggered: unread bytes would spin the loop
                self._want_write()
                _closing_now[id(self)] = (self._loop, self)
                return
        self._force_close(exc, linger=True)

    def _force_close(self, exc: BaseException | None, linger: bool = False) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        _closing_now.pop(id(self), None)
        if self._read_soon is not None:
            self._read_soon.cancel()
            self._read_soon = None
        self._stop_writing()
        self._ssl = 0  # the ciphertext not sent is freed with the SSL object
        if linger:
            _linger(self._loop, self._sock, self._reader)  # takes the reader over
            self._reader = False
        else:
            self._stop_reading()
        self._loop.call_soon(self._connection_lost, exc, linger)

    def _connection_lost(self, exc: BaseException | None, linger: bool) -> None:
        try:
            self._protocol.connection_lost(exc)  # type: ignore[arg-type]
        finally:
            self._sslobj = None
            if not linger:
                self._sock.close()


def _linger(loop: asyncio.AbstractEventLoop, sock: socket.socket, registered: bool) -> None:
    """Half-close `sock` and read (discarding) until the peer's FIN, then close it; at most
    LINGER seconds and LINGER_BYTES. A socket closed with unread bytes in its receive queue (a
    session ticket, a reply in flight) makes the kernel send RST instead of FIN, and an RST
    makes the peer's kernel drop what it received but had not read yet: our last bytes."""
    fd = sock.fileno()
    _forget_ended_loops()
    try:
        if len(_lingering) >= LINGER_MAX:  # a peer slow to end many connections: no fd exhaustion
            raise OSError("too many lingering sockets")
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        if registered:
            loop.remove_reader(fd)
        sock.close()
        return
    _lingering[fd] = (loop, sock)
    budget = LINGER_BYTES
    timer: asyncio.TimerHandle | None = None

    def finish() -> None:
        _lingering.pop(fd, None)
        loop.remove_reader(fd)
        if timer is not None:
            timer.cancel()
        sock.close()

    def readable() -> None:
        nonlocal budget
        buf = _scratch()
        for _ in range(READ_ROUNDS):
            try:
                n = sock.recv_into(buf)  # ciphertext, not decrypted
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                finish()
                return
            budget -= n
            if n == 0 or budget <= 0:
                finish()
                return

    loop.add_reader(fd, readable)  # replaces the transport's callback when `registered`
    timer = loop.call_later(LINGER, finish)


def _close_lingering(owned: Callable[[asyncio.AbstractEventLoop], bool]) -> None:
    """Close the lingering sockets whose loop `owned` picks (an entry another thread took
    meanwhile is left to it)."""
    for fd, (loop, sock) in list(_lingering.items()):
        if owned(loop) and _lingering.get(fd, (None, None))[1] is sock:
            _lingering.pop(fd, None)
            if not loop.is_closed():
                loop.remove_reader(fd)
            sock.close()


def _forget_ended_loops() -> None:
    """Entries of loops that ended meanwhile: their callbacks never run."""
    _close_lingering(lambda loop: loop.is_closed())
    for key, (loop, _transport) in list(_closing_now.items()):
        if loop.is_closed():
            _closing_now.pop(key, None)


def _busy(loop: asyncio.AbstractEventLoop) -> bool:
    entries = [*_lingering.values(), *_closing_now.values()]
    return any(owner is loop for owner, _ in entries)


async def lingering_done(timeout: float = LINGER_AT_EXIT) -> None:
    """Wait, at most `timeout` seconds, for this loop's closed connections that still send
    their queue and close_notify, or still read until their peer's FIN (see _linger). A loop
    that ends first drops the queue, and closes with unread bytes (a session ticket): that
    sends RST, and the peer may drop the last bytes we sent. At the timeout this loop's
    lingering sockets are closed (nothing would close them once the loop is gone)."""
    _forget_ended_loops()
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end and _busy(loop):
        await asyncio.sleep(0.01)
    _close_lingering(lambda owner: owner is loop)


async def _connect(loop: asyncio.AbstractEventLoop, sock: socket.socket, address: Any) -> None:
    """Non-blocking connect of `sock` to a resolved `address`. The loops' sock_connect costs
    twice as much CPU per connection (300 against 160 us here: it resolves the address again
    and wraps the socket), which counts when ws-channel dials once per local connection.
    Fails as the loops' create_connection words it ("Connection refused")."""
    code = sock.connect_ex(address)
    if code in (errno.EINPROGRESS, errno.EINTR):
        await _ready(loop, sock.fileno(), writable=True)
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code:
        raise OSError(code, os.strerror(code))


async def connect_tcp(host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket with TCP_NODELAY: each address in turn, failing as
    the loops' create_connection fails (one error, or "Multiple exceptions: ...")."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError("getaddrinfo() returned empty list")
    errors: list[OSError] = []
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await _connect(loop, sock, address)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    if len(errors) == 1 or all(str(e) == str(errors[0]) for e in errors):
        raise errors[0]
    raise OSError("Multiple exceptions: " + ", ".join(str(e) for e in errors))


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, writable: bool) -> None:
    waiter: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    add: Callable[..., None] = loop.add_writer if writable else loop.add_reader
    remove: Callable[[int], bool] = loop.remove_writer if writable else loop.remove_reader
    add(fd, wake)
    try:
        await waiter
    finally:
        remove(fd)


async def _handshake(loop: asyncio.AbstractEventLoop, sslobj: Any, fd: int) -> None:
    """Shake hands without blocking. One reader registration for every round (it is left in
    place for the transport: each add/remove pair costs uvloop a poll handle, an ioctl and
    epoll_ctl calls, per connection, which a ws-channel client pays per local connection)."""
    waiter: asyncio.Future[None] | None = None

    def wake() -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    loop.add_reader(fd, wake)
    for _ in range(1000):  # a handshake is a few round trips; bounded all the same
        try:
            sslobj.do_handshake()
            return
        except ssl.SSLWantReadError:
            waiter = loop.create_future()
            await waiter
        except ssl.SSLWantWriteError:
            await _ready(loop, fd, writable=True)
    raise ssl.SSLError("TLS handshake did not finish")


async def open_tls(
    sock: socket.socket,
    ctx: ssl.SSLContext,
    server_hostname: str | None,
    protocol: asyncio.BaseProtocol,
) -> TlsTransport:
    """Shake hands on the connected socket `sock` (taken over: closed on failure) and start a
    TlsTransport for `protocol` (connection_made is called). Raises what the handshake raised
    (ssl.SSLCertVerificationError, ssl.SSLError, OSError); a caller's timeout cancels it."""
    if not available(ctx):  # available(ctx) also proves the layout once
        sock.close()
        raise RuntimeError("TLS over the socket BIO is not available here")
    loop = asyncio.get_running_loop()
    fd = sock.fileno()
    registered = False
    try:
        sock.setblocking(False)
        _tls.capture_secrets(ctx)  # bulk writes seal their own records (fastpf._tls.encrypt)
        sslobj = _wrap(ctx, sock, server_hostname)
        session = getattr(ctx, "offered_session", None)  # client.tlsconfig.ResumingContext
        if session is not None:
            try:
                sslobj.session = session
            except (ValueError, ssl.SSLError):  # a session OpenSSL will not take: go without
                ctx.forget_session()  # type: ignore[attr-defined]
        ssl_ptr = _ssl_pointer(sslobj, sock, ctx)
        if not ssl_ptr:
            raise RuntimeError("unexpected layout of Python's SSL socket")
        _tls.prepare(ssl_ptr, READ_AHEAD_BUFFER)
        if getattr(ctx, "_msg_callback", None) is None:  # one message callback per connection
            _tls.watch_reads(ssl_ptr)  # bulk reads open their own records (_tls.read_into)
        registered = True
        await _handshake(loop, sslobj, fd)
        _tls.refuse_renegotiation(ssl_ptr)
        _tls.attach_writer(ssl_ptr)
    except BaseException:
        if registered:
            loop.remove_reader(fd)
        sock.close()
        raise
    transport = TlsTransport(loop, sock, sslobj, ssl_ptr, protocol, reader_registered=True)
    try:
        transport._start()
    except BaseException:
        transport.abort()  # the registration and the socket go with it
        raise
    return transport
