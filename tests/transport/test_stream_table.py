"""The SPDY stream lifecycle table (fastpf.transport.stream_machine) is total and coherent:
every (state, input) pair is an explicit decision, every state is reachable from IDLE, CLOSED
is final, and the derived sets the DATA path uses agree with the table."""

from __future__ import annotations

from collections import deque

import pytest

from fastpf import _frames as F
from fastpf.transport import stream_machine as M
from fastpf.transport.stream_machine import TABLE, Action, StreamInput, StreamState


def test_every_state_input_pair_is_an_explicit_decision() -> None:
    assert set(TABLE) == set(StreamState)
    for state in StreamState:
        row = TABLE[state]
        assert set(row) == set(StreamInput), f"{state.name} misses {set(StreamInput) - set(row)}"
        for event, t in row.items():
            assert isinstance(t, M.Transition), (state, event)
            assert isinstance(t.next, StreamState) and isinstance(t.action, Action)
    assert len(M.ROWS) == len(StreamState)
    for state in StreamState:
        assert M.ROWS[state] == tuple(TABLE[state][i] for i in StreamInput)
        for event in StreamInput:
            assert M.decide(state, event) is TABLE[state][event]


def test_answers_carry_a_status_and_leave_the_state_alone() -> None:
    for state in StreamState:
        for event, t in TABLE[state].items():
            if t.action in (Action.RST, Action.GOAWAY):
                assert t.status > 0 and t.next is state, (state, event)
            else:
                assert t.status == 0, (state, event)
            if t.action in (Action.DROP, Action.NOOP, Action.MISUSE, Action.BUG):
                assert t.next is state, (state, event)  # a refused input changes nothing


def test_drop_is_for_received_frames_and_local_decisions_for_calls() -> None:
    received = {i for i in StreamInput if i.name.startswith("RECV_")}
    for state in StreamState:
        for event, t in TABLE[state].items():
            if t.action is Action.DROP:
                assert event in received, (state, event)
            if t.action in (Action.MISUSE, Action.BUG, Action.REPLY_FIRST):
                assert event.name.startswith("SEND_"), (state, event)


def test_every_state_is_reachable_from_idle_and_closed_is_final() -> None:
    seen = {StreamState.IDLE}
    todo = deque([StreamState.IDLE])
    for _ in range(len(StreamState) ** 2):  # bounded BFS
        if not todo:
            break
        state = todo.popleft()
        for t in TABLE[state].values():
            if t.next not in seen:
                seen.add(t.next)
                todo.append(t.next)
    assert seen == set(StreamState)
    assert all(t.next is StreamState.CLOSED for t in TABLE[StreamState.CLOSED].values())
    leaving_idle = {e for e, t in TABLE[StreamState.IDLE].items() if t.next is not StreamState.IDLE}
    assert leaving_idle == {
        StreamInput.SEND_SYN_STREAM,
        StreamInput.RECV_SYN_STREAM,
        StreamInput.RECV_SYN_STREAM_UNI,
    }


def test_the_end_of_the_connection_ends_every_opened_stream() -> None:
    for state in StreamState:
        for event in (
            StreamInput.SEND_GOAWAY,
            StreamInput.RECV_GOAWAY,
            StreamInput.CONNECTION_LOST,
        ):
            t = TABLE[state][event]
            if state in (StreamState.IDLE, StreamState.CLOSED):
                assert t.action is Action.NOOP
            else:
                assert t.next is StreamState.CLOSED
                quiet = state in M.REMOTE_CLOSED  # its reader already saw the peer's FIN
                assert t.action is (Action.QUIET if quiet else Action.RESET), (state, event)


@pytest.mark.parametrize("state", [s for s in StreamState if s is not StreamState.IDLE])
def test_derived_sets_agree_with_the_table(state: StreamState) -> None:
    recv = TABLE[state][StreamInput.RECV_DATA].action
    send = TABLE[state][StreamInput.SEND_DATA].action
    assert (recv is Action.OK) == (state in M.DELIVERS)
    assert (recv is Action.DROP) == (state in M.REMOTE_CLOSED)
    assert (send in (Action.MISUSE, Action.NOOP)) == (state in M.LOCAL_CLOSED)


def test_ids_that_are_not_new_get_rst_protocol_error_in_every_opened_state() -> None:
    for state in StreamState:
        for event in (StreamInput.RECV_SYN_STREAM, StreamInput.RECV_SYN_STREAM_UNI):
            t = TABLE[state][event]
            if state is StreamState.IDLE:
                assert t.action is Action.OK
            else:
                assert (t.action, t.status) == (Action.RST, F.RST_PROTOCOL_ERROR), state
