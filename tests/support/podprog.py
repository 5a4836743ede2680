"""A pod's programs for the traffic-pattern tests, run as their own process (as a pod's would).

    python tests/support/podprog.py HOST SEED

Listens on HOST with OS-chosen ports and prints one JSON line {"source": P, "reply": P, "sized": P} once
ready. Plain blocking sockets, one thread per connection, like a simple server in a pod:
  source: reads one line "N\\n", sends N bytes of the seeded pattern, then closes (a download
          that ends with the pod's close: the client must see EOF).
  reply:  reads to EOF, answers "COUNT SHA256HEX\\n", then closes (request / half-close /
          reply).
  sized:  reads one line "N\\n", then to EOF, then sends N pattern bytes and closes (a
          request, a half-close, then a large reply).
Exits when its stdin closes (the test's end), so it never outlives the test.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import sys
import threading

BLOCK = 1 << 20


def pattern_block(seed: int) -> bytes:
    return random.Random(seed).randbytes(BLOCK)


def _read_line(conn: socket.socket) -> int | None:
    """The request "N\\n" (None: the client left first)."""
    line = b""
    while not line.endswith(b"\n") and len(line) < 64:
        chunk = conn.recv(1)
        if not chunk:
            return None
        line += chunk
    return int(line)


def _send_pattern(conn: socket.socket, block: bytes, left: int) -> None:
    view = memoryview(block)
    while left > 0:
        n = min(left, BLOCK)
        conn.sendall(view[:n])
        left -= n


def _source(conn: socket.socket, block: bytes) -> None:
    with conn:
        n = _read_line(conn)
        if n is not None:
            _send_pattern(conn, block, n)


def _reply(conn: socket.socket, block: bytes) -> None:
    with conn:
        h = hashlib.sha256()
        count = 0
        buf = bytearray(1 << 16)
        for _ in range(1 << 24):  # bounded: 1 TiB at 64 KiB a read
            k = conn.recv_into(buf)
            if not k:
                break
            h.update(memoryview(buf)[:k])
            count += k
        conn.sendall(f"{count} {h.hexdigest()}\n".encode())


def _sized(conn: socket.socket, block: bytes) -> None:
    with conn:
        n = _read_line(conn)
        if n is None:
            return
        for _ in range(1 << 24):  # bounded: to EOF
            if not conn.recv(1 << 16):
                break
        _send_pattern(conn, block, n)


def _serve(sock: socket.socket, handler: object, block: bytes) -> None:
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        threading.Thread(target=handler, args=(conn, block), daemon=True).start()  # type: ignore[arg-type]


def main() -> None:
    host, seed = sys.argv[1], int(sys.argv[2])
    block = pattern_block(seed)
    ports = {}
    for name, handler in (("source", _source), ("reply", _reply), ("sized", _sized)):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((host, 0))
        sock.listen(256)
        ports[name] = sock.getsockname()[1]
        threading.Thread(target=_serve, args=(sock, handler, block), daemon=True).start()
    print(json.dumps(ports), flush=True)
    sys.stdin.read()  # the test closes our stdin (or dies): then we go


if __name__ == "__main__":
    main()
