"""Asking chat_service who may read a room (``chat.access``) before a room's content leaves
as a notification (DESIGN.md rule 14, PROTOCOL.md section 10: "Mentions notify only users who
may read the room")."""

from __future__ import annotations

from nats.aio.client import Client

from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.nats_client import request_json


async def readers_of(nc: Client, *, room: str, user_ids: list[str], timeout: float) -> set[str]:
    """The subset of ``user_ids`` that may read ``room`` now (chat reads its registry).

    Raises:
        ProtocolError: ``unavailable`` when chat does not answer (the caller retries the event);
            ``room_not_found`` when the room is gone (nobody may read it); ``internal`` for a
            malformed answer.
    """
    if not user_ids:
        return set()
    reply = await request_json(
        nc, subjects.CHAT_ACCESS, {"room": room, "user_ids": user_ids}, timeout=timeout
    )
    found = reply.get("readers") if isinstance(reply, dict) else None
    if not isinstance(found, list):
        raise ProtocolError(ErrorCode.INTERNAL)
    return {user_id for user_id in found if isinstance(user_id, str)} & set(user_ids)
