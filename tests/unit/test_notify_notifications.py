"""Pure logic of notify_service.notifications: ids, data objects and frames (PROTOCOL.md s5)."""

from __future__ import annotations

import json
import re

from notify_service.notifications import (
    MAX_ID_LENGTH,
    api_notification_id,
    broadcast_frame,
    build_notification,
    encode_data,
    is_redacted,
    is_safe_id,
    mention_excerpt,
    mention_id,
    mention_title,
    notification_frame,
    redacted,
    welcome_id,
    welcome_text,
)

TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_api_ids_are_fresh_hex() -> None:
    first, second = api_notification_id(), api_notification_id()
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second


def test_welcome_id_is_deterministic() -> None:
    assert welcome_id("abc123") == "welcome-abc123"
    assert welcome_id("abc123") == welcome_id("abc123")
    long_id = "a" * 64
    assert welcome_id(long_id) == f"welcome-{long_id}"


def test_mention_id_plain_form() -> None:
    assert mention_id("general", 58, "0f" * 16) == f"mention-general-58-{'0f' * 16}"
    assert mention_id("dev-ops", 1, "u1") == "mention-dev-ops-1-u1"


def test_mention_id_is_bounded_and_safe() -> None:
    room = "r" + "-x" * 31 + "y"  # 64 characters
    user = "u" * 64
    value = mention_id(room, 10**12, user)
    assert len(value) <= MAX_ID_LENGTH
    assert is_safe_id(value)
    assert value == mention_id(room, 10**12, user)
    assert value.startswith("mention-")
    assert value != mention_id(room, 10**12 + 1, user)


def test_mention_ids_never_collide_across_ambiguous_splits() -> None:
    # room "a" seq 1 user "2-u" vs room "a-1" seq 2 user "u": the plain forms would be equal.
    assert mention_id("a", 1, "2-u") != mention_id("a-1", 2, "u")
    assert mention_id("a-1", 2, "u") == "mention-a-1-2-u"


def test_build_notification_shape_and_order() -> None:
    data = build_notification(notification_id="x1", title="T", message="M", metadata={"k": 1})
    assert list(data) == ["id", "title", "message", "notification_type", "timestamp", "read", "metadata"]
    assert data["notification_type"] == "info"
    assert data["read"] is False
    assert data["metadata"] == {"k": 1}
    assert TIMESTAMP_RE.fullmatch(data["timestamp"])


def test_notification_frame_wraps_stored_bytes() -> None:
    data = build_notification(
        notification_id="x1", title="Ünïcode", message="M", timestamp="2026-01-01T00:00:00.000Z"
    )
    stored = encode_data(data)
    assert b" " not in stored.replace("Ünïcode".encode(), b"")
    frame = notification_frame(stored)
    assert json.loads(frame) == {"type": "notification", "data": data}


def test_broadcast_frame() -> None:
    frame = json.loads(broadcast_frame(title="T", message="M", notification_type="warning"))
    assert frame["type"] == "broadcast_notification"
    assert set(frame["data"]) == {"title", "message", "notification_type", "timestamp"}
    assert frame["data"]["notification_type"] == "warning"
    assert TIMESTAMP_RE.fullmatch(frame["data"]["timestamp"])


def test_welcome_text_replaces_only_username() -> None:
    assert welcome_text("Hi {username}!", "alice") == "Hi alice!"
    assert welcome_text("{unknown} {username} {", "bob") == "{unknown} bob {"


def test_mention_title_and_excerpt() -> None:
    assert mention_title("alice", "general") == "alice mentioned you in #general"
    assert mention_excerpt("short") == "short"
    exact = "x" * 200
    assert mention_excerpt(exact) == exact
    cut = mention_excerpt("y" * 201)
    assert len(cut) == 200
    assert cut.endswith("\u2026")


def test_redacted_drops_the_text_and_keeps_everything_else() -> None:
    data = {
        "id": "mention-general-5-u1",
        "title": "alice mentioned you in #general",
        "message": "@bob the secret",
        "notification_type": "info",
        "timestamp": "2026-12-05T10:00:00.000Z",
        "read": False,
        "metadata": {"room": "general", "seq": 5},
    }
    out = redacted(data)
    assert out == {**data, "message": "", "metadata": {"room": "general", "seq": 5, "deleted": True}}
    assert data["message"] == "@bob the secret"  # the input is not changed
    assert is_redacted(out) and not is_redacted(data)
    assert redacted(out) == out  # idempotent
    assert is_redacted(redacted({"id": "x", "message": "t", "metadata": None}))
    assert not is_redacted({"id": "x", "message": "", "metadata": {}})
