"""Asking chat_service who may read a room (``chat.access``) before a room's content leaves
as a notification (DESIGN.md rule 14, PROTOCOL.md section 10: "Mentions notify only users who
may read the room"), and what a message says now (PROTOCOL.md section 8: a deleted message's
text reaches nobody, so excerpts come from chat at the time of writing, never from a copy)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client

from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.nats_client import request_json


@dataclass(frozen=True, slots=True)
class MentionContext:
    """What a mention notification may say: who may read the room, and the message's text now
    (``None`` when the message is gone: deleted or never stored)."""

    readers: frozenset[str]
    text: str | None


async def mention_context(
    nc: Client, *, room: str, seq: int, user_ids: list[str], timeout: float
) -> MentionContext:
    """``chat.access`` with ``seq``: the readers among ``user_ids`` and message ``seq``'s text.

    Raises:
        ProtocolError: ``unavailable`` when chat does not answer (the caller retries the event);
            ``room_not_found`` when the room is gone; ``internal`` for a malformed answer.
    """
    reply = await request_json(
        nc, subjects.CHAT_ACCESS, {"room": room, "user_ids": user_ids, "seq": seq}, timeout=timeout
    )
    found = reply.get("readers") if isinstance(reply, dict) else None
    if not isinstance(found, list):
        raise ProtocolError(ErrorCode.INTERNAL)
    message: Any = reply.get("message")
    text: str | None = None
    if isinstance(message, dict) and not message.get("deleted") and isinstance(message.get("text"), str):
        text = message["text"] or None
    readers = frozenset(user_id for user_id in found if isinstance(user_id, str)) & set(user_ids)
    return MentionContext(readers=readers, text=text)
