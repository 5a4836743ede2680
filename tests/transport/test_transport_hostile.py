"""Malformed / hostile peers on both sides: the bad session gets GOAWAY or WS close 1002 and is
dropped, nothing raises into the event loop, other sessions keep working. Plus the client's
handshake error texts and the "auto" fallback."""

from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Any

import pytest

from fastpf import _frames as F
from fastpf.errors import HandshakeError, ProtocolError
from fastpf.transport import handshake, spdy, upgrade
from fastpf.transport.spdy import SpdyConnection
from fastpf.types import ApiDialer
from tests.support.patterns import pattern
from tests.support.targets import Target, echo_handler
from tests.support.transport_harness import LOOPS, PATH, ApiServer, Forward, connect, run


def _catch_loop_errors() -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    return errors


async def _raw_upgrade(
    port: int, protocol: str, ports: list[int] | None = None
) -> tuple[Any, Any, bytes]:
    """Open a raw upgraded connection; returns (reader, writer, bytes after the 101 head)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if protocol == "spdy":
        _, raw = handshake.spdy_request("127.0.0.1", PATH, [])
    elif protocol == "websocket":
        _, raw, _ = handshake.websocket_request("127.0.0.1", PATH, [handshake.TUNNEL_PROTOCOL], [])
    else:
        query = "?ports=" + ",".join(str(p) for p in ports or [1])
        _, raw, _ = handshake.websocket_request(
            "127.0.0.1", PATH + query, [handshake.CHANNEL_V4], []
        )
    writer.write(raw)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101 ")
    return reader, writer, b""


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), 5)


def _spdy_frames(data: bytes) -> list[Any]:
    dec = F.SpdyDecoder()
    dec.feed(data)
    frames = []
    for _ in range(1000):
        f = dec.next_frame()
        if f is None:
            break
        frames.append(f)
    return frames


def _ws_frames(data: bytes) -> list[Any]:
    dec = F.WsDecoder(expect_masked=False)
    dec.feed(data)
    out = []
    for _ in range(1000):
        f = dec.next_frame()
        if f is None:
            break
        out.append((f.opcode, bytes(f.payload)))
    return out


async def _good_echo(srv: ApiServer, target: Target, protocol: str) -> None:
    conn = await connect(srv, protocol, [target.port])
    fw = await Forward.open(conn, target.port, 0)
    data = pattern(256 << 10, 5)
    fw.writer.write(data)
    got = await asyncio.wait_for(fw.reader.readexactly(len(data)), 5)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    fw.writer.close()
    await asyncio.wait_for(fw.relay_task, 5)
    if isinstance(conn, SpdyConnection):
        conn.goaway()
    else:
        conn.close()


GARBAGE = {
    "unknown control type": bytes.fromhex("8003000500000000"),
    "ping with id 0": bytes.fromhex("800300060000000400000000"),
    "goaway bad length": bytes.fromhex("8003000700000004000000000"[:24]),
    "syn_stream bad zlib": bytes.fromhex("800300010000000c000000010000000000001234"),
    "data on stream 0": bytes.fromhex("0000000000000004") + b"abcd",
    "all ones": b"\xff" * 64,
}


@pytest.mark.parametrize("loop_kind", LOOPS)
@pytest.mark.parametrize("garbage", list(GARBAGE))
def test_spdy_garbage_goaway_and_others_survive(garbage: str, loop_kind: str) -> None:
    async def body() -> None:
        errors = _catch_loop_errors()
        async with Target(echo_handler) as t, ApiServer() as srv:
            good = await connect(srv, "spdy", [t.port])
            fw = await Forward.open(good, t.port, 0)
            reader, writer, _ = await _raw_upgrade(srv.port, "spdy")
            writer.write(GARBAGE[garbage])
            answer = await _read_all(reader)  # the server closes after its GOAWAY
            frames = _spdy_frames(answer)
            assert (
                frames
                and frames[-1].type == F.GOAWAY
                and frames[-1].status == F.GOAWAY_PROTOCOL_ERROR
            )
            writer.close()
            # the established session and new ones still work
            fw.writer.write(b"ping")
            assert await asyncio.wait_for(fw.reader.readexactly(4), 5) == b"ping"
            fw.writer.close()
            await _good_echo(srv, t, "spdy")
            good.goaway()
        assert not errors

    run(body, loop_kind)


@pytest.mark.parametrize("loop_kind", LOOPS)
@pytest.mark.parametrize("protocol", ["websocket", "ws-channel"])
@pytest.mark.parametrize("case", ["unmasked", "bad opcode", "garbage payload"])
def test_websocket_garbage_close_1002(protocol: str, case: str, loop_kind: str) -> None:
    async def body() -> None:
        errors = _catch_loop_errors()
        async with Target(echo_handler) as t, ApiServer() as srv:
            reader, writer, _ = await _raw_upgrade(srv.port, protocol, [t.port])
            if case == "unmasked":
                writer.write(F.ws_encode(F.WS_BINARY, b"\x00abc", True, False))
            elif case == "bad opcode":
                writer.write(b"\x83\x80\x00\x00\x00\x00")
            else:  # well-formed WS carrying garbage for the inner protocol
                inner = GARBAGE["unknown control type"] if protocol == "websocket" else b"\x63xyz"
                writer.write(F.ws_encode(F.WS_BINARY, inner, True, True))
            answer = await _read_all(reader)
            frames = _ws_frames(answer)
            assert frames and frames[-1][0] == F.WS_CLOSE
            code, _ = F.parse_close_payload(frames[-1][1])
            assert code == 1002
            if protocol == "websocket" and case == "garbage payload":
                inner_frames = _spdy_frames(b"".join(p for op, p in frames if op == F.WS_BINARY))
                assert inner_frames[-1].type == F.GOAWAY
            writer.close()
            await _good_echo(srv, t, protocol)
        assert not errors

    run(body, loop_kind)


def test_spdy_stream_id_rules_and_ping_parity() -> None:
    async def body() -> None:
        async with ApiServer() as srv:
            reader, writer, _ = await _raw_upgrade(srv.port, "spdy")
            enc = F.SpdyEncoder()
            writer.write(enc.ping(1))  # client parity: echoed
            writer.write(enc.ping(2))  # server parity: treated as a reply, not echoed
            writer.write(enc.syn_stream(5, {"streamtype": "error", "port": "80", "requestid": "0"}))
            writer.write(enc.syn_stream(3, {"streamtype": "data", "port": "80", "requestid": "0"}))
            writer.write(enc.goaway(0))
            frames = _spdy_frames(await _read_all(reader))
            kinds = [
                (f.type, f.stream_id, f.ping_id if f.type == F.PING else f.status) for f in frames
            ]
            assert (F.PING, 0, 1) in kinds
            assert not any(k[0] == F.PING and k[2] == 2 for k in kinds)
            assert (F.SYN_REPLY, 5, 0) in kinds
            assert (F.RST_STREAM, 3, F.RST_PROTOCOL_ERROR) in kinds  # lower id than before
            writer.close()

    run(body, "uvloop")


class _Canned(asyncio.Protocol):
    def __init__(self, answers: list[bytes]) -> None:
        self.answers = answers

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if b"\r\n\r\n" in data and self.answers:
            self.transport.write(self.answers.pop(0))
            self.transport.close()


async def _canned(answers: list[bytes]) -> tuple[asyncio.Server, int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Canned(answers), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nno access \n\n",
            "error upgrading connection: unable to upgrade connection: no access",
        ),
        (
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: 76\r\n\r\n"
            b'{"kind":"Status","apiVersion":"v1","status":"Failure","message":"forbidden"}',
            "error upgrading connection: forbidden",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n",
            'unable to negotiate protocol: client supports "portforward.k8s.io", server returned ""',
        ),
    ],
)
def test_client_handshake_errors(answer: bytes, message: str) -> None:
    async def body() -> None:
        server, port = await _canned([answer])
        with pytest.raises(HandshakeError) as info:
            await upgrade.connect(ApiDialer("127.0.0.1", port), PATH, "spdy", [])
        assert str(info.value) == message
        server.close()

    run(body, "uvloop")


def test_auto_falls_back_to_spdy() -> None:
    async def body() -> None:
        async with Target(echo_handler) as t, ApiServer() as srv:
            orig = srv.requests

            # a front server that refuses WebSocket (400) and proxies nothing else
            class Front(asyncio.Protocol):
                def connection_made(self, transport: Any) -> None:
                    self.transport = transport
                    self.buf = b""
                    self.peer: Any = None

                def data_received(self, data: bytes) -> None:
                    if self.peer is not None:
                        self.peer.write(data)
                        return
                    self.buf += data
                    if b"\r\n\r\n" not in self.buf:
                        return
                    if b"websocket" in self.buf.lower():
                        self.transport.write(
                            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\nno\n"
                        )
                        self.transport.close()
                        return
                    asyncio.get_running_loop().create_task(self._proxy())

                async def _proxy(self) -> None:
                    r, w = await asyncio.open_connection("127.0.0.1", srv.port)
                    self.peer = w
                    w.write(self.buf)
                    for _ in range(1 << 20):
                        chunk = await r.read(1 << 16)
                        if not chunk:
                            break
                        self.transport.write(chunk)
                    self.transport.close()

                def connection_lost(self, exc: Exception | None) -> None:
                    if self.peer is not None:
                        self.peer.close()

            loop = asyncio.get_running_loop()
            front = await loop.create_server(Front, "127.0.0.1", 0)
            fport = front.sockets[0].getsockname()[1]
            conn = await upgrade.connect(ApiDialer("127.0.0.1", fport), PATH, "auto", [])
            assert conn.negotiated == "spdy"  # type: ignore[union-attr]
            assert orig[-1].method == "POST"
            fw = await Forward.open(conn, t.port, 0)
            fw.writer.write(b"hi")
            assert await asyncio.wait_for(fw.reader.readexactly(2), 5) == b"hi"
            fw.writer.close()
            await asyncio.wait_for(fw.relay_task, 5)
            assert isinstance(conn, SpdyConnection)
            conn.goaway()
            front.close()

    run(body, "uvloop")


def test_auto_uses_websocket_when_offered() -> None:
    async def body() -> None:
        async with ApiServer() as srv:
            conn = await upgrade.connect(srv.dialer, PATH, "auto", [])
            assert conn.negotiated == "websocket"  # type: ignore[union-attr]
            assert srv.requests[-1].method == "GET"
            assert isinstance(conn, SpdyConnection) and conn.tunnel == "ws-client"
            conn.goaway()

    run(body, "uvloop")


def test_client_survives_garbage_from_server() -> None:
    """A server that sends garbage after a valid 101: the client session ends with a
    protocol error result, nothing raises into the loop."""

    async def body() -> None:
        errors = _catch_loop_errors()
        answer = (
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
            b"X-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n"
            + GARBAGE["unknown control type"]
        )
        loop = asyncio.get_running_loop()

        class Srv(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                self.transport = transport

            def data_received(self, data: bytes) -> None:
                self.transport.write(answer)

        server = await loop.create_server(Srv, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = await upgrade.connect(ApiDialer("127.0.0.1", port), PATH, "spdy", [])
        result = await asyncio.wait_for(conn.wait_closed(), 5)
        assert result is not None and "control" in str(result).lower() or result is not None
        server.close()
        assert not errors

    run(body, "uvloop")


def test_dialer_open_socket_and_base_path() -> None:
    """ApiDialer.open_socket (proxy tunnels) supplies the connected socket; base_path prefixes
    the request path."""

    async def body() -> None:
        async with Target(echo_handler) as t, ApiServer() as srv:
            opened: list[int] = []

            async def open_socket() -> Any:
                import socket as _socket

                sock = _socket.socket()
                sock.setblocking(False)
                await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", srv.port))
                opened.append(1)
                return sock

            dialer = ApiDialer(
                "api.invalid", 6443, open_socket=open_socket, base_path="/k8s/clusters/c-1"
            )
            conn = await upgrade.connect(dialer, PATH, "spdy", [])
            assert opened == [1]
            assert srv.requests[-1].path == "/k8s/clusters/c-1" + PATH
            assert srv.requests[-1].header("host") == "api.invalid:6443"
            fw = await Forward.open(conn, t.port, 0)
            fw.writer.write(b"x")
            assert await asyncio.wait_for(fw.reader.readexactly(1), 5) == b"x"
            fw.writer.close()
            await asyncio.wait_for(fw.relay_task, 5)
            assert isinstance(conn, SpdyConnection)
            conn.goaway()

    run(body, "uvloop")


def test_ping_timeout_detects_dead_peer() -> None:
    """A server that accepts the upgrade and then never answers: with ping_timeout the client
    session ends with a TimeoutError instead of hanging (kubectl would hang)."""

    async def body() -> None:
        answer = (
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
            b"X-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n"
        )
        loop = asyncio.get_running_loop()

        class Mute(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                self.transport = transport
                self.answered = False

            def data_received(self, data: bytes) -> None:
                if not self.answered:
                    self.answered = True
                    self.transport.write(answer)

        server = await loop.create_server(Mute, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = await upgrade.connect(
            ApiDialer("127.0.0.1", port), PATH, "spdy", [], ping_interval=0.05, ping_timeout=0.2
        )
        result = await asyncio.wait_for(conn.wait_closed(), 5)
        assert isinstance(result, TimeoutError)
        server.close()

    run(body, "uvloop")


# -- issue 10: absurd input ends a session at once; deadlines before data flows --------------


def _random_bytes(seed: int, n: int = 1 << 20) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes_after_the_upgrade_end_the_session_at_once(seed: int) -> None:
    """1 MiB of random bytes after a SPDY upgrade: half the time the first 8 bytes read as a
    DATA frame header of up to 16 MiB. The session used to wait for it (4 h idle timeout);
    DATA for a stream never opened, or a control frame of another version or type, now end
    it with GOAWAY(PROTOCOL_ERROR) at once."""

    async def body() -> None:
        async with ApiServer() as srv:
            reader, writer, _ = await _raw_upgrade(srv.port, "spdy")
            writer.write(_random_bytes(seed)[:65536])  # one read's worth: no RST race
            answer = await _read_all(reader)  # EOF within 5 s, or this times out
            frames = _spdy_frames(answer)
            assert frames and frames[-1].type == F.GOAWAY
            assert frames[-1].status == F.GOAWAY_PROTOCOL_ERROR
            writer.close()

    run(body, "uvloop")


def test_control_frame_of_another_version_is_a_protocol_error() -> None:
    async def body() -> None:
        async with ApiServer() as srv:
            reader, writer, _ = await _raw_upgrade(srv.port, "spdy")
            ping = bytearray(F.SpdyEncoder().ping(1))
            ping[1] = 2  # SPDY/2
            writer.write(bytes(ping))
            frames = _spdy_frames(await _read_all(reader))
            assert [(f.type, f.status) for f in frames] == [(F.GOAWAY, F.GOAWAY_PROTOCOL_ERROR)]
            writer.close()

    run(body, "uvloop")


def test_data_for_an_ended_stream_is_still_dropped_quietly() -> None:
    """Only streams that never existed are an error: DATA that was in flight when a stream
    ended is dropped, as spdystream does, and the session goes on."""

    async def body() -> None:
        async with ApiServer() as srv:
            reader, writer, _ = await _raw_upgrade(srv.port, "spdy")
            enc = F.SpdyEncoder()
            writer.write(enc.syn_stream(1, {"streamtype": "error", "port": "1", "requestid": "0"}))
            writer.write(enc.rst_stream(1, 5))
            writer.write(enc.data(1, b"late"))
            writer.write(enc.ping(3))
            dec = F.SpdyDecoder()
            for _ in range(100):
                dec.feed(await asyncio.wait_for(reader.read(65536), 5))
                frames = []
                for _ in range(100):
                    f = dec.next_frame()
                    if f is None:
                        break
                    frames.append(f)
                assert not any(f.type == F.GOAWAY for f in frames)
                if any(f.type == F.PING and f.ping_id == 3 for f in frames):
                    break
            writer.close()

    run(body, "uvloop")


def test_client_ends_a_session_of_random_bytes_at_once() -> None:
    async def body() -> None:
        errors = _catch_loop_errors()
        answer = (
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
            b"X-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n" + _random_bytes(3, 65536)
        )
        loop = asyncio.get_running_loop()

        class Srv(asyncio.Protocol):  # answers, then keeps the connection open
            def connection_made(self, transport: Any) -> None:
                self.transport = transport

            def data_received(self, data: bytes) -> None:
                if b"\r\n\r\n" in data:
                    self.transport.write(answer)

        server = await loop.create_server(Srv, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = await upgrade.connect(ApiDialer("127.0.0.1", port), PATH, "spdy", [])
        result = await asyncio.wait_for(conn.wait_closed(), 5)
        assert isinstance(result, ProtocolError)
        server.close()
        assert not errors

    run(body, "uvloop")


def test_server_ends_a_session_that_never_sends_a_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    """A half-open session (upgraded, then silent) is ended after the first-frame deadline
    (kubectl pings within 5 s; 10 s tunnelled)."""
    monkeypatch.setattr(spdy, "FIRST_FRAME_TIMEOUT", 0.3)

    async def body() -> None:
        async with ApiServer() as srv:
            reader, writer, _ = await _raw_upgrade(srv.port, "spdy")
            frames = _spdy_frames(await _read_all(reader))
            assert [(f.type, f.status) for f in frames] == [(F.GOAWAY, F.GOAWAY_OK)]
            writer.close()
            # a session that speaks in time is not touched by the deadline
            reader, writer, _ = await _raw_upgrade(srv.port, "spdy")
            writer.write(F.SpdyEncoder().ping(1))
            await asyncio.sleep(0.6)
            writer.write(F.SpdyEncoder().ping(3))
            got = await asyncio.wait_for(reader.readexactly(24), 5)
            assert [f.ping_id for f in _spdy_frames(got)] == [1, 3]
            writer.close()

    run(body, "uvloop")


def test_client_ends_a_session_whose_server_never_answers_its_pings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(spdy, "FIRST_FRAME_TIMEOUT", 0.3)

    async def body() -> None:
        answer = (
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
            b"X-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n"
        )
        loop = asyncio.get_running_loop()

        class Mute(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                self.transport = transport

            def data_received(self, data: bytes) -> None:
                if b"\r\n\r\n" in data:
                    self.transport.write(answer)

        server = await loop.create_server(Mute, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = await upgrade.connect(
            ApiDialer("127.0.0.1", port), PATH, "spdy", [], ping_interval=0.05
        )
        result = await asyncio.wait_for(conn.wait_closed(), 5)
        assert isinstance(result, TimeoutError)
        server.close()

    run(body, "uvloop")
