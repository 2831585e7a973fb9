"""Pure logic of notify_service.summary: the ``notifications`` frame (PROTOCOL.md section 5)."""

from __future__ import annotations

import json

from notify_service.notifications import build_notification, encode_data
from notify_service.read_state import ReadState
from notify_service.summary import StoredNotification, build_summary, decode_stored, unread_count


def _stored(seq: int, nid: str) -> StoredNotification:
    data = build_notification(
        notification_id=nid, title=nid, message="m", timestamp="2026-01-01T00:00:00.000Z"
    )
    item = decode_stored(seq, encode_data(data))
    assert item is not None
    return item


STORED = [_stored(1, "a"), _stored(4, "b"), _stored(9, "c")]


def test_decode_stored_skips_malformed_entries() -> None:
    assert decode_stored(1, b"nope") is None
    assert decode_stored(1, b"[1]") is None
    assert decode_stored(1, b'{"title":"no id"}') is None
    assert decode_stored(3, b'{"id":"x"}') == StoredNotification(3, {"id": "x"})


def test_summary_newest_first_with_read_flags() -> None:
    state = ReadState(read_ids=frozenset({"c"}))
    frame = json.loads(build_summary(STORED, state, unread_only=False, limit=50))
    assert list(frame) == ["type", "unread", "items"]
    assert frame["type"] == "notifications"
    assert frame["unread"] == 2
    assert [(i["id"], i["read"]) for i in frame["items"]] == [("c", True), ("b", False), ("a", False)]


def test_summary_unread_only_and_limit() -> None:
    state = ReadState(read_ids=frozenset({"c"}))
    frame = json.loads(build_summary(STORED, state, unread_only=True, limit=1))
    assert frame["unread"] == 2
    assert [i["id"] for i in frame["items"]] == ["b"]


def test_summary_all_before_and_empty() -> None:
    frame = json.loads(build_summary(STORED, ReadState(all_before=9), unread_only=True, limit=50))
    assert frame == {"type": "notifications", "unread": 0, "items": []}
    assert build_summary([], ReadState(), unread_only=False, limit=5) == (
        b'{"type":"notifications","unread":0,"items":[]}'
    )


def test_summary_does_not_mutate_stored_data() -> None:
    build_summary(STORED, ReadState(all_before=100), unread_only=False, limit=50)
    assert all(item.data["read"] is False for item in STORED)
    assert unread_count(STORED, ReadState()) == 3
