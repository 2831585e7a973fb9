"""The ``chat.join``, ``chat.leave``, ``chat.send``, ``chat.history`` and ``chat.presence``
endpoints (docs/subjects.md): validation, access rules and reply frames.

Each handler takes the decoded request body (a model of ``shared/internal.py``) and answers the
final client frame as bytes, without ``id`` (the gateway splices it in). Errors are
:class:`~shared.errors.ProtocolError` (the service runner turns them into NATS service error
headers); a ``pydantic.ValidationError`` is ``validation_error``. Bad input is refused before
anything is written. Room management lives in :mod:`chat_service.room_admin`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import nats.errors
from pydantic import ValidationError

from chat_service import frames
from chat_service.access import readers
from chat_service.components import Components, Runtime
from chat_service.config import Settings
from chat_service.events import publish_mentions
from chat_service.read_state import ReadState, unread_count
from chat_service.room_events import deliver_entry, state_write
from chat_service.roomlog import bodies, pages
from chat_service.roomlog.log import Appended, Draft
from chat_service.roomlog.state import MessageState
from chat_service.rooms import Room, check_access
from shared import room_shards, subjects
from shared.errors import ErrorCode, ProtocolError
from shared.internal import (
    AccessRequest,
    ApiPostRequest,
    HistoryRequest,
    JoinRequest,
    LeaveRequest,
    PresenceRequest,
    SendBatchRequest,
    SendRequest,
)
from shared.protocol import error_frame, utc_timestamp
from shared.room_entries import HDR_THREAD_COUNT
from shared.service_runner import HeaderedReply, ServiceApp, validation_error

logger = logging.getLogger(__name__)


def _more_before(messages: list[bytes], fitted: list[bytes]) -> dict[str, str]:
    """Headers saying which older messages of ``messages`` did not fit (``fitted`` is their
    newest end): the ``len(messages) - len(fitted)`` before the oldest one kept."""
    oldest_kept = frames.seq_of(fitted[0]) if fitted else frames.seq_of(messages[-1]) + 1
    return {
        subjects.HDR_MORE_BEFORE: str(oldest_kept),
        subjects.HDR_MORE_COUNT: str(len(messages) - len(fitted)),
    }


@dataclass(frozen=True, slots=True)
class AdmittedMessage:
    """A message that passed :meth:`ChatHandlers.admit_message`: the request, its room, the
    trimmed text, the claimed attachments (``None``: none) and their claim key."""

    req: SendRequest
    room: Room
    text: str
    files: list[dict[str, Any]] | None
    key: str


def _error_line(error: Exception) -> bytes:
    """The ``error`` frame of one batch item (no ``id``): its ProtocolError, ``validation_error``
    for a malformed item, ``internal`` (logged) for anything unexpected, as the service runner
    answers a single request."""
    if isinstance(error, ValidationError):
        error = validation_error(error)
    elif not isinstance(error, ProtocolError):
        logger.error("chat.send.batch item failed", exc_info=error)
        error = ProtocolError(ErrorCode.INTERNAL)
    return error_frame(error).encode()


async def _frame_of(task: asyncio.Task[HeaderedReply]) -> bytes:
    """The line a started batch item answers: its ack frame or its error frame."""
    try:
        return (await task).body
    except Exception as error:
        return _error_line(error)


class ChatHandlers:
    """The room membership, presence and message endpoints of one replica."""

    def __init__(self, runtime: Runtime, read_state: ReadState) -> None:
        self.runtime = runtime
        self.read_state = read_state

    @property
    def parts(self) -> Components:
        """Shortcut to the runtime's components."""
        return self.runtime.parts

    @property
    def settings(self) -> Settings:
        """The replica's settings."""
        return self.runtime.settings

    def register(self, app: ServiceApp) -> None:
        """Add ``chat.join|leave|send|history|presence`` to ``app``."""
        app.add_endpoint(subjects.CHAT_JOIN, self.join)
        app.add_endpoint(subjects.CHAT_LEAVE, self.leave)
        app.add_endpoint(subjects.CHAT_SEND, self.send)
        app.add_endpoint(subjects.CHAT_SEND_BATCH, self.send_batch)
        app.add_endpoint(subjects.CHAT_HISTORY, self.history)
        app.add_endpoint(subjects.CHAT_PRESENCE, self.presence)
        app.add_endpoint(subjects.CHAT_ACCESS, self.access)
        app.add_endpoint(subjects.API_ROOMS_POST, self.post)
        app.add_endpoint(subjects.CHAT_ATTACHMENTS_REGISTER, self.register_attachment)
        app.add_endpoint(subjects.CHAT_ATTACHMENTS_GET, self.get_attachment)

    async def register_attachment(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``chat.attachments.register`` (:mod:`chat_service.attachments`)."""
        return await self.parts.attachments.register(body, headers)

    async def get_attachment(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``chat.attachments.get`` (:mod:`chat_service.attachments`)."""
        return await self.parts.attachments.get(body, headers)

    # --- rooms and presence ----------------------------------------------------------------

    async def join(self, body: dict[str, Any], headers: dict[str, str]) -> HeaderedReply:
        """``chat.join``: the ``joined`` frame; creates a missing public room; ``forbidden`` for a
        private room without membership.

        Storage, presence recording and the online list are read concurrently; if any of them
        fails, the presence just recorded is withdrawn (best effort), so a failed join leaves no
        presence behind.
        """
        req = JoinRequest.model_validate(body)
        parts = self.parts
        room = await parts.room_cache.get_or_create_public(req.room)
        check_access(room, req.user_id)

        async def presence_and_online() -> list[frames.OnlineUser]:
            """The room's online users; a user's first socket here records presence first."""
            if req.first_local:
                _, online = await parts.presence.join(
                    req.room, user_id=req.user_id, username=req.username, gateway_id=req.gateway_id
                )
                return online
            return await parts.presence.online(req.room)

        # One read of the room's tail serves both the recovery and the unread count.
        tail_read = asyncio.ensure_future(parts.log.tail(req.room))

        async def read_state() -> tuple[int, int]:
            """The user's marker and unread count; the first join makes them a member."""
            membership = await parts.memberships.get(req.user_id, req.room)
            membership = await parts.memberships.ensure(req.user_id, req.room, known=membership)
            tail = await tail_read
            return membership.read_seq, await unread_count(parts.log, req.room, membership.read_seq, tail)

        recovery, online, marker = await asyncio.gather(
            pages.recover(
                parts.log,
                req.room,
                req.since,
                recovery_limit=self.settings.recovery_limit,
                latest=self.settings.join_latest,
                me=req.user_id,
                seq_floor=room.seq_floor,
                tail_read=tail_read,
            ),
            presence_and_online(),
            read_state(),
            return_exceptions=True,
        )
        failed = next((o for o in (recovery, online, marker) if isinstance(o, BaseException)), None)
        if failed is not None:
            if req.first_local:
                await self._withdraw_presence(req)
            raise failed
        assert isinstance(recovery, pages.Recovery) and isinstance(online, list) and isinstance(marker, tuple)
        read_seq, unread = min(marker[0], recovery.last_seq), marker[1]
        if all(user.user_id != req.user_id for user in online):
            online.append(frames.OnlineUser(user_id=req.user_id, username=req.username))
            online.sort(key=lambda user: (user.username.lower(), user.user_id))
        messages, recovered = recovery.messages, recovery.recovered
        envelope = len(
            frames.joined_frame(
                room=req.room,
                last_seq=recovery.last_seq,
                online=online,
                messages=[],
                recovered=recovered,
                read_seq=read_seq,
                unread=unread,
            )
        )
        budget = self.runtime.payload_budget() - envelope
        # The registry revision this join was authorised at: a removal announced with a newer
        # revision applies to this socket even if it arrives before the answer (chat_service.access).
        reply_headers = {
            subjects.HDR_ROOM_REV: str(room.revision),
            subjects.HDR_SEQ: str(recovery.last_seq),  # the gateway need not decode the frame
        }
        # A reply is one NATS message (max_payload): what does not fit, the gateway fetches
        # with chat.history and splices in (gateway.pages), so the client gets every message.
        if recovered:
            fitted = frames.fit_messages(messages, budget, keep="oldest")
            if len(fitted) < len(messages):
                reply_headers[subjects.HDR_MORE_AFTER] = str(
                    frames.seq_of(fitted[-1]) if fitted else req.since
                )
        else:
            fitted = frames.fit_messages(messages, budget, keep="newest")
            if len(fitted) < len(messages):
                reply_headers.update(_more_before(messages, fitted))
        frame = frames.joined_frame(
            room=req.room,
            last_seq=recovery.last_seq,
            online=online,
            messages=fitted,
            recovered=recovered,
            read_seq=read_seq,
            unread=unread,
        )
        return HeaderedReply(frame, reply_headers)

    async def _withdraw_presence(self, req: JoinRequest) -> None:
        try:
            await self.parts.presence.leave(
                req.room, user_id=req.user_id, username=req.username, gateway_id=req.gateway_id
            )
        except (ProtocolError, nats.errors.Error) as error:
            logger.warning("room=%s user=%s could not withdraw presence: %r", req.room, req.user_id, error)

    async def leave(self, body: dict[str, Any], headers: dict[str, str]) -> bytes:
        """``chat.leave``: the ``left`` frame; with ``last_local`` removes this gateway's presence
        key and announces ``user_left`` if it was the user's last one in the room."""
        req = LeaveRequest.model_validate(body)
        if req.last_local:
            await self.parts.presence.leave(
                req.room, user_id=req.user_id, username=req.username, gateway_id=req.gateway_id
            )
        return frames.left_frame(req.room)

    async def access(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``chat.access``: ``{"room","readers","private"}``, the given users who may read the room now
        (read from the registry, never a cache), and with ``seq`` the message's current text
        (``{"text","deleted"}`` or null): notify writes mention excerpts from it, never from a
        copy (PROTOCOL.md section 8, "Delete means gone"); ``room_not_found``."""
        req = AccessRequest.model_validate(body)
        room = await self.parts.rooms.require(req.room)
        answer: dict[str, Any] = {
            "room": room.name,
            "readers": readers(room, list(req.user_ids)),
            "private": room.private,
        }
        if req.seq is not None:
            answer["message"] = await self._current_text(room.name, req.seq)
        return answer

    async def _current_text(self, room: str, seq: int) -> dict[str, Any] | None:
        """``{"text","deleted"}`` of message ``seq`` now (edits applied, ``""`` once deleted),
        ``None`` when there is no such message."""
        entry = await self.parts.log.message(room, seq)
        if entry is None:
            return None
        state = await self.parts.log.state(room, seq)
        if state is not None and state.deleted:
            return {"text": "", "deleted": True}
        if state is not None and state.edited is not None:
            return {"text": state.edited, "deleted": False}
        return {"text": str(bodies.decode(entry.data).get("message") or ""), "deleted": False}

    async def presence(self, body: dict[str, Any], headers: dict[str, str]) -> bytes:
        """``chat.presence``: the ``presence`` frame; same access rule as history."""
        req = PresenceRequest.model_validate(body)
        await self.parts.rooms.require_access(req.room, req.user_id)
        online = await self.parts.presence.online(req.room)
        return frames.presence_frame(room=req.room, online=online)

    # --- messages --------------------------------------------------------------------------

    async def history(self, body: dict[str, Any], headers: dict[str, str]) -> bytes | HeaderedReply:
        """``chat.history``: the ``history`` frame; ``room_not_found``, ``forbidden``.

        A ``before`` page larger than one NATS message carries its newest messages and
        ``Natter-More-Before`` / ``Natter-More-Count`` for the rest (the gateway completes it);
        an ``after`` page (gap fills) is cut at the oldest end with ``has_more`` true.
        """
        req = HistoryRequest.model_validate(body)
        await self.parts.rooms.require_access(req.room, req.user_id)
        if req.after is not None:
            result = await pages.after(self.parts.log, req.room, req.after, limit=req.limit)
        else:
            if req.thread is not None and await self.parts.log.message(req.room, req.thread) is None:
                raise ProtocolError(ErrorCode.MESSAGE_NOT_FOUND)
            result = await pages.page(
                self.parts.log,
                req.room,
                before=req.before,
                limit=min(req.limit, 100),
                me=req.user_id,
                thread=req.thread,
            )
        messages, has_more = result.messages, result.has_more
        budget = self.runtime.payload_budget() - len(
            frames.history_frame(room=req.room, messages=[], has_more=True)
        )
        if req.after is not None:
            fitted = frames.fit_messages(messages, budget, keep="oldest")
            return frames.history_frame(
                room=req.room, messages=fitted, has_more=has_more or len(fitted) < len(messages)
            )
        fitted = frames.fit_messages(messages, budget, keep="newest")
        frame = frames.history_frame(room=req.room, messages=fitted, has_more=has_more)
        if len(fitted) == len(messages):
            return frame
        return HeaderedReply(frame, _more_before(messages, fitted))

    async def send(self, body: dict[str, Any], headers: dict[str, str]) -> HeaderedReply:
        """``chat.send``: store the message (a reply with ``reply_to``) with the room's next seq,
        exactly once per ``client_msg_id``, publish the ``message`` frame, answer the ``ack``.

        A plain message is one publish. A reply is an atomic batch with its parent's new state
        (``replies`` + 1, which is the reply's thread count), compare-and-set on that state.

        Raises:
            ProtocolError: ``validation_error`` (empty after trimming), ``room_not_found``,
                ``forbidden``, ``message_not_found`` (``reply_to`` missing or deleted),
                ``unavailable`` (storage could not confirm; safe to retry).
        """
        return await self.store_message(SendRequest.model_validate(body))

    async def post(self, body: dict[str, Any], headers: dict[str, str]) -> HeaderedReply:
        """``api.rooms.post``: a backend service inside the NATS network posts as a bot
        (PROTOCOL.md section 12; :class:`~shared.internal.ApiPostRequest`), exactly like
        ``POST /api/rooms/{room}/messages`` with a service token.

        Raises:
            ProtocolError: as :meth:`send`.
        """
        req = ApiPostRequest.model_validate(body)
        return await self.store_message(
            SendRequest(
                user_id=f"svc:{req.service}",
                username=req.service,
                room=req.room,
                message=req.message,
                client_msg_id=req.client_msg_id,
                reply_to=req.reply_to,
                bot=True,
            )
        )

    async def send_batch(self, body: dict[str, Any], headers: dict[str, str]) -> bytes:
        """``chat.send.batch``: one socket's pipelined sends (:class:`~shared.internal.SendBatchRequest`),
        stored in list order; one line per item, the ``ack`` or ``error`` frame it would have got
        from ``chat.send``.

        Order: each item is admitted (validated, access checked, attachments claimed) in turn and
        its append is started before the next item's; the room log queues plain messages in the
        order their appends start (:meth:`RoomLog.append <chat_service.roomlog.log.RoomLog.append>`),
        so one socket's messages keep their order while being stored as one group. A reply is
        written alone under the room lock, so it waits for every item before it and the next
        item waits for it.

        Raises:
            ProtocolError: ``validation_error`` when the batch itself is malformed (an item's own
                error is that item's line).
        """
        batch = SendBatchRequest.model_validate(body)
        lines: list[bytes | None] = [None] * len(batch.sends)
        started: list[tuple[int, asyncio.Task[HeaderedReply]]] = []

        async def settle() -> None:
            for index, task in started:
                lines[index] = await _frame_of(task)
            started.clear()

        for index, item in enumerate(batch.sends):
            try:
                admitted = await self.admit_message(SendRequest.model_validate(item))
            except Exception as error:
                lines[index] = _error_line(error)
                continue
            alone = admitted.req.reply_to is not None
            if alone:
                await settle()
            started.append((index, asyncio.ensure_future(self.commit_message(admitted))))
            if alone:
                await settle()
        await settle()
        return b"\n".join(line or b"" for line in lines)

    async def store_message(self, req: SendRequest) -> HeaderedReply:
        """Store ``req``'s message (:meth:`send`); the ack frame, with ``Natter-Duplicate: 1``
        when a retry found the original.

        Raises:
            ProtocolError: as :meth:`send`.
        """
        return await self.commit_message(await self.admit_message(req))

    async def admit_message(self, req: SendRequest) -> AdmittedMessage:
        """The checks before a message is stored: text, room, access, mute; its attachments
        claimed (PROTOCOL.md section 11).

        Raises:
            ProtocolError: as :meth:`send`.
        """
        text = req.message.strip()
        if not text:
            raise ProtocolError(ErrorCode.VALIDATION_ERROR, "message: must not be empty")
        parts = self.parts
        if req.bot:  # a service posts to any room that exists (section 12)
            room = await parts.rooms.require(req.room)
        else:
            room = await parts.room_cache.require_access(req.room, req.user_id)
            if room.is_muted(req.user_id):
                raise ProtocolError(ErrorCode.MUTED)
        files: list[dict[str, Any]] | None = None
        key = ""
        if req.attachments:  # section 11: the sender's uploads to this room, each used once
            key = room_shards.request_key(req.user_id, req.client_msg_id or uuid.uuid4().hex)
            files = await parts.attachments.claim(
                list(req.attachments), room=room.name, user_id=req.user_id, key=key
            )
        return AdmittedMessage(req=req, room=room, text=text, files=files, key=key)

    async def commit_message(self, admitted: AdmittedMessage) -> HeaderedReply:
        """Store an admitted message and answer its ack frame (:meth:`send`). Its append starts
        before this coroutine first waits, so appends keep the order of the calls.

        Raises:
            ProtocolError: as :meth:`send`.
        """
        parts = self.parts
        req, room, text, files, key = admitted.req, admitted.room, admitted.text, admitted.files, admitted.key
        where = parts.log.where(room.name)
        timestamp = utc_timestamp()
        parent = req.reply_to

        async def prepare(seq: int, count: int) -> Draft:
            data = bodies.message_body(
                room=room.name,
                seq=seq,
                user_id=req.user_id,
                username=req.username,
                message=text,
                timestamp=timestamp,
                client_msg_id=req.client_msg_id,
                reply_to=parent,
                bot=req.bot,
                attachments=files,
            )
            if parent is None:
                return Draft(subject=where.message_subject(), body=data)
            entry = await parts.log.message(room.name, parent)
            if entry is None:
                raise ProtocolError(ErrorCode.MESSAGE_NOT_FOUND)
            previous = await parts.log.state(room.name, parent)
            if previous is not None and previous.deleted:
                raise ProtocolError(ErrorCode.MESSAGE_NOT_FOUND)
            state = (previous or MessageState(stream_seq=entry.stream_seq)).replied(seq=seq)
            return Draft(
                subject=where.message_subject(parent),
                body=data,
                headers={HDR_THREAD_COUNT: str(state.replies)},
                extra=(state_write(where.state_subject(parent), state, previous),),
                record={"timestamp": timestamp},
            )

        async def deliver(stored: Appended) -> None:
            await deliver_entry(parts.nc, room.name, stored.seq, stored.data, bodies.MESSAGE)

        try:
            stored = await parts.log.append(
                room.name,
                user_id=req.user_id,
                client_msg_id=req.client_msg_id,
                prepare=prepare,
                after_store=deliver,
                batch=parent is not None,
                message=True,
                seq_floor=room.seq_floor,
            )
        except ProtocolError as refused:
            # refused for good (not "unavailable": that one may have been stored): free the files
            if files and refused.code != ErrorCode.UNAVAILABLE:
                await parts.attachments.release(list(req.attachments or ()), key=key)
            raise
        assert stored is not None  # a message always stores something
        original = bodies.decode(stored.data) if stored.duplicate and stored.data else None
        if stored.duplicate:
            logger.info(
                "room=%s user=%s duplicate send answered with seq=%d", room.name, req.user_id, stored.seq
            )
        if stored.record is None:  # a reply found by its record was announced the first time
            await publish_mentions(
                parts.js,
                room=room.name,
                seq=stored.seq,
                user_id=req.user_id,
                username=str(original["username"]) if original else req.username,
                message=str(original["message"]) if original else text,
                timeout=self.settings.publish_timeout_seconds,
            )
        if not stored.duplicate and not req.bot:
            self.read_state.sent_soon(room.name, req.user_id, stored.seq, stored.count, conn_id=req.conn_id)
        answered = timestamp
        if original is not None:
            answered = str(original["timestamp"])
        elif stored.record is not None:
            answered = str(stored.record.get("timestamp") or timestamp)
        ack = frames.ack_frame(
            room=room.name, client_msg_id=req.client_msg_id, seq=stored.seq, timestamp=answered
        )
        return HeaderedReply(ack, {subjects.HDR_DUPLICATE: "1"} if stored.duplicate else {})
