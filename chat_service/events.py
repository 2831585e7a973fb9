"""Domain events chat_service publishes to the ``EVENTS`` stream (docs/subjects.md "Events").

``events.chat.message`` ``{"room","seq","user_id","username","mentions"}`` is published for a
message that mentions someone other than its sender, with ``Nats-Msg-Id`` ``msg:<room>:<seq>``;
notify_service turns it into mention notifications. It carries no text: notify asks chat for the
message as it is when it writes the notification (``chat.access`` with ``seq``), so a deleted
message's text has no copy in ``EVENTS`` to purge (PROTOCOL.md section 8, "Delete means gone").

``events.chat.message_deleted`` ``{"room","seq","mentions"}`` (``Nats-Msg-Id``
``del:<room>:<seq>``) follows the delete of a message that mentioned someone; notify strips the
text from those mention notifications. It is published by the purge
(:mod:`chat_service.roomlog.purge`), whose pending record survives a replica's death.
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
            "mentions": mentions,
        }
    ).encode()
    return await _publish(js, subjects.EVENT_CHAT_MESSAGE, event, msg_id=f"msg:{room}:{seq}", timeout=timeout)


async def publish_deletion(
    js: JetStreamContext, *, room: str, seq: int, mentions: list[str], timeout: float
) -> bool:
    """Publish ``events.chat.message_deleted`` for deleted message ``seq`` that mentioned
    ``mentions`` (lowercase usernames). Idempotent (``Nats-Msg-Id`` ``del:<room>:<seq>``).

    Returns:
        True if JetStream stored it (or had it already); False after
        :data:`EVENT_PUBLISH_ATTEMPTS` failures (logged; the purge sweep calls again).
    """
    event = dumps({"room": room, "seq": seq, "mentions": mentions}).encode()
    return await _publish(
        js, subjects.EVENT_CHAT_MESSAGE_DELETED, event, msg_id=f"del:{room}:{seq}", timeout=timeout
    )


async def _publish(js: JetStreamContext, subject: str, event: bytes, *, msg_id: str, timeout: float) -> bool:
    for attempt in range(1, EVENT_PUBLISH_ATTEMPTS + 1):
        try:
            await js.publish(subject, event, timeout=timeout, headers={"Nats-Msg-Id": msg_id})
            return True
        except nats.errors.Error as error:
            logger.warning("%s %s attempt %d failed: %r", subject, msg_id, attempt, error)
    logger.error("%s %s not published", subject, msg_id)
    return False
