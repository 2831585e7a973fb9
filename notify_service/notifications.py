"""Notification records and frames, pure functions (PROTOCOL.md section 5, docs/subjects.md).

A notification's ``data`` object is
``{"id","title","message","notification_type","timestamp","read":false,"metadata":{}}``; it is
stored as compact JSON bytes in stream ``NOTIFICATIONS`` (``read`` is always ``false`` there:
read state lives in KV and is applied when a listing is built) and pushed inside the
``notification`` frame, whose bytes are built once from the stored bytes (DESIGN.md rule 4).

Notification ids are also the JetStream ``Nats-Msg-Id`` of the stored entry, so storing the same
id twice inside the duplicate window stores it once. They are at most :data:`MAX_ID_LENGTH`
characters of ``[A-Za-z0-9_-]``: ``uuid4().hex`` for API sends, deterministic for events
(``welcome-<user_id>``, ``mention-<room>-<seq>-<user_id>``) so that a redelivered event maps onto
the notification it already produced.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any, Final

from shared.protocol import dumps, utc_timestamp

#: Longest notification id (the gateway accepts ``mark_read`` ids of at most 128 characters).
MAX_ID_LENGTH: Final = 128
#: Mention notifications quote at most this many characters of the chat message.
MENTION_EXCERPT_CHARS: Final = 200
_SAFE_ID_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def api_notification_id() -> str:
    """A fresh id for a notification sent through ``notify.send``: 32 lowercase hex characters."""
    return uuid.uuid4().hex


def welcome_id(user_id: str) -> str:
    """``welcome-<user_id>``: the one welcome notification of a user (user ids: 1..64 chars)."""
    return _bounded("welcome", user_id)


def mention_id(room: str, seq: int, user_id: str) -> str:
    """``mention-<room>-<seq>-<user_id>``: the notification of ``user_id`` for message ``seq``.

    The plain form is unambiguous when ``user_id`` holds no ``-`` (rooms may hold ``-``, ``seq``
    is digits, so the id parses from the right). When ``user_id`` holds a ``-`` or the plain form
    would exceed :data:`MAX_ID_LENGTH`, the id is ``mention-<sha256 hex of room, seq, user>``
    (72 characters, one ``-``, so it can never equal a plain form).
    """
    plain = f"mention-{room}-{seq}-{user_id}"
    if "-" not in user_id and len(plain) <= MAX_ID_LENGTH and _SAFE_ID_RE.fullmatch(plain):
        return plain
    return "mention-" + _digest(room, str(seq), user_id)


def _bounded(prefix: str, user_id: str) -> str:
    plain = f"{prefix}-{user_id}"
    if len(plain) <= MAX_ID_LENGTH and _SAFE_ID_RE.fullmatch(plain):
        return plain
    return f"{prefix}-{_digest(user_id)}"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def is_safe_id(value: str) -> bool:
    """True when ``value`` has the shape of a notification id (``[A-Za-z0-9_-]{1,128}``)."""
    return _SAFE_ID_RE.fullmatch(value) is not None


def build_notification(
    *,
    notification_id: str,
    title: str,
    message: str,
    notification_type: str = "info",
    metadata: dict[str, Any] | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """The ``data`` object of a ``notification`` frame, unread, in PROTOCOL.md's field order.

    ``timestamp`` defaults to now (ISO 8601 UTC with milliseconds, :func:`utc_timestamp`).
    """
    return {
        "id": notification_id,
        "title": title,
        "message": message,
        "notification_type": notification_type,
        "timestamp": timestamp or utc_timestamp(),
        "read": False,
        "metadata": dict(metadata or {}),
    }


def encode_data(data: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON bytes of a ``data`` object, as stored in ``NOTIFICATIONS``."""
    return dumps(data).encode()


def notification_frame(data_bytes: bytes) -> bytes:
    """``{"type":"notification","data":<data>}`` built around already encoded ``data`` bytes."""
    return b'{"type":"notification","data":' + data_bytes + b"}"


def broadcast_frame(
    *, title: str, message: str, notification_type: str, timestamp: str | None = None
) -> bytes:
    """``{"type":"broadcast_notification","data":{"title","message","notification_type","timestamp"}}``."""
    data = {
        "title": title,
        "message": message,
        "notification_type": notification_type,
        "timestamp": timestamp or utc_timestamp(),
    }
    return dumps({"type": "broadcast_notification", "data": data}).encode()


def welcome_text(template: str, username: str) -> str:
    """The welcome message: ``template`` with each ``{username}`` replaced (no other formatting,
    so braces in an operator's template can never raise)."""
    return template.replace("{username}", username)


def mention_title(sender: str, room: str) -> str:
    """``"<sender> mentioned you in #<room>"``, cut to the 200 characters a title may hold."""
    return f"{sender} mentioned you in #{room}"[:200]


def mention_excerpt(text: str, limit: int = MENTION_EXCERPT_CHARS) -> str:
    """``text`` if it has at most ``limit`` characters, else its first ``limit - 1`` and ``…``."""
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "\u2026"


def redacted(data: dict[str, Any]) -> dict[str, Any]:
    """The notification ``data`` without its text: ``message`` ``""`` and ``metadata.deleted``
    true (a mention of a deleted message, PROTOCOL.md section 8); everything else kept."""
    metadata = data.get("metadata")
    return {
        **data,
        "message": "",
        "metadata": {**(metadata if isinstance(metadata, dict) else {}), "deleted": True},
    }


def is_redacted(data: dict[str, Any]) -> bool:
    """True for a notification :func:`redacted` produced."""
    metadata = data.get("metadata")
    return isinstance(metadata, dict) and metadata.get("deleted") is True and data.get("message") == ""
