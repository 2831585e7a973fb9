"""Domain events chat_service publishes to the ``EVENTS`` stream (docs/subjects.md "Events").

``events.chat.message`` ``{"room","seq","user_id","username","message","mentions"}`` is published
for a message that mentions someone other than its sender, with ``Nats-Msg-Id``
``msg:<room>:<seq>``; notify_service turns it into mention notifications.
"""

from __future__ import annotations

import logging
from typing import Final

import nats.errors
from nats.js import JetStreamContext

from chat_service.mentions import extract_mentions
from shared import subjects
from shared.protocol import dumps

logger = logging.getLogger(__name__)

EVENT_PUBLISH_ATTEMPTS: Final = 3


async def publish_mentions(
    js: JetStreamContext,
    *,
    room: str,
    seq: int,
    user_id: str,
    username: str,
    message: str,
    timeout: float,
) -> bool:
    """Publish ``events.chat.message`` if ``message`` mentions anyone but ``username``.

    Safe to call again for the same message (a duplicate send): the ``Nats-Msg-Id`` de-duplicates
    it in ``EVENTS``, which also closes the gap of a replica that died between storing the message
    and publishing the event. A failure is logged, never raised: the message itself is stored.

    Returns:
        True if an event was published (or was a duplicate of one), False otherwise.
    """
    mentions = extract_mentions(message, sender=username)
    if not mentions:
        return False
    event = dumps(
        {
            "room": room,
            "seq": seq,
            "user_id": user_id,
            "username": username,
            "message": message,
            "mentions": mentions,
        }
    ).encode()
    msg_id = f"msg:{room}:{seq}"
    for attempt in range(1, EVENT_PUBLISH_ATTEMPTS + 1):
        try:
            await js.publish(
                subjects.EVENT_CHAT_MESSAGE, event, timeout=timeout, headers={"Nats-Msg-Id": msg_id}
            )
            return True
        except nats.errors.Error as error:
            logger.warning("room=%s seq=%d mention event attempt %d failed: %r", room, seq, attempt, error)
    logger.error("room=%s seq=%d mention event not published", room, seq)
    return False
