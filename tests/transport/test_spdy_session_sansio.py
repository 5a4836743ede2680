"""The sans-IO SPDY session driven with bytes only (no event loop), in both roles, raw and
tunnelled in WebSocket: open / reply / data / FIN / RST / PING / GOAWAY / unknown streams /
half-close, and what the stream table decides for each."""

from __future__ import annotations

from typing import Any

import pytest

from fastpf import _frames as F
from fastpf.errors import SpdySessionError, StreamStateError
from fastpf.transport.contract import Pipe
from fastpf.transport.contract import Sink as SinkContract
from fastpf.transport.spdy import SessionClosedError, StreamResetError
from fastpf.transport.spdy_session import SessionStream, SpdySession
from fastpf.transport.stream_machine import StreamState
from fastpf.transport.ws_output import WsOutput

PEER = F.SpdyEncoder()  # the peer's frames; a fresh one per test (zlib state per connection)


@pytest.fixture(autouse=True)
def _fresh_peer() -> None:
    global PEER
    PEER = F.SpdyEncoder()


class Owner:
    """Records what a session asks of its owner; ending calls back as the adapter does."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.ended: list[BaseException | None] = []
        self.replies: list[tuple[int, BaseException | None]] = []
        self.pongs = 0
        self.trims = 0
        self.paused: set[object] = set()
        self.session: SpdySession | None = None
        self.now = 100.0

    def emit(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def emit_parts(self, parts: list[Any], total: int) -> None:
        self.out += b"".join(bytes(p) for p in parts)  # `total` is a size hint

    def end(self, exc: BaseException | None) -> None:
        self.ended.append(exc)
        assert self.session is not None
        self.session.connection_lost(exc)

    def reply_settled(self, stream: SessionStream, failure: BaseException | None) -> None:
        self.replies.append((stream.stream_id, failure))

    def ws_pong(self) -> None:
        self.pongs += 1

    def streams_ended(self, count: int) -> None:
        self.trims += count

    def pause_input(self, key: object) -> None:
        self.paused.add(key)

    def resume_input(self, key: object) -> None:
        self.paused.discard(key)

    def clock(self) -> float:
        return self.now

    def take(self) -> bytes:
        data, self.out = bytes(self.out), bytearray()
        return data


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.eofs = 0
        self.resets: list[int] = []
        self.lost: list[BaseException | None] = []

    def data_received(self, view: memoryview) -> None:
        self.data += view

    def eof_received(self) -> None:
        self.eofs += 1

    def reset_received(self, status: int) -> None:
        self.resets.append(status)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)

    def drained(self) -> bool:
        return True


def state_of(stream: SessionStream) -> StreamState:
    """The stream's state, read afresh (each read is a new fact, not narrowed by the last)."""
    return stream.state


def frames(data: bytes) -> list[tuple[str, int, int, int]]:
    """(type name, stream or ping id, flags, status or payload length) of each frame."""
    names = {
        v: k
        for k, v in vars(F).items()
        if k in ("DATA", "SYN_STREAM", "SYN_REPLY", "RST_STREAM", "PING", "GOAWAY")
    }
    dec = F.SpdyDecoder()
    dec.feed(data)
    out: list[tuple[str, int, int, int]] = []
    for _ in range(1000):
        f = dec.next_frame()
        if f is None:
            assert dec.error is None
            return out
        name = names[f.type]
        if f.type == F.PING:
            out.append((name, f.ping_id, f.flags, 0))
        elif f.type == F.GOAWAY:
            out.append((name, f.last_good_id, f.flags, f.status))
        elif f.type == F.RST_STREAM:
            out.append((name, f.stream_id, f.flags, f.status))
        elif f.type == F.DATA:
            assert f.payload is not None
            out.append((name, f.stream_id, f.flags, len(f.payload)))
        else:
            out.append((name, f.stream_id, f.flags, 0))
    raise AssertionError("too many frames")


def server() -> tuple[SpdySession, Owner, list[SessionStream]]:
    owner = Owner()
    opened: list[SessionStream] = []
    s = SpdySession(owner, client=False, on_stream=opened.append, clock=owner.clock)
    owner.session = s
    return s, owner, opened


def client() -> tuple[SpdySession, Owner]:
    owner = Owner()
    s = SpdySession(owner, client=True, clock=owner.clock)
    owner.session = s
    return s, owner


def syn(sid: int, flags: int = 0) -> bytes:
    return PEER.syn_stream(sid, {"streamtype": "data", "port": "80"}, flags)


# -- server role ---------------------------------------------------------------------------------


def test_server_open_reply_data_fin_both_ways() -> None:
    s, owner, opened = server()
    s.feed(syn(1))
    (st,) = opened
    assert state_of(st) is StreamState.REPLY_DUE and st.headers["port"] == "80"
    sink = Sink()
    st.set_sink(sink)
    st.reply()
    st.reply()  # idempotent
    assert frames(owner.take()) == [("SYN_REPLY", 1, 0, 0)]
    s.feed(PEER.data(1, b"hello") + PEER.data(1, b"!", F.FLAG_FIN))
    assert bytes(sink.data) == b"hello!" and sink.eofs == 1
    assert state_of(st) is StreamState.HALF_CLOSED_REMOTE and st.remote_closed
    st.write(b"back")  # half-close: our direction still open
    st.write_eof()
    assert frames(owner.take()) == [("DATA", 1, 0, 4), ("DATA", 1, F.FLAG_FIN, 0)]
    assert state_of(st) is StreamState.CLOSED and 1 not in s.streams and owner.trims == 1


def test_server_data_before_our_reply_replies_first() -> None:
    s, owner, opened = server()
    s.feed(syn(1))
    opened[0].write(b"x")
    assert frames(owner.take()) == [("SYN_REPLY", 1, 0, 0), ("DATA", 1, 0, 1)]
    assert state_of(opened[0]) is StreamState.OPEN


def test_kubectl_fin_on_the_error_stream_before_our_reply() -> None:
    s, owner, opened = server()
    s.feed(syn(1) + PEER.data(1, b"", F.FLAG_FIN))  # kubectl: FIN right after SYN_STREAM
    assert state_of(opened[0]) is StreamState.REPLY_DUE_REMOTE_FIN
    opened[0].write_eof()  # kubelet finishes the error stream: reply, then FIN
    assert frames(owner.take()) == [("SYN_REPLY", 1, 0, 0), ("DATA", 1, F.FLAG_FIN, 0)]
    assert state_of(opened[0]) is StreamState.CLOSED and not s.streams


def test_syn_stream_flags_fin_and_unidirectional() -> None:
    s, _owner, opened = server()
    s.feed(syn(1, F.FLAG_FIN) + syn(3, F.FLAG_UNIDIRECTIONAL))
    assert [o.state for o in opened] == [
        StreamState.REPLY_DUE_REMOTE_FIN,
        StreamState.HALF_CLOSED_LOCAL,
    ]
    with pytest.raises(SessionClosedError):
        opened[1].write(b"no")  # the peer said it will not read


def test_data_without_a_sink_is_buffered_then_handed_over_in_order() -> None:
    s, owner, opened = server()
    s.feed(syn(1))
    opened[0].reply()
    s.feed(PEER.data(1, b"ab") + PEER.data(1, b"cd", F.FLAG_FIN))
    sink = Sink()
    opened[0].set_sink(sink)
    assert bytes(sink.data) == b"abcd" and sink.eofs == 1


def test_data_after_the_peers_fin_is_dropped_as_spdystream_does() -> None:
    s, owner, opened = server()
    s.feed(syn(1))
    sink = Sink()
    opened[0].set_sink(sink)
    opened[0].reply()
    s.feed(PEER.data(1, b"a", F.FLAG_FIN) + PEER.data(1, b"late") + PEER.data(1, b"", F.FLAG_FIN))
    assert bytes(sink.data) == b"a" and sink.eofs == 1 and not owner.ended


def test_data_for_an_ended_stream_is_dropped_and_the_session_lives() -> None:
    s, owner, opened = server()
    s.feed(syn(1))
    opened[0].reset()
    owner.take()
    s.feed(PEER.data(1, b"late", F.FLAG_FIN) + syn(3))
    assert not owner.ended and len(opened) == 2


def test_data_for_a_stream_never_opened_ends_the_session() -> None:
    s, owner, opened = server()
    s.feed(PEER.data(7, b"junk"))
    assert frames(owner.take()) == [("GOAWAY", 0, 0, F.GOAWAY_PROTOCOL_ERROR)]
    assert len(owner.ended) == 1 and isinstance(owner.ended[0], SpdySessionError)
    assert s.ended


def test_unknown_stream_is_refused_on_the_header_before_its_payload() -> None:
    s, owner, _ = server()
    s.feed(F.data_header(9, 0, 1 << 20))  # 16 MiB would follow; nobody waits for it
    assert frames(owner.take()) == [("GOAWAY", 0, 0, F.GOAWAY_PROTOCOL_ERROR)]
    assert s.ended


def test_peer_rst_tells_the_sink_and_forgets_the_stream() -> None:
    s, owner, opened = server()
    s.feed(syn(1))
    sink = Sink()
    opened[0].set_sink(sink)
    opened[0].reply()
    s.feed(PEER.rst_stream(1, 5))
    assert sink.resets == [5] and state_of(opened[0]) is StreamState.CLOSED and not s.streams
    opened[0].write(b"dead socket")  # a silent no-op
    opened[0].reset()  # idempotent: nothing more on the wire
    assert frames(owner.take()) == [("SYN_REPLY", 1, 0, 0)]


def test_peer_rst_after_its_fin_is_quiet() -> None:
    s, owner, opened = server()
    s.feed(syn(1))
    sink = Sink()
    opened[0].set_sink(sink)
    opened[0].reply()
    s.feed(PEER.data(1, b"", F.FLAG_FIN) + PEER.rst_stream(1, 5))
    assert sink.eofs == 1 and sink.resets == [] and state_of(opened[0]) is StreamState.CLOSED


def test_rst_for_an_unknown_stream_is_dropped() -> None:
    s, owner, _ = server()
    s.feed(PEER.rst_stream(41, 5) + PEER.syn_reply(43))
    assert owner.take() == b"" and not owner.ended


def test_syn_stream_with_an_old_id_or_our_parity_gets_rst_protocol_error() -> None:
    s, owner, opened = server()
    s.feed(syn(5))
    opened[0].reply()
    owner.take()
    s.feed(syn(3) + syn(5) + syn(8))
    assert frames(owner.take()) == [
        ("RST_STREAM", 3, 0, 1),
        ("RST_STREAM", 5, 0, 1),
        ("RST_STREAM", 8, 0, 1),
    ]
    assert state_of(opened[0]) is StreamState.OPEN  # the live stream 5 is left alone
    assert len(opened) == 1


def test_write_after_write_eof_is_a_local_error() -> None:
    s, owner, opened = server()
    s.feed(syn(1))
    opened[0].write_eof()
    opened[0].write_eof()  # idempotent
    owner.take()
    with pytest.raises(SessionClosedError):
        opened[0].write(b"x")
    room = opened[0].header_room
    buf = bytearray(room + 3)
    opened[0].send_inplace(buf, room, 3)  # the relay's fast path drops it silently
    assert owner.take() == b""


def test_send_inplace_replies_first_and_sends_one_frame() -> None:
    s, owner, opened = server()
    s.feed(syn(1))
    room = opened[0].header_room
    buf = bytearray(room) + b"abc"
    opened[0].send_inplace(buf, room, 3)
    assert frames(owner.take()) == [("SYN_REPLY", 1, 0, 0), ("DATA", 1, 0, 3)]
    assert opened[0].sent == 3


# -- client role ---------------------------------------------------------------------------------


def test_client_streams_are_odd_and_wait_for_the_reply() -> None:
    s, owner = client()
    a = s.start_stream({"StreamType": "error", "port": "80"})
    b = s.start_stream({"streamtype": "data", "port": "80"})
    assert (a.stream_id, b.stream_id) == (1, 3) and a.headers["streamtype"] == "error"
    assert [f[:2] for f in frames(owner.take())] == [("SYN_STREAM", 1), ("SYN_STREAM", 3)]
    assert state_of(a) is StreamState.AWAIT_REPLY
    a.write_eof()
    assert state_of(a) is StreamState.AWAIT_REPLY_LOCAL_FIN
    s.feed(PEER.syn_reply(1) + PEER.syn_reply(3) + PEER.syn_reply(3))  # a duplicate: dropped
    assert owner.replies == [(1, None), (3, None)]
    assert (a.state, b.state) == (StreamState.HALF_CLOSED_LOCAL, StreamState.OPEN)


def test_client_reply_with_fin_half_closes() -> None:
    s, owner = client()
    a = s.start_stream({"streamtype": "data"})
    s.feed(PEER.syn_reply(1, None, F.FLAG_FIN))
    assert owner.replies == [(1, None)] and state_of(a) is StreamState.HALF_CLOSED_REMOTE


def test_client_rst_before_the_reply_fails_the_wait() -> None:
    s, owner = client()
    a = s.start_stream({"streamtype": "data"})
    s.feed(PEER.rst_stream(1, 5))
    ((sid, failure),) = owner.replies
    assert sid == 1 and isinstance(failure, StreamResetError) and failure.status == 5
    assert state_of(a) is StreamState.CLOSED and a.reset_status == 5


def test_client_refuses_peer_streams() -> None:
    s, owner = client()
    s.feed(syn(2))
    assert frames(owner.take()) == [("RST_STREAM", 2, 0, 3)]  # REFUSED_STREAM


def test_client_data_before_the_reply_is_delivered() -> None:
    s, owner = client()
    a = s.start_stream({"streamtype": "data"})
    sink = Sink()
    a.set_sink(sink)
    s.feed(PEER.data(1, b"early", F.FLAG_FIN))
    assert bytes(sink.data) == b"early" and state_of(a) is StreamState.AWAIT_REPLY_REMOTE_FIN
    s.feed(PEER.syn_reply(1))
    assert state_of(a) is StreamState.HALF_CLOSED_REMOTE


# -- pings ----------------------------------------------------------------------------------------


def test_pings_echo_the_peers_and_time_ours() -> None:
    s, owner = client()
    s.feed(PEER.ping(2))  # the server's ping (even): echoed
    assert frames(owner.take()) == [("PING", 2, 0, 0)]
    pid = s.ping()
    assert pid == 1 and frames(owner.take()) == [("PING", 1, 0, 0)]
    owner.now += 0.25
    assert not s.ping_overdue(1.0) and s.ping_overdue(0.1) and not s.ping_overdue(None)
    s.feed(PEER.ping(1))  # the answer to ours
    assert owner.take() == b"" and s.last_ping_reply == owner.now
    assert s.last_ping_rtt == pytest.approx(0.25) and not s.ping_overdue(0.1)


def test_ping_record_is_bounded_and_keeps_the_oldest() -> None:
    s, owner = client()
    first = owner.now
    for _ in range(150):
        s.ping()
        owner.now += 1.0
    assert len(s._ping_outstanding) == 64
    assert min(s._ping_outstanding.values()) == first
    assert s.ping_overdue(148.0) and not s.ping_overdue(151.0)


# -- GOAWAY and the end --------------------------------------------------------------------------


def test_goaway_received_ends_every_stream() -> None:
    s, owner, opened = server()
    s.feed(syn(1) + syn(3))
    sinks = [Sink(), Sink()]
    for st, sk in zip(opened, sinks, strict=True):
        st.set_sink(sk)
        st.reply()
    s.feed(PEER.data(3, b"", F.FLAG_FIN) + PEER.goaway(3) + syn(5))
    assert s.goaway_received and owner.ended == [None] and len(opened) == 2
    assert len(sinks[0].lost) == 1 and isinstance(sinks[0].lost[0], SessionClosedError)
    assert sinks[1].lost == [] and sinks[1].eofs == 1  # it had seen the FIN: quiet
    assert all(state_of(st) is StreamState.CLOSED for st in opened) and not s.streams


def test_goaway_sent_names_the_last_good_stream_and_refuses_new_ones() -> None:
    s, owner, opened = server()
    s.feed(syn(1) + syn(3))
    owner.take()
    s.goaway(0)
    assert frames(owner.take()) == [("GOAWAY", 3, 0, 0)]
    assert s.going_away and s.ended and owner.ended == [None]
    opened[0].write(b"after")  # nothing goes out once ended
    assert owner.take() == b""
    with pytest.raises(SessionClosedError):
        s.start_stream({})


def test_connection_loss_fails_pending_replies() -> None:
    s, owner = client()
    a = s.start_stream({"streamtype": "data"})
    lost = ConnectionResetError("gone")
    s.connection_lost(lost)
    ((sid, failure),) = owner.replies
    assert sid == 1 and isinstance(failure, SessionClosedError) and a.error is lost


def test_a_local_call_the_state_cannot_take_is_a_bug() -> None:
    s, _owner = client()
    a = s.start_stream({})
    a.state = StreamState.IDLE  # as if the table had been bypassed
    with pytest.raises(StreamStateError):
        a.write(b"x")


# -- tunnelled in WebSocket ----------------------------------------------------------------------


@pytest.mark.parametrize("role", ["server", "client"])
def test_tunnel_both_roles(role: str) -> None:
    owner = Owner()
    opened: list[SessionStream] = []
    ws = WsOutput(role == "client", owner.emit, owner.emit_parts)
    s = SpdySession(
        owner,
        client=role == "client",
        ws=ws,
        on_stream=opened.append if role == "server" else None,
        clock=owner.clock,
    )
    owner.session = s
    peer_masks = role == "server"  # the peer is the other role

    def message(op: int, payload: bytes) -> bytes:
        return F.ws_encode(op, payload, True, peer_masks)

    def messages(data: bytes) -> list[tuple[int, bytes]]:
        dec = F.WsDecoder(expect_masked=role == "client")
        dec.feed(data)
        out: list[tuple[int, bytes]] = []
        for _ in range(100):
            f = dec.next_frame()
            if f is None:
                assert dec.error is None
                return out
            out.append((f.opcode, bytes(f.payload)))
        raise AssertionError("too many messages")

    if role == "server":
        wire = syn(1)
        # kubectl splits a frame into several messages; one message may also hold two frames
        s.feed(message(F.WS_BINARY, wire[:5]) + message(F.WS_BINARY, wire[5:]))
        (st,) = opened
        st.reply()
    else:
        st = s.start_stream({"streamtype": "data"})
        s.feed(message(F.WS_BINARY, PEER.syn_reply(1)))
    sink = Sink()
    st.set_sink(sink)
    s.feed(message(F.WS_BINARY, PEER.data(1, b"in") + PEER.data(1, b"", F.FLAG_FIN)))
    assert bytes(sink.data) == b"in" and sink.eofs == 1
    st.write(b"out")
    s.feed(message(F.WS_PING, b"p") + message(F.WS_PONG, b""))
    out = messages(owner.take())
    assert out[-1] == (F.WS_PONG, b"p") and owner.pongs == 1
    assert all(op == F.WS_BINARY for op, _ in out[:-1])
    assert frames(b"".join(p for _, p in out[:-1]))[-1] == ("DATA", 1, 0, 3)
    s.feed(message(F.WS_CLOSE, F.ws_close_payload(1000)))
    assert owner.ended == [None] and messages(owner.take())[0][0] == F.WS_CLOSE


def test_tunnel_text_message_is_refused() -> None:
    owner = Owner()
    ws = WsOutput(False, owner.emit, owner.emit_parts)
    s = SpdySession(owner, client=False, ws=ws, on_stream=lambda st: None, clock=owner.clock)
    owner.session = s
    s.feed(F.ws_encode(F.WS_TEXT, b"hi", True, True))
    assert len(owner.ended) == 1 and owner.ended[0] is not None and s.ended


def header_room_of(pipe: Pipe) -> int:
    return pipe.header_room  # mypy checks a SessionStream is a Pipe where this is called


def test_a_stream_is_a_pipe_and_the_test_sink_a_sink() -> None:
    s, _owner = client()
    st = s.start_stream({})
    assert header_room_of(st) == 8 and st.max_payload == s.max_data
    assert isinstance(Sink(), SinkContract)
