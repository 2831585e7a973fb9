"""Live authorisation, chat's side (DESIGN.md rule 14, PROTOCOL.md section 10).

When a user loses the right to read a room (removed from a private room; v2: banned), the
registry change is followed, before the request is answered, by two announcements:

1. an :class:`~shared.internal.AccessChange` in the ``ROOM_ACCESS`` stream (``access.<room>``),
   stored before the answer: every gateway watches it, so each one drops the user's sockets from
   the room even if it missed (2);
2. the ``removed`` client frame on ``deliver.room.<room>`` (``Natter-Kind: removed``,
   ``Natter-User``, ``Natter-Room-Rev``), flushed before the answer: on one NATS server it is
   queued to each gateway ahead of any room frame published after the answer, so nothing sent
   after the removal reaches the removed user.

Both carry the registry revision of the change; a gateway applies them only to sockets whose join
was authorised at an older revision, so a late or repeated announcement cannot undo a re-add.
:func:`readers` is the check every derived path (mentions, later webhooks and previews) makes
before a room's content leaves for a user.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final, Literal

import nats.errors
from nats.aio.client import Client

from chat_service.rooms import Room
from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.internal import AccessChange
from shared.protocol import encode_frame
from shared.streams import publish_acked

logger = logging.getLogger(__name__)

#: Attempts to store an access change before the removal is answered ``unavailable`` (the
#: registry change stands; a retry of the request announces it again).
PUBLISH_ATTEMPTS: Final = 5


def readers(room: Room, user_ids: list[str]) -> list[str]:
    """The ``user_ids`` (in order, each once) that may read ``room`` now: everyone for a public
    room, the owner and members for a private one."""
    seen: dict[str, None] = {}
    for user_id in user_ids:
        if room.may_join(user_id):
            seen.setdefault(user_id, None)
    return list(seen)


async def announce_removal(
    nc: Client, *, room: str, user_id: str, reason: Literal["removed", "banned"], rev: int, timeout: float
) -> None:
    """Store the access change, then publish and flush the ``removed`` frame (module doc).

    Raises:
        ProtocolError: ``unavailable`` when the change could not be stored.
    """
    change = AccessChange(room=room, user_id=user_id, reason=reason, rev=rev)
    body = change.model_dump_json().encode()
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        try:
            await publish_acked(nc, subjects.room_access_subject(room), body, timeout=timeout)
            break
        except (nats.errors.Error, TimeoutError) as error:
            logger.warning(
                "room=%s user=%s access change attempt %d failed: %r", room, user_id, attempt, error
            )
            await asyncio.sleep(0.1 * attempt)
    else:
        raise ProtocolError(ErrorCode.UNAVAILABLE)
    frame = encode_frame("removed", None, room=room, reason=reason).encode()
    try:
        await nc.publish(
            subjects.deliver_room(room),
            frame,
            headers={
                subjects.HDR_ROOM: room,
                subjects.HDR_USER: user_id,
                subjects.HDR_KIND: subjects.KIND_REMOVED,
                subjects.HDR_ROOM_REV: str(rev),
            },
        )
        await nc.flush(timeout=timeout)
    except (nats.errors.Error, TimeoutError) as error:  # the stored change still reaches gateways
        logger.warning("room=%s user=%s removed frame not flushed: %r", room, user_id, error)
    logger.info("room=%s user=%s access revoked reason=%s rev=%d", room, user_id, reason, rev)
