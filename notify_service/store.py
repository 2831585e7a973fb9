"""Notifications in stream ``NOTIFICATIONS`` and read state in KV ``natter_notify_read``.

Storage rules (docs/subjects.md): one notification per entry on ``notif.<user_id>``, body = the
compact ``data`` object, ``Nats-Msg-Id`` = notification id, so JetStream de-duplicates a second
store of the same id inside the 10-minute window (PubAck ``duplicate: true``). The stream keeps
500 notifications per user for 30 days. Read state is updated with optimistic concurrency
(``kv.create`` / ``kv.update(last=revision)``, retried on conflict), so two replicas marking
notifications of the same user never lose each other's update.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Final

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from notify_service.notifications import encode_data, is_redacted, redacted
from notify_service.read_state import ReadState, decode_state, encode_state, merge
from notify_service.summary import StoredNotification, decode_stored
from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.stream_reader import direct_batch, kv_entry
from shared.streams import NOTIFICATIONS_PER_USER

logger = logging.getLogger(__name__)

#: Attempts to store one notification when its PubAck times out (same ``Nats-Msg-Id`` each time).
PUBLISH_ATTEMPTS: Final = 3
#: Attempts of a read-state update that keeps losing the optimistic-concurrency race.
READ_STATE_ATTEMPTS: Final = 10


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Outcome of :meth:`NotificationStore.append`.

    Attributes:
        data: the stored bytes (compact ``data`` JSON).
        new: the PubAck was not a duplicate: this call stored the notification.
        push: the caller should push it: it is new, or it is a duplicate of this very call's
            earlier attempt whose PubAck timed out (the first attempt stored it, nobody pushed).
    """

    data: bytes
    new: bool
    push: bool


class NotificationStore:
    """Reads and writes one replica's notifications and read state.

    Args:
        nc: the connected NATS client (direct gets go through it).
        js: a JetStream context.
        kv: the ``natter_notify_read`` bucket.
        timeout: seconds to wait for JetStream answers before ``unavailable``.
    """

    def __init__(self, *, nc: Client, js: JetStreamContext, kv: KeyValue, timeout: float) -> None:
        self.nc = nc
        self.js = js
        self.kv = kv
        self.timeout = timeout

    async def append(self, user_id: str, data: dict[str, Any]) -> AppendResult:
        """Store ``data`` on ``notif.<user_id>`` with ``Nats-Msg-Id`` = ``data["id"]``.

        A PubAck timeout means "unknown" (DESIGN.md rule 11): the same message is published again
        with the same ``Nats-Msg-Id``, up to :data:`PUBLISH_ATTEMPTS` times.

        Raises:
            ProtocolError: ``validation_error`` for a bad user id, ``unavailable`` when
                JetStream does not acknowledge.
        """
        subject = subjects.notifications_subject(user_id)
        payload = encode_data(data)
        timed_out = False
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                ack = await self.js.publish(
                    subject,
                    payload,
                    timeout=self.timeout,
                    stream=subjects.NOTIFICATIONS_STREAM,
                    headers={"Nats-Msg-Id": str(data["id"])},
                )
            except (nats.errors.TimeoutError, nats.js.errors.NoStreamResponseError) as error:
                timed_out = timed_out or isinstance(error, nats.errors.TimeoutError)
                logger.warning("notification store attempt=%d user=%s failed: %r", attempt, user_id, error)
                await asyncio.sleep(0.2 * attempt)
                continue
            except nats.js.errors.APIError as error:
                logger.error("notification store rejected user=%s error=%r", user_id, error)
                raise ProtocolError(ErrorCode.UNAVAILABLE) from error
            except nats.errors.Error as error:  # reconnecting, closed
                logger.warning("notification store attempt=%d user=%s failed: %r", attempt, user_id, error)
                await asyncio.sleep(0.2 * attempt)
                continue
            duplicate = bool(ack.duplicate)
            return AppendResult(data=payload, new=not duplicate, push=not duplicate or timed_out)
        raise ProtocolError(ErrorCode.UNAVAILABLE)

    async def load(self, user_id: str) -> list[StoredNotification]:
        """Every stored notification of ``user_id`` (at most 500), oldest first.

        Raises:
            ProtocolError: ``validation_error`` for a bad user id; ``unavailable`` on timeout.
        """
        messages = await direct_batch(
            self.nc,
            subjects.NOTIFICATIONS_STREAM,
            subject=subjects.notifications_subject(user_id),
            start_seq=1,
            batch=NOTIFICATIONS_PER_USER,
            timeout=self.timeout,
        )
        latest: dict[str, StoredNotification] = {}
        for message in messages:
            item = decode_stored(message.stream_seq, message.data)
            if item is not None:  # a redacted copy replaces the original (stored later)
                latest[item.id] = item
        return sorted(latest.values(), key=lambda item: item.stream_seq)

    async def redact(self, user_id: str, notification_id: str) -> bool:
        """Replace notification ``notification_id`` of ``user_id`` by a copy without its text
        (``message`` ``""``, ``metadata.deleted`` true), then erase every stored copy with
        text (``STREAM.MSG.DELETE``, NATS docs "Deleting messages"). Keeps its read state: a
        notification read before stays read. Safe to repeat.

        Returns:
            True when a copy with text was found (and is now gone).

        Raises:
            ProtocolError: ``unavailable`` when storage does not confirm (the caller retries).
        """
        messages = await direct_batch(
            self.nc,
            subjects.NOTIFICATIONS_STREAM,
            subject=subjects.notifications_subject(user_id),
            start_seq=1,
            batch=NOTIFICATIONS_PER_USER,
            timeout=self.timeout,
        )
        copies = [
            item
            for item in (decode_stored(message.stream_seq, message.data) for message in messages)
            if item is not None and item.id == notification_id
        ]
        with_text = [item for item in copies if not is_redacted(item.data)]
        if not with_text:
            return False
        if not any(is_redacted(item.data) for item in copies):
            state, _ = await self.read_state(user_id)
            was_read = state.is_read(copies[-1].stream_seq, notification_id)
            await self._store_redacted(user_id, redacted(copies[-1].data))
            if was_read:
                await self.mark_read(user_id, ids=[notification_id], mark_all=False)
        for item in with_text:
            await self._erase(item.stream_seq)
        return True

    async def _store_redacted(self, user_id: str, data: dict[str, Any]) -> None:
        subject = subjects.notifications_subject(user_id)
        try:
            await self.js.publish(
                subject,
                encode_data(data),
                timeout=self.timeout,
                stream=subjects.NOTIFICATIONS_STREAM,
                headers={"Nats-Msg-Id": f"{data['id']}:deleted"},
            )
        except (nats.errors.Error, TimeoutError) as error:
            raise ProtocolError(ErrorCode.UNAVAILABLE) from error

    async def _erase(self, stream_seq: int) -> None:
        try:
            await self.js.delete_msg(subjects.NOTIFICATIONS_STREAM, stream_seq)
        except nats.js.errors.NotFoundError:  # already gone
            return
        except nats.js.errors.APIError as error:
            if error.err_code in (10057, 10043):  # no such message: erased already
                return
            raise ProtocolError(ErrorCode.UNAVAILABLE) from error
        except (nats.errors.Error, TimeoutError) as error:
            raise ProtocolError(ErrorCode.UNAVAILABLE) from error

    async def contains(self, user_id: str, notification_id: str) -> bool:
        """True when ``user_id`` still has a notification with ``notification_id``.

        Used for redelivered events, whose first delivery may be older than the 10-minute
        de-duplication window."""
        return any(item.id == notification_id for item in await self.load(user_id))

    async def read_state(self, user_id: str) -> tuple[ReadState, int | None]:
        """The user's read state and its KV revision (``None`` when there is no entry yet).

        Raises:
            ProtocolError: ``unavailable`` when the bucket does not answer.
        """
        entry = await kv_entry(
            self.nc, subjects.KV_NOTIFY_READ, subjects.check_user_id(user_id), timeout=self.timeout
        )
        if entry is None:
            return ReadState(), None
        return decode_state(entry.data), entry.stream_seq

    async def _save_state(self, user_id: str, state: ReadState, revision: int | None) -> bool:
        """Write ``state`` if the entry is still at ``revision``; False on a concurrent change."""
        value = encode_state(state)
        try:
            if revision is None:
                await self.kv.create(user_id, value)
            else:
                await self.kv.update(user_id, value, last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        except (nats.errors.Error, TimeoutError) as error:
            raise ProtocolError(ErrorCode.UNAVAILABLE) from error
        return True

    async def mark_read(
        self, user_id: str, *, ids: list[str], mark_all: bool
    ) -> tuple[list[StoredNotification], ReadState]:
        """Mark ``ids`` (or, with ``mark_all``, everything stored now) as read for ``user_id``.

        Returns:
            The stored notifications and the new read state.

        Raises:
            ProtocolError: ``validation_error`` for a bad user id; ``unavailable`` when storage
                does not answer or the update keeps conflicting.
        """
        subjects.check_user_id(user_id)
        for _ in range(READ_STATE_ATTEMPTS):
            stored = await self.load(user_id)
            state, revision = await self.read_state(user_id)
            new_state = merge(
                state, stored=((item.stream_seq, item.id) for item in stored), ids=ids, mark_all=mark_all
            )
            if new_state == state:  # nothing to write (already read, or unknown ids)
                return stored, state
            if await self._save_state(user_id, new_state, revision):
                return stored, new_state
            logger.info("read state conflict user=%s; retrying", user_id)
        raise ProtocolError(ErrorCode.UNAVAILABLE)
