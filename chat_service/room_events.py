"""The v2 room event endpoints: ``chat.edit``, ``chat.delete``, ``chat.react`` (PROTOCOL.md
section 8; docs/subjects.md "Room logs").

Each request is validated against the target message's current state *inside* the append
(:meth:`chat_service.roomlog.log.RoomLog.append` calls ``prepare`` per attempt, under the room
lock, after a lost race re-reads the room), and stored as one atomic batch: the event, the new
state of the message (compare-and-set on the state's own subject, so a state read from a lagging
replica can never overwrite a newer one), and the request's idempotency record. A request that
changes nothing (a reaction the user already holds, an edit to the same text) stores nothing and
is acked with ``seq: null``.

Delete means gone: the batch also writes tombstones (the redacted forms replays show) for the
message and each of its edits, and a pending purge (:class:`PurgePlan`: the entries to erase and
who the message mentioned); before the ``message_deleted`` frame is
delivered and the request acked, the original entries are erased from the stream
(:meth:`RoomLog.erase`). A replica that dies in between leaves the pending purge, which
:class:`chat_service.roomlog.purge.Purger` finishes within 30 s.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client

from chat_service import frames, moderation
from chat_service.attachments import attachment_ids
from chat_service.components import Runtime
from chat_service.mentions import extract_mentions
from chat_service.roomlog import bodies
from chat_service.roomlog.log import Appended, Draft
from chat_service.roomlog.purge import PURGE_TTL, PurgePlan
from chat_service.roomlog.reads import Entry
from chat_service.roomlog.state import MessageState
from chat_service.rooms import Room
from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.internal import DeleteRequest, EditRequest, EventRequest, ReactRequest
from shared.protocol import dumps, utc_timestamp
from shared.room_entries import HDR_COUNT, HDR_THREAD_COUNT
from shared.service_runner import ServiceApp

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Target:
    """The message an event is about: its stored entry, decoded body, and current state."""

    entry: Entry
    data: dict[str, Any]
    state: MessageState | None

    @property
    def author(self) -> str:
        """The user id of whoever sent it."""
        return str(self.data.get("user_id") or "")

    @property
    def username(self) -> str:
        """The username it was sent with."""
        return str(self.data.get("username") or "")

    @property
    def text(self) -> str:
        """Its current text."""
        if self.state is not None and self.state.edited is not None:
            return self.state.edited
        return str(self.data.get("message") or "")

    def base_state(self) -> MessageState:
        """The state to change (a fresh one for an untouched message)."""
        return self.state or MessageState(stream_seq=self.entry.stream_seq)


def state_write(
    subject: str, state: MessageState, previous: MessageState | None
) -> tuple[str, bytes, dict[str, str]]:
    """One state write of an atomic batch: rollup (only the latest state is kept) and
    compare-and-set against the revision it was read at (0: none stored)."""
    return (
        subject,
        state.encode(),
        {
            "Nats-Rollup": "sub",
            "Nats-Expected-Last-Subject-Sequence": str(previous.revision if previous else 0),
        },
    )


def _event(kind: str, req: EventRequest, seq: int, timestamp: str, **fields: Any) -> bytes:
    """The stored body of an event ``req`` causes at ``seq``."""
    return bodies.event_body(
        kind,
        seq=seq,
        user_id=req.user_id,
        username=req.username,
        timestamp=timestamp,
        target=req.target,
        **fields,
    )


async def deliver_entry(nc: Client, room: str, seq: int, body: bytes, kind: str) -> None:
    """Publish a stored entry's frame on ``deliver.room.<room>`` (``Natter-Seq`` and
    ``Natter-Kind`` let gateways order it without decoding it)."""
    await nc.publish(
        subjects.deliver_room(room),
        bodies.frame(room, body),
        headers={
            subjects.HDR_ROOM: room,
            subjects.HDR_SEQ: str(seq),
            subjects.HDR_KIND: kind,
            subjects.HDR_STORED_MS: str(int(time.time() * 1000)),
        },
    )


class RoomEvents:
    """``chat.edit``, ``chat.delete`` and ``chat.react`` of one replica."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def register(self, app: ServiceApp) -> None:
        """Add the endpoints to ``app``."""
        app.add_endpoint(subjects.CHAT_EDIT, self.edit)
        app.add_endpoint(subjects.CHAT_DELETE, self.delete)
        app.add_endpoint(subjects.CHAT_REACT, self.react)

    async def target(self, room: str, seq: int) -> Target:
        """Message ``seq`` of ``room`` as it is now.

        Raises:
            ProtocolError: ``message_not_found`` when there is no such message or it is deleted.
        """
        log = self.runtime.parts.log
        entry = await log.message(room, seq)
        if entry is None:
            raise ProtocolError(ErrorCode.MESSAGE_NOT_FOUND)
        state = await log.state(room, seq)
        if state is not None and state.deleted:
            raise ProtocolError(ErrorCode.MESSAGE_NOT_FOUND)
        return Target(entry=entry, data=bodies.decode(entry.data), state=state)

    async def _room(self, req: EventRequest, *, speaking: bool = True) -> Room:
        """The room if the caller may read it and (``speaking``: edit, react) is not muted."""
        room = await self.runtime.parts.room_cache.require_access(req.room, req.user_id)
        if speaking and room.is_muted(req.user_id):
            raise ProtocolError(ErrorCode.MUTED)
        return room

    async def _store(self, req: EventRequest, room: Room, prepare: Any) -> bytes:
        """Append an event through ``prepare``, deliver it, answer the ``ack`` frame."""
        parts = self.runtime.parts

        async def deliver(stored: Appended) -> None:
            await self.after_store(room.name, stored)

        stored = await parts.log.append(
            room.name,
            user_id=req.user_id,
            client_msg_id=req.client_msg_id,
            prepare=prepare,
            after_store=deliver,
            batch=True,
            seq_floor=room.seq_floor,
        )
        if stored is None:
            return frames.event_ack_frame(
                room=room.name, client_msg_id=req.client_msg_id, seq=None, target=req.target
            )
        timestamp = None
        if stored.record is not None:
            timestamp = stored.record.get("timestamp")
        elif stored.data:
            timestamp = bodies.decode(stored.data).get("timestamp")
        return frames.event_ack_frame(
            room=room.name,
            client_msg_id=req.client_msg_id,
            seq=stored.seq,
            target=req.target,
            timestamp=timestamp if isinstance(timestamp, str) else None,
        )

    async def after_store(self, room: str, stored: Appended) -> None:
        """Under the room lock, before the ack: finish a delete's purge, then deliver."""
        if stored.duplicate or not stored.data:
            return
        data = bodies.decode(stored.data)
        if data.get("type") == bodies.DELETED and isinstance(stored.note, PurgePlan):
            await self.runtime.parts.purger.purge(room, int(data["target"]), stored.note)
        await deliver_entry(
            self.runtime.parts.nc, room, stored.seq, stored.data, str(data.get("type") or bodies.MESSAGE)
        )

    # --- endpoints --------------------------------------------------------------------------
    async def edit(self, body: dict[str, Any], headers: dict[str, str]) -> bytes:
        """``chat.edit``: the author's new text for ``target``.

        Raises:
            ProtocolError: ``message_not_found``, ``forbidden`` (not the author),
                ``validation_error`` (empty after trimming), ``room_not_found``, ``unavailable``.
        """
        req = EditRequest.model_validate(body)
        text = req.message.strip()
        if not text:
            raise ProtocolError(ErrorCode.VALIDATION_ERROR, "message: must not be empty")
        room = await self._room(req)
        where = self.runtime.parts.log.where(room.name)

        async def prepare(seq: int, count: int) -> Draft | None:
            target = await self.target(room.name, req.target)
            if target.author != req.user_id:
                raise ProtocolError(ErrorCode.FORBIDDEN, "Only the author can edit a message")
            if target.text == text:
                return None
            timestamp = utc_timestamp()
            event = _event(bodies.EDITED, req, seq, timestamp, message=text, edited_at=timestamp)
            state = target.base_state().edit(seq=seq, text=text, edited_at=timestamp)
            return Draft(
                subject=where.event_subject,
                body=event,
                extra=(state_write(where.state_subject(req.target), state, target.state),),
                record={"timestamp": timestamp, "target": req.target},
            )

        return await self._store(req, room, prepare)

    async def react(self, body: dict[str, Any], headers: dict[str, str]) -> bytes:
        """``chat.react``: add or remove the user's ``emoji`` on ``target``.

        Raises:
            ProtocolError: ``message_not_found``, ``validation_error`` (a 21st distinct emoji),
                ``room_not_found``, ``unavailable``.
        """
        req = ReactRequest.model_validate(body)
        room = await self._room(req)
        where = self.runtime.parts.log.where(room.name)
        add = req.op == "add"

        async def prepare(seq: int, count: int) -> Draft | None:
            target = await self.target(room.name, req.target)
            base = target.base_state()
            if base.has_reaction(req.emoji, req.user_id) == add:
                return None
            if add and not base.can_add_emoji(req.emoji):
                raise ProtocolError(
                    ErrorCode.VALIDATION_ERROR, "emoji: at most 20 distinct emoji per message"
                )
            timestamp = utc_timestamp()
            event = _event(bodies.REACTION, req, seq, timestamp, emoji=req.emoji, op=req.op)
            state = base.react(seq=seq, emoji=req.emoji, user_id=req.user_id, add=add)
            return Draft(
                subject=where.event_subject,
                body=event,
                extra=(state_write(where.state_subject(req.target), state, target.state),),
                record={"timestamp": timestamp, "target": req.target},
            )

        return await self._store(req, room, prepare)

    async def delete(self, body: dict[str, Any], headers: dict[str, str]) -> bytes:
        """``chat.delete``: the author, a moderator or the owner of the room, or a service/admin
        token deletes ``target`` for good (module docstring).

        Raises:
            ProtocolError: ``message_not_found``, ``forbidden``, ``room_not_found``,
                ``unavailable``.
        """
        req = DeleteRequest.model_validate(body)
        room = await self._room(req, speaking=False)
        log = self.runtime.parts.log
        where = log.where(room.name)

        async def prepare(seq: int, count: int) -> Draft | None:
            target = await self.target(room.name, req.target)
            may = moderation.may_delete(room, req.user_id, req.role, target.author)
            if not may:
                raise ProtocolError(
                    ErrorCode.FORBIDDEN, "Only the author or a moderator can delete a message"
                )
            timestamp = utc_timestamp()
            event = _event(bodies.DELETED, req, seq, timestamp)
            previous = target.state
            state = target.base_state().delete(seq=seq)
            writes = [state_write(where.state_subject(req.target), state, previous)]
            # Tombstones: what a replay shows instead of each erased entry.
            stone = dumps(bodies.redacted(target.data)).encode()
            stone_headers = {
                name: value
                for name, value in target.entry.headers.items()
                if name in (subjects.HDR_SEQ, HDR_COUNT, HDR_THREAD_COUNT)
            }
            writes.append((where.tombstone_subject(req.target), stone, stone_headers))
            count = int(stone_headers.get(HDR_COUNT, 0))
            writes.append((where.count_tombstone_subject(count), stone, stone_headers))
            parent = target.data.get("reply_to")
            if isinstance(parent, int) and parent > 0:
                thread_count = int(stone_headers.get(HDR_THREAD_COUNT, 0))
                writes.append((where.thread_tombstone_subject(parent, thread_count), stone, stone_headers))
            erase = [target.entry.stream_seq]
            for edit_seq in previous.edits if previous else ():
                edit = await log.log_entry(room.name, edit_seq)
                if edit is None:
                    continue
                writes.append(
                    (
                        where.tombstone_subject(edit_seq),
                        dumps(bodies.redacted(bodies.decode(edit.data))).encode(),
                        {},
                    )
                )
                erase.append(edit.stream_seq)
            if isinstance(parent, int) and parent > 0:
                parent_state = await log.state(room.name, parent)
                if parent_state is not None:
                    writes.append(
                        state_write(
                            where.state_subject(parent), parent_state.reply_deleted(seq=seq), parent_state
                        )
                    )
            # Who its mention notifications went to: notify strips their text (PROTOCOL.md 8).
            plan = PurgePlan(
                attachments=tuple(attachment_ids(target.entry.data)),
                erase=tuple(erase),
                mentions=tuple(
                    extract_mentions(str(target.data.get("message") or ""), sender=target.username)
                ),
            )
            writes.append((where.purge_subject(req.target), plan.encode(), {"Nats-TTL": PURGE_TTL}))
            return Draft(
                subject=where.event_subject,
                body=event,
                extra=tuple(writes),
                record={"timestamp": timestamp, "target": req.target},
                note=plan,
            )

        return await self._store(req, room, prepare)
