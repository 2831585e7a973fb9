"""Store-then-push of per-user notifications, and broadcasts (DESIGN.md rules 4 and 11).

A notification is pushed to ``deliver.user.<user_id>`` (header ``Natter-Kind: notification``)
only after JetStream acknowledged storing it, and only when that store was new: a duplicate
PubAck means the notification already exists and was pushed when it was first stored, so a
redelivered event or a retried request never shows the user the same notification twice.
"""

from __future__ import annotations

import logging
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client

from notify_service.notifications import broadcast_frame, notification_frame
from notify_service.store import NotificationStore
from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.events import envelope

logger = logging.getLogger(__name__)


class Notifier:
    """Stores and pushes notifications for one replica.

    Args:
        nc: the NATS client used for core publishes to delivery subjects.
        store: where notifications are stored.
    """

    def __init__(self, *, nc: Client, store: NotificationStore) -> None:
        self.nc = nc
        self.store = store

    async def notify(self, user_id: str, data: dict[str, Any], *, check_stored: bool = False) -> bool:
        """Store ``data`` for ``user_id`` and push the ``notification`` frame if it is new.

        Args:
            check_stored: first look whether the id is already stored (for redelivered events
                that may be older than JetStream's 10-minute de-duplication window).

        Returns:
            True when this call stored it; False when it already existed.

        Raises:
            ProtocolError: ``unavailable`` when storage does not acknowledge (nothing pushed).
        """
        if check_stored and await self.store.contains(user_id, str(data["id"])):
            logger.info("notification exists user=%s id=%s", user_id, data["id"])
            return False
        result = await self.store.append(user_id, data)
        if result.push:
            await self._publish(
                subjects.deliver_user(user_id), notification_frame(result.data), kind="notification"
            )
        if result.new or result.push:
            await self._feed(user_id, data)
        if not result.new:
            logger.info("duplicate notification user=%s id=%s", user_id, data["id"])
        return result.new

    async def redact(self, user_id: str, notification_id: str) -> bool:
        """Strip the text from ``user_id``'s notification ``notification_id`` (see
        :meth:`NotificationStore.redact`). Nothing is pushed: sockets see the redacted copy in
        their next ``notifications`` summary.

        Returns:
            True when a copy with text was found and erased.

        Raises:
            ProtocolError: ``unavailable`` when storage does not confirm.
        """
        return await self.store.redact(user_id, notification_id)

    async def _feed(self, user_id: str, data: dict[str, Any]) -> None:
        """Publish ``notification.created`` on the event feed (PROTOCOL.md section 12), id
        ``notification:<id>`` (a repeat within 10 minutes is dropped). A mention's excerpt is
        left out (``message`` ``""``): the message may be deleted later, and the feed keeps no
        copy of text it cannot take back (section 8); consumers read the message from its room.
        Best effort: a failure is logged, the notification itself is stored and pushed."""
        event_data = {**data, "user_id": user_id}
        metadata = data.get("metadata")
        if isinstance(metadata, dict) and "room" in metadata and "seq" in metadata:
            event_data["message"] = ""
        event_id = f"notification:{data['id']}"
        try:
            body = envelope(
                "notification.created", event_id, event_data, created_at=str(data.get("timestamp"))
            )
            await self.nc.jetstream().publish(
                subjects.EVENT_NOTIFICATION_CREATED,
                body,
                stream=subjects.EVENTS_STREAM,
                headers={"Nats-Msg-Id": event_id},
            )
        except (ValueError, nats.errors.Error, nats.js.errors.APIError) as error:
            logger.warning("notification.created for %s not published: %r", data.get("id"), error)

    async def broadcast(self, *, title: str, message: str, notification_type: str) -> None:
        """Publish one ``broadcast_notification`` frame to ``deliver.all`` (header
        ``Natter-Kind: broadcast``). Broadcasts are not stored: only sockets connected now get
        them (core NATS, at most once).

        Raises:
            ProtocolError: ``unavailable`` when the connection cannot take the publish.
        """
        frame = broadcast_frame(title=title, message=message, notification_type=notification_type)
        if not await self._publish(subjects.DELIVER_ALL, frame, kind="broadcast"):
            raise ProtocolError(ErrorCode.UNAVAILABLE)

    async def _publish(self, subject: str, frame: bytes, *, kind: str) -> bool:
        try:
            await self.nc.publish(subject, frame, headers={subjects.HDR_KIND: kind})
        except nats.errors.Error as error:  # closed, or the reconnect buffer is full
            logger.warning("push failed subject=%s error=%r", subject, error)
            return False
        return True
