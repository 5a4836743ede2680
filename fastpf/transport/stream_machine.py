"""The SPDY stream lifecycle as ONE transition table (h2's stream.py is the model).

A stream is in exactly one `StreamState`. Everything that can happen to it is a `StreamInput`
(a frame we send or receive, or the end of its connection). `TABLE[state][input]` is a
`Transition`: the next state and what to do. Every (state, input) pair is in the table
(tests/transport/test_stream_table.py proves it), so nothing is left to an `if` somewhere:
an input the lifecycle does not allow is an explicit decision there too: dropped "as
spdystream does", answered with RST_STREAM(status), the session ended with GOAWAY(status), a
silent no-op for a local call on a finished stream, or a local misuse that raises.

Decisions follow what the session did before this table existed (pinned by the tests), the
wire reference (docs/PROTOCOL.md 4.4, 4.5) and spdystream's connection.go as kubelet and
kubectl run it: DATA after the peer's FIN is dropped (DATA before SYN_REPLY is delivered, as
fastpf always did: see AWAIT_REPLY); SYN_REPLY for a gone or already replied stream is
dropped; RST_STREAM for a gone stream is dropped; a SYN_STREAM whose id is not new gets
RST_STREAM(PROTOCOL_ERROR) and leaves a live stream of that id alone; GOAWAY (either way)
ends every stream.

Two things are session rules, not stream rules, and live in the session before the table is
consulted: a SYN_STREAM is looked up as CLOSED when its id is not new for the peer (not above
the last one it opened, or of our parity), and a new stream is refused with
RST_STREAM(REFUSED_STREAM) when nobody takes streams (client role) or we are going away.
DATA for an id nobody ever opened is IDLE, and IDLE + DATA ends the session (GOAWAY
PROTOCOL_ERROR): random bytes after an upgrade read as DATA half the time.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from fastpf._frames import GOAWAY_PROTOCOL_ERROR, RST_PROTOCOL_ERROR
from fastpf.errors import StreamStateError


class StreamState(enum.IntEnum):
    IDLE = 0  # no SYN_STREAM named this id (yet)
    AWAIT_REPLY = 1  # we opened it; no SYN_REPLY yet; both directions open
    AWAIT_REPLY_LOCAL_FIN = 2  # we opened it and sent FIN; no SYN_REPLY yet
    AWAIT_REPLY_REMOTE_FIN = 3  # we opened it; the peer sent FIN before its SYN_REPLY
    REPLY_DUE = 4  # the peer opened it; our SYN_REPLY not sent yet
    REPLY_DUE_REMOTE_FIN = 5  # the peer opened it and sent FIN; our SYN_REPLY not sent yet
    OPEN = 6  # replied; both directions open
    HALF_CLOSED_LOCAL = 7  # we sent FIN (or the peer opened it UNIDIRECTIONAL); peer still sends
    HALF_CLOSED_REMOTE = 8  # the peer sent FIN; we still send
    CLOSED = 9  # both FINs, an RST either way, or the connection ended: forgotten


class StreamInput(enum.IntEnum):
    SEND_SYN_STREAM = 0
    RECV_SYN_STREAM = 1
    RECV_SYN_STREAM_UNI = 2  # SYN_STREAM with FLAG_UNIDIRECTIONAL (a FIN flag follows as RECV_FIN)
    SEND_SYN_REPLY = 3
    RECV_SYN_REPLY = 4  # a FIN flag on it follows as RECV_FIN when this one is OK
    SEND_DATA = 5
    RECV_DATA = 6
    SEND_FIN = 7  # DATA with FLAG_FIN (empty: our write_eof)
    RECV_FIN = 8  # DATA with FLAG_FIN (its payload is delivered first)
    SEND_RST = 9
    RECV_RST = 10
    RECV_HEADERS = 11
    RECV_WINDOW_UPDATE = 12
    SEND_GOAWAY = 13
    RECV_GOAWAY = 14
    CONNECTION_LOST = 15


class Action(enum.IntEnum):
    OK = 0  # do it: send the frame / deliver what arrived / take the stream
    DROP = 1  # a received frame ignored, as spdystream does; nothing is sent
    NOOP = 2  # a local call with nothing left to do (idempotent, or the stream already ended)
    REPLY_FIRST = 3  # send our SYN_REPLY, then do it (kubelet replies before any DATA: 4.5)
    RESET = 4  # the stream ends now; its reader learns why (RST status / connection loss)
    QUIET = 5  # the stream ends now; its reader already saw the peer's FIN: nothing to tell
    RST = 6  # answer RST_STREAM(status) on that id; the state does not change
    GOAWAY = 7  # end the whole session with GOAWAY(status)
    MISUSE = 8  # local misuse with a user-visible error: write after write_eof
    BUG = 9  # a local call that cannot happen through the API: StreamStateError


class Transition(NamedTuple):
    next: StreamState
    action: Action
    status: int = 0  # RST_STREAM / GOAWAY status for Action.RST / Action.GOAWAY


S = StreamState
I = StreamInput  # noqa: E741
A = Action


def _t(next_state: StreamState, action: Action, status: int = 0) -> Transition:
    return Transition(next_state, action, status)


_RST_PROTO = A.RST
_ENDS_ALL = (I.SEND_GOAWAY, I.RECV_GOAWAY, I.CONNECTION_LOST)

TABLE: dict[StreamState, dict[StreamInput, Transition]] = {
    S.IDLE: {
        I.SEND_SYN_STREAM: _t(S.AWAIT_REPLY, A.OK),
        I.RECV_SYN_STREAM: _t(S.REPLY_DUE, A.OK),
        I.RECV_SYN_STREAM_UNI: _t(S.HALF_CLOSED_LOCAL, A.OK),  # spdystream: "finished" at once
        I.SEND_SYN_REPLY: _t(S.IDLE, A.BUG),
        I.RECV_SYN_REPLY: _t(S.IDLE, A.DROP),  # spdystream: "stream has gone away"
        I.SEND_DATA: _t(S.IDLE, A.BUG),
        I.RECV_DATA: _t(S.IDLE, A.GOAWAY, GOAWAY_PROTOCOL_ERROR),  # never opened: hostile
        I.SEND_FIN: _t(S.IDLE, A.BUG),
        I.RECV_FIN: _t(S.IDLE, A.GOAWAY, GOAWAY_PROTOCOL_ERROR),
        I.SEND_RST: _t(S.IDLE, A.BUG),
        I.RECV_RST: _t(S.IDLE, A.DROP),  # spdystream: "already removed"
        I.RECV_HEADERS: _t(S.IDLE, A.DROP),
        I.RECV_WINDOW_UPDATE: _t(S.IDLE, A.DROP),
        I.SEND_GOAWAY: _t(S.IDLE, A.NOOP),
        I.RECV_GOAWAY: _t(S.IDLE, A.NOOP),
        I.CONNECTION_LOST: _t(S.IDLE, A.NOOP),
    },
    S.AWAIT_REPLY: {
        I.SEND_SYN_STREAM: _t(S.AWAIT_REPLY, A.BUG),
        I.RECV_SYN_STREAM: _t(S.AWAIT_REPLY, _RST_PROTO, RST_PROTOCOL_ERROR),
        I.RECV_SYN_STREAM_UNI: _t(S.AWAIT_REPLY, _RST_PROTO, RST_PROTOCOL_ERROR),
        I.SEND_SYN_REPLY: _t(S.AWAIT_REPLY, A.NOOP),  # our own stream: the peer replies
        I.RECV_SYN_REPLY: _t(S.OPEN, A.OK),
        I.SEND_DATA: _t(S.AWAIT_REPLY, A.OK),
        # Delivered, as fastpf always did (spdystream drops DATA before SYN_REPLY; kubelet
        # and fastpf serve always reply first, so only a test's peer sends it).
        I.RECV_DATA: _t(S.AWAIT_REPLY, A.OK),
        I.SEND_FIN: _t(S.AWAIT_REPLY_LOCAL_FIN, A.OK),
        I.RECV_FIN: _t(S.AWAIT_REPLY_REMOTE_FIN, A.OK),
        I.SEND_RST: _t(S.CLOSED, A.OK),
        I.RECV_RST: _t(S.CLOSED, A.RESET),  # kubelet refuses a bad stream this way
        I.RECV_HEADERS: _t(S.AWAIT_REPLY, A.DROP),
        I.RECV_WINDOW_UPDATE: _t(S.AWAIT_REPLY, A.DROP),
        I.SEND_GOAWAY: _t(S.CLOSED, A.RESET),
        I.RECV_GOAWAY: _t(S.CLOSED, A.RESET),
        I.CONNECTION_LOST: _t(S.CLOSED, A.RESET),
    },
    S.AWAIT_REPLY_LOCAL_FIN: {
        I.SEND_SYN_STREAM: _t(S.AWAIT_REPLY_LOCAL_FIN, A.BUG),
        I.RECV_SYN_STREAM: _t(S.AWAIT_REPLY_LOCAL_FIN, _RST_PROTO, RST_PROTOCOL_ERROR),
        I.RECV_SYN_STREAM_UNI: _t(S.AWAIT_REPLY_LOCAL_FIN, _RST_PROTO, RST_PROTOCOL_ERROR),
        I.SEND_SYN_REPLY: _t(S.AWAIT_REPLY_LOCAL_FIN, A.NOOP),
        I.RECV_SYN_REPLY: _t(S.HALF_CLOSED_LOCAL, A.OK),
        I.SEND_DATA: _t(S.AWAIT_REPLY_LOCAL_FIN, A.MISUSE),
        I.RECV_DATA: _t(S.AWAIT_REPLY_LOCAL_FIN, A.OK),
        I.SEND_FIN: _t(S.AWAIT_REPLY_LOCAL_FIN, A.NOOP),
        I.RECV_FIN: _t(S.CLOSED, A.OK),  # a late SYN_REPLY then finds no stream: dropped
        I.SEND_RST: _t(S.CLOSED, A.OK),
        I.RECV_RST: _t(S.CLOSED, A.RESET),
        I.RECV_HEADERS: _t(S.AWAIT_REPLY_LOCAL_FIN, A.DROP),
        I.RECV_WINDOW_UPDATE: _t(S.AWAIT_REPLY_LOCAL_FIN, A.DROP),
        I.SEND_GOAWAY: _t(S.CLOSED, A.RESET),
        I.RECV_GOAWAY: _t(S.CLOSED, A.RESET),
        I.CONNECTION_LOST: _t(S.CLOSED, A.RESET),
    },
    S.AWAIT_REPLY_REMOTE_FIN: {
        I.SEND_SYN_STREAM: _t(S.AWAIT_REPLY_REMOTE_FIN, A.BUG),
        I.RECV_SYN_STREAM: _t(S.AWAIT_REPLY_REMOTE_FIN, _RST_PROTO, RST_PROTOCOL_ERROR),
        I.RECV_SYN_STREAM_UNI: _t(S.AWAIT_REPLY_REMOTE_FIN, _RST_PROTO, RST_PROTOCOL_ERROR),
        I.SEND_SYN_REPLY: _t(S.AWAIT_REPLY_REMOTE_FIN, A.NOOP),
        I.RECV_SYN_REPLY: _t(S.HALF_CLOSED_REMOTE, A.OK),
        I.SEND_DATA: _t(S.AWAIT_REPLY_REMOTE_FIN, A.OK),
        I.RECV_DATA: _t(S.AWAIT_REPLY_REMOTE_FIN, A.DROP),  # after FIN, as spdystream
        I.SEND_FIN: _t(S.CLOSED, A.OK),
        I.RECV_FIN: _t(S.AWAIT_REPLY_REMOTE_FIN, A.DROP),
        I.SEND_RST: _t(S.CLOSED, A.OK),
        I.RECV_RST: _t(S.CLOSED, A.QUIET),
        I.RECV_HEADERS: _t(S.AWAIT_REPLY_REMOTE_FIN, A.DROP),
        I.RECV_WINDOW_UPDATE: _t(S.AWAIT_REPLY_REMOTE_FIN, A.DROP),
        I.SEND_GOAWAY: _t(S.CLOSED, A.QUIET),
        I.RECV_GOAWAY: _t(S.CLOSED, A.QUIET),
        I.CONNECTION_LOST: _t(S.CLOSED, A.QUIET),
    },
    S.REPLY_DUE: {
        I.SEND_SYN_STREAM: _t(S.REPLY_DUE, A.BUG),
        I.RECV_SYN_STREAM: _t(S.REPLY_DUE, _RST_PROTO, RST_PROTOCOL_ERROR),
        I.RECV_SYN_STREAM_UNI: _t(S.REPLY_DUE, _RST_PROTO, RST_PROTOCOL_ERROR),
        I.SEND_SYN_REPLY: _t(S.OPEN, A.OK),
        I.RECV_SYN_REPLY: _t(S.REPLY_DUE, A.DROP),  # a reply to the peer's own stream
        I.SEND_DATA: _t(S.OPEN, A.REPLY_FIRST),
        I.RECV_DATA: _t(S.REPLY_DUE, A.OK),
        I.SEND_FIN: _t(S.HALF_CLOSED_LOCAL, A.REPLY_FIRST),
        I.RECV_FIN: _t(S.REPLY_DUE_REMOTE_FIN, A.OK),  # kubectl FINs its error stream at once
        I.SEND_RST: _t(S.CLOSED, A.OK),  # kubelet rejects a stream unreplied, with RST
        I.RECV_RST: _t(S.CLOSED, A.RESET),
        I.RECV_HEADERS: _t(S.REPLY_DUE, A.DROP),
        I.RECV_WINDOW_UPDATE: _t(S.REPLY_DUE, A.DROP),
        I.SEND_GOAWAY: _t(S.CLOSED, A.RESET),
        I.RECV_GOAWAY: _t(S.CLOSED, A.RESET),
        I.CONNECTION_LOST: _t(S.CLOSED, A.RESET),
    },
    S.REPLY_DUE_REMOTE_FIN: {
        I.SEND_SYN_STREAM: _t(S.REPLY_DUE_REMOTE_FIN, A.BUG),
        I.RECV_SYN_STREAM: _t(S.REPLY_DUE_REMOTE_FIN, _RST_PROTO, RST_PROTOCOL_ERROR),
        I.RECV_SYN_STREAM_UNI: _t(S.REPLY_DUE_REMOTE_FIN, _RST_PROTO, RST_PROTOCOL_ERROR),
        I.SEND_SYN_REPLY: _t(S.HALF_CLOSED_REMOTE, A.OK),
        I.RECV_SYN_REPLY: _t(S.REPLY_DUE_REMOTE_FIN, A.DROP),
        I.SEND_DATA: _t(S.HALF_CLOSED_REMOTE, A.REPLY_FIRST),
        I.RECV_DATA: _t(S.REPLY_DUE_REMOTE_FIN, A.DROP),  # after FIN, as spdystream
        I.SEND_FIN: _t(S.CLOSED, A.REPLY_FIRST),
        I.RECV_FIN: _t(S.REPLY_DUE_REMOTE_FIN, A.DROP),
        I.SEND_RST: _t(S.CLOSED, A.OK),
        I.RECV_RST: _t(S.CLOSED, A.QUIET),
        I.RECV_HEADERS: _t(S.REPLY_DUE_REMOTE_FIN, A.DROP),
        I.RECV_WINDOW_UPDATE: _t(S.REPLY_DUE_REMOTE_FIN, A.DROP),
        I.SEND_GOAWAY: _t(S.CLOSED, A.QUIET),
        I.RECV_GOAWAY: _t(S.CLOSED, A.QUIET),
        I.CONNECTION_LOST: _t(S.CLOSED, A.QUIET),
    },
    S.OPEN: {
        I.SEND_SYN_STREAM: _t(S.OPEN, A.BUG),
        I.RECV_SYN_STREAM: _t(S.OPEN, _RST_PROTO, RST_PROTOCOL_ERROR),
        I.RECV_SYN_STREAM_UNI: _t(S.OPEN, _RST_PROTO, RST_PROTOCOL_ERROR),
        I.SEND_SYN_REPLY: _t(S.OPEN, A.NOOP),  # idempotent
        I.RECV_SYN_REPLY: _t(S.OPEN, A.DROP),  # spdystream: "already received reply"
        I.SEND_DATA: _t(S.OPEN, A.OK),
        I.RECV_DATA: _t(S.OPEN, A.OK),
        I.SEND_FIN: _t(S.HALF_CLOSED_LOCAL, A.OK),
        I.RECV_FIN: _t(S.HALF_CLOSED_REMOTE, A.OK),
        I.SEND_RST: _t(S.CLOSED, A.OK),
        I.RECV_RST: _t(S.CLOSED, A.RESET),
        I.RECV_HEADERS: _t(S.OPEN, A.DROP),  # no port-forward peer reads HEADERS
        I.RECV_WINDOW_UPDATE: _t(S.OPEN, A.DROP),  # no flow control (4.5)
        I.SEND_GOAWAY: _t(S.CLOSED, A.RESET),
        I.RECV_GOAWAY: _t(S.CLOSED, A.RESET),
        I.CONNECTION_LOST: _t(S.CLOSED, A.RESET),
    },
    S.HALF_CLOSED_LOCAL: {
        I.SEND_SYN_STREAM: _t(S.HALF_CLOSED_LOCAL, A.BUG),
        I.RECV_SYN_STREAM: _t(S.HALF_CLOSED_LOCAL, _RST_PROTO, RST_PROTOCOL_ERROR),
        I.RECV_SYN_STREAM_UNI: _t(S.HALF_CLOSED_LOCAL, _RST_PROTO, RST_PROTOCOL_ERROR),
        I.SEND_SYN_REPLY: _t(S.HALF_CLOSED_LOCAL, A.NOOP),
        I.RECV_SYN_REPLY: _t(S.HALF_CLOSED_LOCAL, A.DROP),
        I.SEND_DATA: _t(S.HALF_CLOSED_LOCAL, A.MISUSE),  # write after write_eof
        I.RECV_DATA: _t(S.HALF_CLOSED_LOCAL, A.OK),
        I.SEND_FIN: _t(S.HALF_CLOSED_LOCAL, A.NOOP),
        I.RECV_FIN: _t(S.CLOSED, A.OK),
        I.SEND_RST: _t(S.CLOSED, A.OK),
        I.RECV_RST: _t(S.CLOSED, A.RESET),
        I.RECV_HEADERS: _t(S.HALF_CLOSED_LOCAL, A.DROP),
        I.RECV_WINDOW_UPDATE: _t(S.HALF_CLOSED_LOCAL, A.DROP),
        I.SEND_GOAWAY: _t(S.CLOSED, A.RESET),
        I.RECV_GOAWAY: _t(S.CLOSED, A.RESET),
        I.CONNECTION_LOST: _t(S.CLOSED, A.RESET),
    },
    S.HALF_CLOSED_REMOTE: {
        I.SEND_SYN_STREAM: _t(S.HALF_CLOSED_REMOTE, A.BUG),
        I.RECV_SYN_STREAM: _t(S.HALF_CLOSED_REMOTE, _RST_PROTO, RST_PROTOCOL_ERROR),
        I.RECV_SYN_STREAM_UNI: _t(S.HALF_CLOSED_REMOTE, _RST_PROTO, RST_PROTOCOL_ERROR),
        I.SEND_SYN_REPLY: _t(S.HALF_CLOSED_REMOTE, A.NOOP),
        I.RECV_SYN_REPLY: _t(S.HALF_CLOSED_REMOTE, A.DROP),
        I.SEND_DATA: _t(S.HALF_CLOSED_REMOTE, A.OK),
        I.RECV_DATA: _t(S.HALF_CLOSED_REMOTE, A.DROP),  # after FIN, as spdystream
        I.SEND_FIN: _t(S.CLOSED, A.OK),
        I.RECV_FIN: _t(S.HALF_CLOSED_REMOTE, A.DROP),
        I.SEND_RST: _t(S.CLOSED, A.OK),
        I.RECV_RST: _t(S.CLOSED, A.QUIET),  # kubectl cancels its data stream after our FIN
        I.RECV_HEADERS: _t(S.HALF_CLOSED_REMOTE, A.DROP),
        I.RECV_WINDOW_UPDATE: _t(S.HALF_CLOSED_REMOTE, A.DROP),
        I.SEND_GOAWAY: _t(S.CLOSED, A.QUIET),
        I.RECV_GOAWAY: _t(S.CLOSED, A.QUIET),
        I.CONNECTION_LOST: _t(S.CLOSED, A.QUIET),
    },
    S.CLOSED: {
        I.SEND_SYN_STREAM: _t(S.CLOSED, A.BUG),
        I.RECV_SYN_STREAM: _t(S.CLOSED, _RST_PROTO, RST_PROTOCOL_ERROR),  # id not new
        I.RECV_SYN_STREAM_UNI: _t(S.CLOSED, _RST_PROTO, RST_PROTOCOL_ERROR),
        I.SEND_SYN_REPLY: _t(S.CLOSED, A.NOOP),
        I.RECV_SYN_REPLY: _t(S.CLOSED, A.DROP),
        I.SEND_DATA: _t(S.CLOSED, A.NOOP),  # like writing to a dead socket
        I.RECV_DATA: _t(S.CLOSED, A.DROP),  # a stream that ended: spdystream drops it
        I.SEND_FIN: _t(S.CLOSED, A.NOOP),
        I.RECV_FIN: _t(S.CLOSED, A.DROP),
        I.SEND_RST: _t(S.CLOSED, A.NOOP),
        I.RECV_RST: _t(S.CLOSED, A.DROP),
        I.RECV_HEADERS: _t(S.CLOSED, A.DROP),
        I.RECV_WINDOW_UPDATE: _t(S.CLOSED, A.DROP),
        I.SEND_GOAWAY: _t(S.CLOSED, A.NOOP),
        I.RECV_GOAWAY: _t(S.CLOSED, A.NOOP),
        I.CONNECTION_LOST: _t(S.CLOSED, A.NOOP),
    },
}

assert [int(s) for s in StreamState] == list(range(len(StreamState)))  # ROWS index = value
# Indexed by int for the per-frame path: ROWS[state][input] (tuples, no hashing).
ROWS: tuple[tuple[Transition, ...], ...] = tuple(
    tuple(TABLE[s][i] for i in StreamInput) for s in StreamState
)

# States whose reader takes a plain DATA frame (derived from the table, for the DATA path).
DELIVERS: frozenset[int] = frozenset(
    int(s) for s in StreamState if TABLE[s][I.RECV_DATA].action is A.OK
)
# States where the peer's side, and where our side, is finished.
REMOTE_CLOSED: frozenset[int] = frozenset(
    {S.AWAIT_REPLY_REMOTE_FIN, S.REPLY_DUE_REMOTE_FIN, S.HALF_CLOSED_REMOTE, S.CLOSED}
)
LOCAL_CLOSED: frozenset[int] = frozenset({S.AWAIT_REPLY_LOCAL_FIN, S.HALF_CLOSED_LOCAL, S.CLOSED})


def decide(state: int, event: int) -> Transition:
    """The table's decision for `event` in `state`."""
    return ROWS[state][event]


__all__ = [
    "DELIVERS",
    "LOCAL_CLOSED",
    "REMOTE_CLOSED",
    "ROWS",
    "TABLE",
    "Action",
    "StreamInput",
    "StreamState",
    "StreamStateError",
    "Transition",
    "decide",
]
