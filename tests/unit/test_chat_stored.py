"""Reading room seqs back from stored messages, and the per-room state cache (pure logic)."""

from __future__ import annotations

import pytest

from chat_service.frames import message_data
from chat_service.roomstate import RoomStates
from chat_service.seqindex import Point
from chat_service.stored import room_seq_of, seq_of_body
from shared.errors import ErrorCode, ProtocolError
from shared.stream_reader import StoredMsg


@pytest.mark.parametrize("seq", [1, 9, 10, 12345678901])
def test_seq_of_body_reads_the_prefix(seq: int) -> None:
    body = message_data(
        room="a-room_1",
        seq=seq,
        user_id="u",
        username="n",
        message='"seq":1',
        timestamp="t",
        client_msg_id=None,
    )
    assert seq_of_body(body) == seq


def test_seq_of_body_falls_back_to_json() -> None:
    assert seq_of_body(b'{"seq": 7, "id": "x:7"}') == 7


@pytest.mark.parametrize("body", [b"", b"[]", b'{"seq":"7"}', b'{"seq":true}', b"not json"])
def test_seq_of_body_refuses_garbage(body: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        seq_of_body(body)
    assert caught.value.code is ErrorCode.INTERNAL


def test_room_seq_of_prefers_the_header() -> None:
    body = message_data(
        room="r", seq=3, user_id="u", username="n", message="m", timestamp="t", client_msg_id=None
    )
    assert (
        room_seq_of(StoredMsg(stream_seq=10, subject="msgs.r", headers={"Natter-Seq": "3"}, data=body)) == 3
    )
    assert room_seq_of(StoredMsg(stream_seq=10, subject="msgs.r", headers={}, data=body)) == 3


def test_learn_tail_only_moves_forward() -> None:
    state = RoomStates().get("r")
    state.learn_tail(Point(5, 50))
    state.learn_tail(Point(4, 40))
    assert state.tail == Point(5, 50) and state.tail_known
    assert state.checkpoints.bracket(4) == (None, Point(4, 40))


async def test_least_recently_used_idle_rooms_are_evicted() -> None:
    states = RoomStates(max_rooms=3)
    a = states.get("a")
    states.get("b")
    states.get("c")
    states.get("a")  # a is now the most recent
    states.get("d")  # evicts b
    assert len(states) == 3
    assert states.get("a") is a
    busy = states.get("c")
    async with busy.lock:
        states.get("e")  # c is locked: the least recent idle room (d) goes
        assert states.get("c") is busy
        assert len(states) == 3


async def test_locked_rooms_are_never_evicted() -> None:
    states = RoomStates(max_rooms=1)
    first = states.get("x")
    async with first.lock:
        states.get("y")
        assert len(states) == 2  # over the bound rather than breaking the lock
        assert states.get("x") is first
