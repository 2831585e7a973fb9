"""Domain events the auth service publishes to the JetStream stream ``EVENTS``.

Each event carries a ``Nats-Msg-Id`` so a retry after a lost PubAck is de-duplicated by the
stream (DESIGN.md rule 11: a PubAck timeout is "unknown" and is retried with the same id).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import APIError

from auth_service.kv_json import encode
from shared.events import envelope
from shared.subjects import EVENT_SESSION_REVOKED, EVENT_USER_REGISTERED, EVENTS_STREAM

logger = logging.getLogger(__name__)

PUBLISH_ATTEMPTS: Final = 3


async def publish_event(
    js: JetStreamContext, subject: str, body: dict[str, Any] | bytes, *, msg_id: str
) -> bool:
    """Publish ``body`` to ``subject`` in ``EVENTS`` and await the PubAck, retrying with the same
    ``Nats-Msg-Id``.

    Returns:
        False when no PubAck came after :data:`PUBLISH_ATTEMPTS` tries (logged; the caller's own
        state change already happened and is not undone).
    """
    payload = body if isinstance(body, bytes) else encode(body)
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        try:
            await js.publish(subject, payload, stream=EVENTS_STREAM, headers={"Nats-Msg-Id": msg_id})
            return True
        except (TimeoutError, NatsError, APIError) as error:
            logger.warning("event publish failed subject=%s attempt=%d error=%r", subject, attempt, error)
            await asyncio.sleep(0.2 * attempt)
    logger.error("event not published subject=%s msg_id=%s", subject, msg_id)
    return False


async def user_registered(js: JetStreamContext, *, user_id: str, username: str, timestamp: str) -> bool:
    """``events.user.registered``: the event feed's ``user.registered`` envelope
    (:mod:`shared.events`), id and ``Nats-Msg-Id`` ``user:<user_id>:registered``."""
    event_id = f"user:{user_id}:registered"
    body = envelope(
        "user.registered", event_id, {"user_id": user_id, "username": username}, created_at=timestamp
    )
    return await publish_event(js, EVENT_USER_REGISTERED, body, msg_id=event_id)


async def session_revoked(
    js: JetStreamContext, *, user_id: str, session_id: str | None, stamp_ms: int
) -> bool:
    """``events.session.revoked`` ``{"user_id","session_id","all"}``; ``session_id`` None means
    every session of the user (``all`` true)."""
    body = {"user_id": user_id, "session_id": session_id, "all": session_id is None}
    msg_id = f"revoked:{session_id}" if session_id else f"revoked-all:{user_id}:{stamp_ms}"
    return await publish_event(js, EVENT_SESSION_REVOKED, body, msg_id=msg_id)
