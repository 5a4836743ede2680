"""TLS for the upgraded (bulk) connection, done by a pump thread instead of the event loop.

Why: the loop's TLS (asyncio/uvloop SSLProtocol) runs OpenSSL through memory BIOs, which costs
several copies per byte plus a Python call per 16 KiB record, all on the loop thread that also
relays the data. Here one thread drives a non-blocking `ssl.SSLSocket` straight on the TCP
socket (OpenSSL reads/writes the kernel socket itself; the GIL is released for the crypto and
the syscalls) and shuttles plaintext through a socketpair. The engine speaks plaintext HTTP/1.1
+ SPDY/WebSocket on the other end of that pair, as if TLS were not there.

One thread per upgraded connection, bounded buffers both ways (back-pressure by not reading),
close/EOF passed through. SSL objects are used by this thread only (OpenSSL forbids concurrent
use), so both directions share one selector loop.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import threading

CHUNK = 256 * 1024
LIMIT = 4 << 20  # pending bytes per direction before we stop reading its source
IDLE_SELECT = 5.0


def _set_buffers(sock: socket.socket) -> None:
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, 1 << 20)


def start_bridge(tls: ssl.SSLSocket) -> socket.socket:
    """`tls`: a connected SSLSocket whose handshake is done. Returns the plaintext end (a
    non-blocking socket) for the caller; the pump thread owns `tls` and closes it at the end."""
    inner, outer = socket.socketpair()
    for s in (inner, outer):
        _set_buffers(s)
    inner.setblocking(False)
    outer.setblocking(False)
    tls.setblocking(False)
    th = threading.Thread(target=_pump_guarded, args=(tls, inner), name="fastpf-tls", daemon=True)
    th.start()
    return outer


def _pump_guarded(tls: ssl.SSLSocket, inner: socket.socket) -> None:
    try:
        _pump(tls, inner)
    except Exception:  # noqa: BLE001 - any failure ends this connection, never the process
        pass
    finally:
        with contextlib.suppress(OSError):
            inner.close()
        with contextlib.suppress(OSError):
            tls.close()


def _pump(tls: ssl.SSLSocket, inner: socket.socket) -> None:
    buf = bytearray(CHUNK)
    mv = memoryview(buf)
    down = bytearray()  # decrypted, not yet written to `inner`
    up = bytearray()  # from `inner`, not yet encrypted
    up_inflight = 0  # length of an SSL_write that returned WANT_*: retry with the same bytes
    tls_eof = False
    inner_eof = False
    inner_shut = False
    tls_want_write_on_read = False
    sel = selectors.DefaultSelector()
    sel.register(tls, selectors.EVENT_READ)
    sel.register(inner, selectors.EVENT_READ)
    try:
        for _ in range(1 << 62):  # for the life of the connection
            progressed = False
            # ---- server -> engine ------------------------------------------------------------
            if not tls_eof and len(down) < LIMIT:
                # Gather many 16 KiB records into one buffer, then one send() to the engine.
                filled = 0
                for _ in range(64):
                    if filled >= CHUNK:
                        break
                    try:
                        n = tls.recv_into(mv[filled:], CHUNK - filled)
                    except ssl.SSLWantReadError:
                        break
                    except ssl.SSLWantWriteError:
                        tls_want_write_on_read = True
                        break
                    except (ssl.SSLZeroReturnError, ssl.SSLEOFError, ConnectionError):
                        n = 0
                    tls_want_write_on_read = False
                    if n == 0:
                        tls_eof = True
                        break
                    filled += n
                if filled:
                    progressed = True
                    if not down:
                        try:
                            k = inner.send(mv[:filled])
                        except BlockingIOError:
                            k = 0
                        if k < filled:
                            down += mv[k:filled]
                    else:
                        down += mv[:filled]
            if down:
                try:
                    k = inner.send(down)
                except BlockingIOError:
                    k = 0
                if k:
                    del down[:k]  # O(1): CPython bytearrays trim their front in place
                    progressed = True
            if tls_eof and not down and not inner_shut:
                inner_shut = True
                with contextlib.suppress(OSError):
                    inner.shutdown(socket.SHUT_WR)
            # ---- engine -> server --------------------------------------------------------------
            if not inner_eof and len(up) < LIMIT:
                try:
                    n = inner.recv_into(mv, CHUNK)
                except BlockingIOError:
                    n = -1
                except ConnectionError:
                    n = 0
                if n == 0:
                    inner_eof = True
                elif n > 0:
                    up += mv[:n]
                    progressed = True
            for _ in range(16):
                if not up:
                    break
                length = up_inflight or min(len(up), CHUNK)
                try:
                    k = tls.send(memoryview(up)[:length])
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                    up_inflight = length
                    break
                up_inflight = 0
                del up[:k]
                progressed = True
            if inner_eof and not up:
                return  # the engine closed the connection: done (closing tls in the guard)
            if tls_eof and inner_shut and inner_eof:
                return
            if progressed:
                continue
            tls_events = 0
            if (not tls_eof and len(down) < LIMIT) and not tls_want_write_on_read:
                tls_events |= selectors.EVENT_READ
            if up or tls_want_write_on_read:
                tls_events |= selectors.EVENT_WRITE
            inner_events = 0
            if not inner_eof and len(up) < LIMIT:
                inner_events |= selectors.EVENT_READ
            if down:
                inner_events |= selectors.EVENT_WRITE
            _modify(sel, tls, tls_events)
            _modify(sel, inner, inner_events)
            sel.select(IDLE_SELECT)
    finally:
        sel.close()


def _modify(sel: selectors.BaseSelector, sock: socket.socket, events: int) -> None:
    key = sel.get_map().get(sock.fileno())
    if events == 0:
        if key is not None:
            sel.unregister(sock)
        return
    if key is None:
        sel.register(sock, events)
    elif key.events != events:
        sel.modify(sock, events)
