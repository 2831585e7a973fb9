"""Attachment records (PROTOCOL.md section 11): who uploaded what to which room, and which message
took it; the files themselves are in the Object Store bucket ``natter_attachments`` (the gateway
streams them in and out; DESIGN.md rule 16).

- ``chat.attachments.register``: the gateway, having stored a file (and an image's thumbnail,
  ``<id>.thumb``), records it: bucket ``natter_attachments``, key = the id.
- A ``chat_message`` with ``attachments`` claims each one before the message is stored: the
  record must exist, be the sender's, in this room, and be unclaimed or claimed by this very
  request (a retry with the same ``client_msg_id``); the claim is a compare-and-set on the
  record, so two messages can never take the same file (``validation_error`` otherwise).
- ``chat.attachments.get``: the record, for whoever may read its room now (``forbidden``,
  ``not_found``), so that the gateway can stream the file.
- Deleting the message deletes its attachments (:meth:`Attachments.delete`, from the purge): the
  objects are removed from the store and the records with them.
- An upload no message took within ``unclaimed_upload_hours`` is removed the same way
  (:mod:`chat_service.upload_sweep`); the sweep marks the record :data:`SWEPT` first.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

import nats.errors
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, ObjectNotFoundError
from nats.js.kv import KeyValue

from chat_service.rooms import RoomRegistry, check_access
from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.internal import AttachmentGetRequest, AttachmentRecord
from shared.protocol import utc_timestamp

logger = logging.getLogger(__name__)

#: The ``claim`` of a record the upload sweep took (its files are being removed).
SWEPT: Final = "_swept"


class Attachments:
    """The records of one replica (``kv``: the ``natter_attachments`` bucket)."""

    def __init__(self, nc: Client, kv: KeyValue, rooms: RoomRegistry) -> None:
        self.nc = nc
        self.kv = kv
        self.rooms = rooms

    async def register(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``chat.attachments.register``: the uploader must be allowed to send in the room
        (``room_not_found``, ``forbidden``, ``muted``); store the record, answer its public part.
        With ``"dry_run": true`` only the check runs (the gateway asks before it stores bytes)."""
        body = dict(body)
        dry_run = body.pop("dry_run", False) is True
        record = AttachmentRecord.model_validate({**body, "claim": None})
        room = await self.rooms.require(record.room)
        check_access(room, record.user_id)
        if room.is_muted(record.user_id):
            raise ProtocolError(ErrorCode.MUTED)
        if dry_run:
            return {}
        if not record.created_at:
            record = record.model_copy(update={"created_at": utc_timestamp()})
        await self.kv.create(record.attachment_id, record.model_dump_json().encode())
        return record.public()

    async def record(self, attachment_id: str) -> tuple[AttachmentRecord, int] | None:
        """The record and its KV revision, None when unknown."""
        try:
            entry = await self.kv.get(attachment_id)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        record = AttachmentRecord.model_validate_json(entry.value)
        if record.claim == SWEPT:
            return None  # being removed by the upload sweep: gone for everyone
        return record, int(entry.revision or 0)

    async def get(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``chat.attachments.get`` (module docstring).

        Raises:
            ProtocolError: ``not_found``, ``forbidden``.
        """
        req = AttachmentGetRequest.model_validate(body)
        found = await self.record(req.attachment_id)
        if found is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "Attachment not found")
        record = found[0]
        if req.role == "user":
            room = await self.rooms.get(record.room)
            if room is None:
                raise ProtocolError(ErrorCode.NOT_FOUND, "Attachment not found")
            check_access(room, req.user_id)
        return {**record.public(), "thumbnail": record.thumbnail, "room": record.room}

    async def claim(self, ids: list[str], *, room: str, user_id: str, key: str) -> list[dict[str, Any]]:
        """Claim ``ids`` for the message of request ``key``; their public parts, in order.

        Raises:
            ProtocolError: ``validation_error`` naming the first attachment that is unknown,
                someone else's, of another room, or taken by another message.
        """
        if len(set(ids)) != len(ids):
            raise ProtocolError(ErrorCode.VALIDATION_ERROR, "attachments: each at most once")
        claimed = []
        for attachment_id in ids:
            for _ in range(3):
                found = await self.record(attachment_id)
                if found is None or found[0].user_id != user_id or found[0].room != room:
                    raise ProtocolError(
                        ErrorCode.VALIDATION_ERROR,
                        f"attachments: {attachment_id} is not one you uploaded to this room",
                    )
                record, revision = found
                if record.claim not in (None, key):
                    raise ProtocolError(
                        ErrorCode.VALIDATION_ERROR, f"attachments: {attachment_id} is already used"
                    )
                if record.claim == key:
                    break
                try:
                    taken = record.model_copy(update={"claim": key})
                    await self.kv.update(attachment_id, taken.model_dump_json().encode(), last=revision)
                    break
                except KeyWrongLastSequenceError:
                    continue  # raced: read it again
            else:
                raise ProtocolError(ErrorCode.UNAVAILABLE)
            claimed.append(record.public())
        return claimed

    async def release(self, ids: list[str], *, key: str) -> None:
        """Undo :meth:`claim` for a message that was refused after the claim (a reply to a
        deleted message ...): each file claimed by ``key`` is free again. Best effort: a file
        left claimed stays usable by a retry of the same ``client_msg_id``."""
        for attachment_id in ids:
            found = await self.record(attachment_id)
            if found is None or found[0].claim != key:
                continue
            record, revision = found
            try:
                free = record.model_copy(update={"claim": None})
                await self.kv.update(attachment_id, free.model_dump_json().encode(), last=revision)
            except (KeyWrongLastSequenceError, nats.errors.Error) as error:
                logger.info("attachment %s not released: %r", attachment_id, error)

    async def delete(self, attachment_ids: list[str]) -> None:
        """Remove the files (and thumbnails) and their records; gone already counts as done.

        Raises:
            ProtocolError: ``unavailable`` when storage does not confirm.
        """
        if not attachment_ids:
            return
        try:
            store = await self.nc.jetstream().object_store(subjects.OBJ_ATTACHMENTS)
            for attachment_id in attachment_ids:
                for name in (attachment_id, f"{attachment_id}.thumb"):
                    try:
                        await store.delete(name)
                    except ObjectNotFoundError:
                        pass
                try:
                    await self.kv.purge(attachment_id)
                except KeyNotFoundError:
                    pass
        except nats.errors.Error as error:
            logger.warning("attachments %s not deleted yet: %r", attachment_ids, error)
            raise ProtocolError(ErrorCode.UNAVAILABLE) from error


def attachment_ids(message_body: bytes) -> list[str]:
    """The attachment ids a stored message carries."""
    try:
        data = json.loads(message_body)
    except ValueError:
        return []
    return [str(a.get("attachment_id")) for a in data.get("attachments") or [] if isinstance(a, dict)]
