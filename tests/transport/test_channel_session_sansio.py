"""The sans-IO WebSocket channel session (v4.channel.k8s.io / base64) driven with bytes only,
both roles: port announcements, data and error channels, the end of the session."""

from __future__ import annotations

from typing import Any

import pytest

from fastpf import _frames as F
from fastpf.errors import WebSocketError
from fastpf.transport.channel_session import ChannelSession
from fastpf.transport.contract import Pipe
from fastpf.transport.ws_output import WsOutput


class Owner:
    def __init__(self) -> None:
        self.out = bytearray()
        self.ended: list[BaseException | None] = []
        self.announced_count = 0
        self.pongs = 0
        self.paused: set[object] = set()
        self.session: ChannelSession | None = None

    def emit(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def emit_parts(self, parts: list[Any], total: int) -> None:
        self.out += b"".join(bytes(p) for p in parts)

    def end(self, exc: BaseException | None) -> None:
        self.ended.append(exc)
        assert self.session is not None
        self.session.connection_lost(exc)

    def announced(self) -> None:
        self.announced_count += 1

    def ws_pong(self) -> None:
        self.pongs += 1

    def pause_input(self, key: object) -> None:
        self.paused.add(key)

    def resume_input(self, key: object) -> None:
        self.paused.discard(key)

    def messages(self, masked: bool) -> list[tuple[int, bytes]]:
        dec = F.WsDecoder(expect_masked=masked)
        dec.feed(bytes(self.out))
        self.out = bytearray()
        out: list[tuple[int, bytes]] = []
        for _ in range(1000):
            f = dec.next_frame()
            if f is None:
                assert dec.error is None
                return out
            out.append((f.opcode, bytes(f.payload)))
        raise AssertionError("too many messages")


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.lost: list[BaseException | None] = []

    def data_received(self, view: memoryview) -> None:
        self.data += view

    def eof_received(self) -> None: ...
    def reset_received(self, status: int) -> None: ...

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)

    def drained(self) -> bool:
        return True


def make(client: bool, ports: list[int], base64: bool = False) -> tuple[ChannelSession, Owner]:
    owner = Owner()
    ws = WsOutput(client, owner.emit, owner.emit_parts)
    s = ChannelSession(owner, client=client, ports=ports, base64=base64, ws=ws)
    owner.session = s
    return s, owner


def from_server(channel: int, payload: bytes, base64: bool = False) -> bytes:
    opcode, msg = F.channel_encode(channel, payload, base64)
    return F.ws_encode(opcode, msg)


def from_client(channel: int, payload: bytes) -> bytes:
    opcode, msg = F.channel_encode(channel, payload, False)
    return F.ws_encode(opcode, msg, True, True)


@pytest.mark.parametrize("base64", [False, True])
def test_server_announcements_are_what_the_client_expects(base64: bool) -> None:
    srv, _ = make(False, [8080, 9999], base64)
    cli, owner = make(True, [8080, 9999], base64)
    assert srv.ready and not cli.ready
    cli.feed(srv.announcements())
    assert cli.ready and owner.announced_count == 1 and not owner.ended


def test_client_data_error_and_session_end() -> None:
    cli, owner = make(True, [8080])
    cli.feed(
        from_server(0, (8080).to_bytes(2, "little")) + from_server(1, (8080).to_bytes(2, "little"))
    )
    port = cli.channels[0]
    sink = Sink()
    port.set_sink(sink)
    cli.feed(from_server(0, b"hello") + from_server(1, b"refused"))
    assert bytes(sink.data) == b"hello" and bytes(port.error_text) == b"refused"
    port.write(b"up")
    assert owner.messages(True) == [(F.WS_BINARY, b"\x00up")]
    cli.feed(F.ws_encode(F.WS_CLOSE, F.ws_close_payload(1000)))
    assert owner.ended == [None] and sink.lost == [None] and port.remote_closed
    assert owner.messages(True)[0][0] == F.WS_CLOSE  # the close is answered


def test_client_rejects_a_wrong_announcement() -> None:
    cli, owner = make(True, [8080])
    cli.feed(from_server(0, (81).to_bytes(2, "little")))
    assert len(owner.ended) == 1 and isinstance(owner.ended[0], WebSocketError)
    assert owner.messages(True) == [(F.WS_CLOSE, F.ws_close_payload(1002))]


def test_server_reads_the_data_channel_and_ignores_error_channel_writes() -> None:
    srv, owner = make(False, [80])
    sink = Sink()
    srv.channels[0].set_sink(sink)
    srv.feed(from_client(0, b"req") + from_client(1, b"ignored"))
    assert bytes(sink.data) == b"req" and not owner.ended
    srv.channels[0].write_error("boom")
    assert owner.messages(False) == [(F.WS_BINARY, b"\x01boom")]


def test_invalid_channel_closes_with_1002() -> None:
    srv, owner = make(False, [80])
    srv.feed(from_client(4, b"x"))
    assert len(owner.ended) == 1 and srv.ended
    assert owner.messages(False) == [(F.WS_CLOSE, F.ws_close_payload(1002))]


def test_every_port_finished_closes_the_session_with_1000() -> None:
    srv, owner = make(False, [80, 81])
    srv.channels[0].write_eof()
    assert not owner.ended
    srv.channels[1].reset()
    assert owner.ended == [None]
    assert owner.messages(False) == [(F.WS_CLOSE, F.ws_close_payload(1000))]


def test_unread_data_is_buffered_then_handed_over() -> None:
    srv, owner = make(False, [80])
    srv.feed(from_client(0, b"ab") + from_client(0, b"cd"))
    sink = Sink()
    srv.channels[0].set_sink(sink)
    assert bytes(sink.data) == b"abcd"


def test_ping_is_answered_and_pong_reported() -> None:
    srv, owner = make(False, [80])
    srv.feed(F.ws_encode(F.WS_PING, b"hi", True, True) + F.ws_encode(F.WS_PONG, b"", True, True))
    assert owner.messages(False) == [(F.WS_PONG, b"hi")] and owner.pongs == 1


def test_text_on_a_binary_session_is_refused() -> None:
    srv, owner = make(False, [80])
    srv.feed(F.ws_encode(F.WS_TEXT, b"0aGk=", True, True))
    assert len(owner.ended) == 1 and owner.messages(False)[0][0] == F.WS_CLOSE


def header_room_of(pipe: Pipe) -> int:
    return pipe.header_room  # mypy checks a ChannelPort is a Pipe where this is called


def test_a_port_is_a_pipe() -> None:
    srv, _ = make(False, [80])
    assert header_room_of(srv.channels[0]) == 15  # WS header room + the channel byte
