"""The room log's pure parts: stored bodies, a message's state, materialised messages, layout."""

from __future__ import annotations

import json

import pytest

from chat_service.roomlog import bodies
from chat_service.roomlog.purge import PurgePlan
from chat_service.roomlog.state import MAX_DISTINCT_EMOJI, MessageState, materialise
from shared import room_shards
from shared.errors import ProtocolError

MESSAGE = json.loads(
    bodies.message_body(
        room="general", seq=5, user_id="u1", username="alice", message="hi", timestamp="t0", client_msg_id="c"
    )
)


def test_event_body_starts_with_its_seq_and_names_its_type() -> None:
    body = bodies.event_body(
        bodies.REACTION, seq=7, user_id="u2", username="bob", timestamp="t", target=5, emoji="+1", op="add"
    )
    assert body.startswith(b'{"seq":7,"type":"reaction",')
    assert bodies.seq_of_body(body) == 7
    assert bodies.frame("general", body) == b'{"type":"reaction","room":"general","data":' + body + b"}"


def test_seq_of_body_reads_messages_and_refuses_garbage() -> None:
    assert bodies.seq_of_body(json.dumps(MESSAGE, separators=(",", ":")).encode()) == 5
    with pytest.raises(ProtocolError):
        bodies.seq_of_body(b'{"no":"seq"}')


def test_reply_body_carries_reply_to_and_plain_one_does_not() -> None:
    reply = json.loads(
        bodies.message_body(
            room="r",
            seq=9,
            user_id="u",
            username="n",
            message="m",
            timestamp="t",
            client_msg_id=None,
            reply_to=5,
        )
    )
    assert reply["reply_to"] == 5
    assert "reply_to" not in MESSAGE


def test_reactions_keep_first_use_order_and_one_per_user() -> None:
    state = MessageState()
    state = state.react(seq=6, emoji="+1", user_id="u1", add=True)
    state = state.react(seq=7, emoji="tada", user_id="u2", add=True)
    state = state.react(seq=8, emoji="+1", user_id="u2", add=True)
    assert state.has_reaction("+1", "u1") and state.has_reaction("+1", "u2")
    assert state.reactions_for("u2") == [
        {"emoji": "+1", "count": 2, "me": True},
        {"emoji": "tada", "count": 1, "me": True},
    ]
    state = state.react(seq=9, emoji="tada", user_id="u2", add=False)
    assert state.reactions_for("u1") == [{"emoji": "+1", "count": 2, "me": True}]
    assert state.at == 9


def test_at_most_twenty_distinct_emoji() -> None:
    state = MessageState()
    for index in range(MAX_DISTINCT_EMOJI):
        state = state.react(seq=index + 1, emoji=f"e{index}", user_id="u", add=True)
    assert not state.can_add_emoji("new")
    assert state.can_add_emoji("e3")  # an emoji already there is not a new one


def test_state_round_trips_through_storage() -> None:
    state = (
        MessageState(stream_seq=42)
        .edit(seq=6, text="new", edited_at="t1")
        .react(seq=7, emoji="🙂", user_id="u1", add=True)
        .replied(seq=8)
        .reply_deleted(seq=9)
    )
    assert MessageState.decode(state.encode()) == state
    assert MessageState.decode(b'{"edits":["x",3],"reactions":[[1,2],["ok",["u",5]]]}') == MessageState(
        edits=(3,), reactions=(("ok", ("u",)),)
    )
    with pytest.raises(ValueError):
        MessageState.decode(b"[]")


def test_materialised_message_shows_edits_reactions_and_replies() -> None:
    state = (
        MessageState()
        .edit(seq=6, text="edited", edited_at="t1")
        .react(seq=7, emoji="+1", user_id="u2", add=True)
    )
    state = state.replied(seq=8).replied(seq=9).reply_deleted(seq=10)
    shown = materialise(MESSAGE, state, me="u1")
    assert shown["message"] == "edited" and shown["edited_at"] == "t1"
    assert shown["reply_to"] is None and shown["reply_count"] == 1
    assert shown["reactions"] == [{"emoji": "+1", "count": 1, "me": False}]
    assert "deleted" not in shown


def test_materialised_deleted_message_has_no_text_and_no_reactions() -> None:
    state = (
        MessageState()
        .edit(seq=6, text="secret edit", edited_at="t1")
        .react(seq=7, emoji="+1", user_id="u", add=True)
    )
    shown = materialise(MESSAGE, state.delete(seq=8), me="u")
    assert shown["message"] == "" and shown["deleted"] is True
    assert "edited_at" not in shown and shown["reactions"] == []
    assert "secret" not in json.dumps(shown) and "hi" not in json.dumps(shown["message"])


def test_untouched_message_gets_the_v2_fields() -> None:
    shown = materialise(MESSAGE, None, me="u1")
    assert shown == {**MESSAGE, "reply_to": None, "reply_count": 0, "reactions": []}


def test_layout_is_stable_and_keeps_views_off_the_log_wildcard() -> None:
    where = room_shards.layout("general", 4)
    assert where.shard == room_shards.shard_of("general", 4) == room_shards.layout("general", 4).shard
    assert where.stream == f"ROOMS_{where.shard}"
    assert where.log_filter == f"roomlog.{where.shard}.general.>"
    assert where.message_subject() == f"roomlog.{where.shard}.general.m.0"
    assert where.message_subject(58) == f"roomlog.{where.shard}.general.m.58"
    # derived data lives under roomview, which the room's seq wildcard does not match
    assert not where.state_subject(5).startswith(f"roomlog.{where.shard}.general.")
    assert {room_shards.shard_of(f"room-{i}", 4) for i in range(100)} == {0, 1, 2, 3}
    with pytest.raises(ProtocolError):
        room_shards.layout("Bad.Room", 4)


def test_request_keys_are_subject_tokens_and_differ_per_user() -> None:
    key = room_shards.request_key("u1", "any id . * > with spaces")
    assert len(key) == 32 and key.isalnum()
    assert key != room_shards.request_key("u2", "any id . * > with spaces")


def test_purge_plan_round_trips_and_omits_empty_mentions() -> None:
    plan = PurgePlan(erase=(12, 15), mentions=("bob", "carol"))
    assert plan.encode() == b'{"erase":[12,15],"mentions":["bob","carol"]}'
    assert PurgePlan.decode(plan.encode()) == plan
    bare = PurgePlan(erase=(3,))
    assert bare.encode() == b'{"erase":[3]}'
    assert PurgePlan.decode(b'{"erase":[3]}') == bare  # pending purges written before mentions
    for bad in (b"[1]", b'{"erase":["x"]}', b"not json"):
        with pytest.raises(ValueError):
            PurgePlan.decode(bad)
