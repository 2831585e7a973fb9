"""Building the ``notifications`` frame from stored notifications, pure functions.

``{"type":"notifications","unread":N,"items":[..]}`` (PROTOCOL.md section 5): ``unread`` counts
every unread notification the user still has; ``items`` are the newest first, each ``data``
object with ``read`` set from the user's :class:`~notify_service.read_state.ReadState`. The frame
carries no ``id``: the gateway splices the request's ``id`` into the bytes
(:func:`shared.internal.with_request_id`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from notify_service.read_state import ReadState
from shared.protocol import encode_frame

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredNotification:
    """One stored notification: its stream sequence and its decoded ``data`` object."""

    stream_seq: int
    data: dict[str, Any]

    @property
    def id(self) -> str:
        """The notification id (``data["id"]``)."""
        return str(self.data.get("id", ""))


def decode_stored(stream_seq: int, raw: bytes) -> StoredNotification | None:
    """Decode one stored entry; ``None`` (logged) when it is not a JSON object with an ``id``."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        logger.warning("skipping malformed notification stream_seq=%d", stream_seq)
        return None
    return StoredNotification(stream_seq=stream_seq, data=data)


def unread_count(stored: Iterable[StoredNotification], state: ReadState) -> int:
    """How many of ``stored`` are unread under ``state``."""
    return sum(1 for item in stored if not state.is_read(item.stream_seq, item.id))


def build_items(
    stored: Iterable[StoredNotification],
    state: ReadState,
    *,
    unread_only: bool,
    limit: int,
) -> list[dict[str, Any]]:
    """Up to ``limit`` ``data`` objects, newest (highest stream sequence) first, ``read`` set;
    with ``unread_only`` only unread ones."""
    items: list[dict[str, Any]] = []
    for item in sorted(stored, key=lambda s: s.stream_seq, reverse=True):
        if len(items) >= limit:
            break
        read = state.is_read(item.stream_seq, item.id)
        if unread_only and read:
            continue
        data = dict(item.data)
        data["read"] = read
        items.append(data)
    return items


def build_summary(
    stored: Iterable[StoredNotification],
    state: ReadState,
    *,
    unread_only: bool,
    limit: int,
) -> bytes:
    """The compact ``notifications`` frame bytes (no ``id``) for ``notify.list`` / ``notify.read``."""
    stored_list = list(stored)
    items = build_items(stored_list, state, unread_only=unread_only, limit=limit)
    return encode_frame("notifications", unread=unread_count(stored_list, state), items=items).encode()
