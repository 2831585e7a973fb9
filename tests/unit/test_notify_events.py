"""Pure helpers of notify_service.consumers: event bodies, mention targets, retries, de-dup."""

from __future__ import annotations

import pytest

from notify_service.consumers import (
    CLOCK_MARGIN,
    BadEvent,
    ChatMessageEvent,
    UserRegistered,
    decode_event,
    mention_targets,
    needs_stored_check,
    retry_delay,
)
from shared.streams import DEDUP_WINDOW


def test_mention_targets() -> None:
    names = ["Bob", "alice", "bob", "@carol", "no", "bad name", "dave"]
    assert mention_targets(names, sender="ALICE") == ["bob", "carol", "dave"]
    assert mention_targets([f"user{i}" for i in range(10)], sender="x", limit=3) == [
        "user0",
        "user1",
        "user2",
    ]


def test_retry_delay_grows_and_is_capped() -> None:
    assert [retry_delay(n, 30) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert retry_delay(10, 30) == 30.0
    assert retry_delay(10_000, 5) == 5.0


def test_decode_event() -> None:
    event = decode_event(
        ChatMessageEvent,
        b'{"room":"general","seq":3,"user_id":"u1","username":"alice","message":"hi","mentions":["bob"]}',
    )
    assert (event.room, event.seq, event.mentions) == ("general", 3, ["bob"])
    assert decode_event(UserRegistered, b'{"user_id":"u1","username":"a","timestamp":"t"}').user_id == "u1"
    with pytest.raises(BadEvent):
        decode_event(ChatMessageEvent, b'{"room":"Bad.Room","seq":3}')
    with pytest.raises(BadEvent):
        decode_event(UserRegistered, b"not json")


def test_needs_stored_check() -> None:
    assert not needs_stored_check(num_delivered=1, age_seconds=1.0)
    assert needs_stored_check(num_delivered=2, age_seconds=1.0)
    assert needs_stored_check(num_delivered=1, age_seconds=DEDUP_WINDOW)
    assert not needs_stored_check(num_delivered=1, age_seconds=DEDUP_WINDOW - CLOCK_MARGIN - 1)
