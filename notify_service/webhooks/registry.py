"""Registered webhooks (bucket ``natter_webhooks``) and their delivery log (stream
``WEBHOOK_LOG``), PROTOCOL.md section 12.

A webhook is ``{"id","url","events","secret","rooms","created_at","created_by"}``; ``rooms``
null means every public room, a list means exactly those rooms (private ones and DMs only when
listed: an operator names them on purpose). Events without a room (``user.registered``,
``notification.created``) go to every webhook that asked for their type. The secret is stored
(it signs every delivery) and never answered again after registration.

The log keeps the latest 100 attempts per webhook (``hooklog.<id>``, ``max_msgs_per_subject``):
``{"event_id","type","attempt","status","duration_ms","error","at","by"}`` (``by``: the replica,
``<host>:<pid>``).
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Annotated, Any, Final

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.events import EVENT_TYPES
from shared.internal import RoomName
from shared.kv_keys import kv_keys
from shared.protocol import utc_timestamp
from shared.stream_reader import direct_batch

logger = logging.getLogger(__name__)

#: Attempts kept per webhook in ``WEBHOOK_LOG`` (the stream's ``max_msgs_per_subject``).
LOG_KEEP: Final = 100
#: Most webhooks one deployment may register.
MAX_WEBHOOKS: Final = 100


class Webhook(BaseModel):
    """One registration as stored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{16}$")]
    url: Annotated[StrictStr, Field(min_length=1, max_length=2048)]
    events: Annotated[list[StrictStr], Field(min_length=1, max_length=len(EVENT_TYPES))]
    secret: Annotated[StrictStr, Field(min_length=16, max_length=256)]
    rooms: Annotated[list[RoomName], Field(max_length=1000)] | None = None
    created_at: str = ""
    created_by: str = ""

    @field_validator("events")
    @classmethod
    def _known(cls, events: list[str]) -> list[str]:
        unknown = sorted(set(events) - set(EVENT_TYPES))
        if unknown:
            raise ValueError(f"unknown event types {unknown}; known: {list(EVENT_TYPES)}")
        return sorted(set(events), key=EVENT_TYPES.index)

    def public(self) -> dict[str, Any]:
        """What ``GET /api/webhooks`` shows: everything but the secret."""
        return self.model_dump(exclude={"secret"})

    def wants(self, event_type: str, room: str | None, private: bool) -> bool:
        """Whether an event of ``event_type`` in ``room`` (None: no room) goes to this webhook."""
        if event_type not in self.events:
            return False
        if room is None:
            return True
        if self.rooms is None:
            return not private
        return room in self.rooms


def new_webhook(
    *, url: str, events: list[str], secret: str | None, rooms: list[str] | None, created_by: str
) -> Webhook:
    """A registration with a fresh id (and a fresh 32-byte secret when none is given).

    Raises:
        pydantic.ValidationError: a field out of its rules.
    """
    return Webhook(
        id=secrets.token_hex(8),
        url=url,
        events=events,
        secret=secret or secrets.token_urlsafe(32),
        rooms=rooms,
        created_at=utc_timestamp(),
        created_by=created_by,
    )


class WebhookStore:
    """The ``natter_webhooks`` bucket and the ``WEBHOOK_LOG`` stream."""

    def __init__(self, nc: Client, js: JetStreamContext, kv: KeyValue, *, timeout: float) -> None:
        self.nc = nc
        self.js = js
        self.kv = kv
        self.timeout = timeout

    async def all(self) -> list[Webhook]:
        """Every registered webhook, oldest first."""
        keys = await kv_keys(self.js, subjects.KV_WEBHOOKS)  # not kv.keys(): see shared.kv_keys
        found = []
        for key in keys:
            webhook = await self.get(key)
            if webhook is not None:
                found.append(webhook)
        return sorted(found, key=lambda w: (w.created_at, w.id))

    async def get(self, webhook_id: str) -> Webhook | None:
        """One webhook, None when unknown."""
        try:
            entry = await self.kv.get(webhook_id)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        try:
            return Webhook.model_validate_json(entry.value)
        except ValueError:
            logger.warning("webhook %s unreadable", webhook_id)
            return None

    async def put(self, webhook: Webhook) -> None:
        """Store a new registration.

        Raises:
            ProtocolError: ``conflict`` beyond :data:`MAX_WEBHOOKS`.
        """
        if len(await self.all()) >= MAX_WEBHOOKS:
            raise ProtocolError(ErrorCode.CONFLICT, f"at most {MAX_WEBHOOKS} webhooks")
        await self.kv.create(webhook.id, webhook.model_dump_json().encode())

    async def delete(self, webhook_id: str) -> bool:
        """Remove a registration and its log and pending deliveries; False when unknown."""
        if await self.get(webhook_id) is None:
            return False
        await self.kv.purge(webhook_id)
        for stream, subject in (
            (subjects.WEBHOOKS_STREAM, subjects.webhook_subject(webhook_id)),
            (subjects.WEBHOOK_LOG_STREAM, subjects.webhook_log_subject(webhook_id)),
        ):
            try:
                await self.js.purge_stream(stream, subject=subject)
            except Exception as error:  # left to age out
                logger.warning("webhook %s: %s not purged: %r", webhook_id, stream, error)
        return True

    async def log(self, webhook_id: str, attempt: dict[str, Any]) -> None:
        """Append one attempt to the webhook's log (best effort)."""
        try:
            await self.js.publish(
                subjects.webhook_log_subject(webhook_id),
                json.dumps(attempt, separators=(",", ":")).encode(),
                stream=subjects.WEBHOOK_LOG_STREAM,
                timeout=self.timeout,
            )
        except Exception as error:
            logger.warning("webhook %s: attempt not logged: %r", webhook_id, error)

    async def deliveries(self, webhook_id: str) -> list[dict[str, Any]]:
        """The latest :data:`LOG_KEEP` attempts, newest first."""
        msgs = await direct_batch(
            self.nc,
            subjects.WEBHOOK_LOG_STREAM,
            subject=subjects.webhook_log_subject(webhook_id),
            start_seq=1,
            batch=LOG_KEEP,
            timeout=self.timeout,
        )
        out = []
        for msg in msgs:
            try:
                out.append(json.loads(msg.data))
            except ValueError:
                continue
        return list(reversed(out))
