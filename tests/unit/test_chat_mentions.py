"""@mention extraction for events.chat.message (pure logic)."""

from __future__ import annotations

import pytest

from chat_service.mentions import extract_mentions


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello", []),
        ("hi @bob", ["bob"]),
        ("hi @Bob and @CAROL_1, also @bob again", ["bob", "carol_1"]),
        ("@alice: look", ["alice"]),
        ("(@dave) [@erin]!", ["dave", "erin"]),
        ("@ab is too short", []),
        ("@" + "x" * 32 + " fits", ["x" * 32]),
        ("@" + "x" * 33 + " is too long, not a prefix of a mention", []),
        ("mail me at someone@example.com", []),
        ("@@bob is not a mention of bob", []),
        ("dash-@bob still counts after punctuation", ["bob"]),
        ("emoji 🙂@bob counts", ["bob"]),
        ("@bob-smith mentions bob", ["bob"]),
        ("@bob.", ["bob"]),
    ],
)
def test_extract_mentions(text: str, expected: list[str]) -> None:
    assert extract_mentions(text) == expected


def test_sender_is_excluded_case_insensitively() -> None:
    assert extract_mentions("@Alice says hi to @bob and @ALICE", sender="alice") == ["bob"]


def test_only_self_mention_gives_nothing() -> None:
    assert extract_mentions("note to @me_myself", sender="Me_Myself") == []
