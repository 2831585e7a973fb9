"""Room management endpoints (docs/subjects.md): ``chat.rooms.list|create|add_member|
remove_member|set_role|ban|unban|mute|unmute|leave`` and ``chat.dms.open``.

They answer JSON objects (the gateway's HTTP API relays them): a room is
``{"name","private","owner","members":[user ids],"dm","moderators"}``. Members are named by
username and resolved with ``auth.lookup``. Who may do what is :mod:`chat_service.moderation`.

Each change is made in the registry first (compare-and-set: it is what access checks read),
then, for a removal or a ban, announced to every gateway before the answer
(:func:`chat_service.access.announce_removal`: the user's sockets get ``removed`` within 2 s),
then stored as a ``member`` event in the room log, so every member sees it in ``seq`` order
(PROTOCOL.md section 10).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any, Literal

from chat_service import moderation
from chat_service.access import announce_removal
from chat_service.components import Runtime
from chat_service.room_events import deliver_entry
from chat_service.roomlog import bodies
from chat_service.roomlog.log import Appended, Draft
from chat_service.rooms import Room
from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.internal import (
    DmRequest,
    RoomCreateRequest,
    RoomLeaveRequest,
    RoomMemberRequest,
    RoomRoleRequest,
    RoomSanctionRequest,
    RoomsListRequest,
)
from shared.nats_client import request_json
from shared.protocol import utc_timestamp
from shared.service_runner import ServiceApp

logger = logging.getLogger(__name__)

MemberAction = Literal["added", "removed", "left", "banned", "unbanned", "muted", "unmuted", "role"]


def _until_ms(duration_s: int | None) -> int:
    """Unix milliseconds a sanction ends at (0: no end)."""
    return int(time.time() * 1000) + duration_s * 1000 if duration_s else 0


def _iso(ms: int) -> str | None:
    from datetime import UTC, datetime

    return utc_timestamp(datetime.fromtimestamp(ms / 1000, UTC)) if ms else None


def _set(
    entries: tuple[tuple[str, int], ...], user_id: str, until: int | None
) -> tuple[tuple[str, int], ...]:
    """``entries`` with ``user_id`` set to ``until`` (``None``: removed)."""
    rest = tuple(entry for entry in entries if entry[0] != user_id)
    return rest if until is None else (*rest, (user_id, until))


class RoomAdmin:
    """The room-management endpoints of one replica."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def register(self, app: ServiceApp) -> None:
        """Add the ``chat.rooms.*`` and ``chat.dms.open`` endpoints to ``app``."""
        app.add_endpoint(subjects.CHAT_ROOMS_LIST, self.rooms_list)
        app.add_endpoint(subjects.CHAT_ROOMS_CREATE, self.rooms_create)
        app.add_endpoint(subjects.CHAT_ROOMS_ADD_MEMBER, self.add_member)
        app.add_endpoint(subjects.CHAT_ROOMS_REMOVE_MEMBER, self.remove_member)
        app.add_endpoint(subjects.CHAT_ROOMS_SET_ROLE, self.set_role)
        app.add_endpoint(subjects.CHAT_ROOMS_BAN, self.ban)
        app.add_endpoint(subjects.CHAT_ROOMS_UNBAN, self.unban)
        app.add_endpoint(subjects.CHAT_ROOMS_MUTE, self.mute)
        app.add_endpoint(subjects.CHAT_ROOMS_UNMUTE, self.unmute)
        app.add_endpoint(subjects.CHAT_ROOMS_LEAVE, self.leave)
        app.add_endpoint(subjects.CHAT_DMS_OPEN, self.open_dm)

    async def rooms_list(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``chat.rooms.list``: ``{"rooms":[{"name","private","owner","last_seq","online"}]}``,
        the rooms the user may join, sorted by name."""
        req = RoomsListRequest.model_validate(body)
        parts = self.runtime.parts
        visible = sorted(
            (r for r in await parts.rooms.all() if r.may_join(req.user_id)), key=lambda r: r.name
        )
        names = [room.name for room in visible]
        tails, counts = await asyncio.gather(parts.log.tails(names), parts.presence.counts())
        return {
            "rooms": [
                {
                    "name": room.name,
                    "private": room.private,
                    "owner": room.owner,
                    "last_seq": max(tail.seq if (tail := tails.get(room.name)) else 0, room.seq_floor),
                    "online": counts.get(room.name, 0),
                }
                for room in visible
            ]
        }

    async def rooms_create(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``chat.rooms.create``: the room; ``invalid_room``, ``conflict``, ``forbidden``
        (a reserved ``dm-`` name). The creator becomes a member (``GET /api/me/rooms``)."""
        req = RoomCreateRequest.model_validate(body)
        parts = self.runtime.parts
        room = await parts.rooms.create(req.name, owner=req.user_id, private=req.private)
        await parts.memberships.ensure(req.user_id, room.name)
        return room.as_reply()

    # --- members ------------------------------------------------------------------------------
    async def add_member(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``chat.rooms.add_member`` (owner, moderator): the room; ``room_not_found``,
        ``forbidden``, ``not_found`` (no such user), ``conflict`` (a direct message)."""
        req = RoomMemberRequest.model_validate(body)
        await self._check(req, "add")
        member_id, member_name = await self._lookup(req.member)

        def add(room: Room) -> Room | None:
            moderation.authorise(room, req.user_id, req.role, "add", member_id)
            if member_id in room.members:
                return None
            return replace(room, members=(*room.members, member_id))

        before = await self.runtime.parts.rooms.require(req.room)
        room = await self.runtime.parts.rooms.update(req.room, add)
        await self.runtime.parts.memberships.ensure(member_id, room.name)
        if room.revision != before.revision:
            await self._event(room, req, "added", member_id, member_name)
        return room.as_reply()

    async def remove_member(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``chat.rooms.remove_member`` (owner, moderator; anyone for themselves): the room.

        Authorisation is live (PROTOCOL.md section 10): before the answer the removal is
        announced to every gateway, which drops the user's sockets from the room within 2 s
        with a ``removed`` frame. A removal of someone who is no longer a member is announced
        again, so a retry after a lost answer still reaches every gateway.
        """
        req = RoomMemberRequest.model_validate(body)
        leaving = req.member.lower() == req.username.lower()
        if leaving:
            member_id, member_name = req.user_id, req.username
            current = await self.runtime.parts.rooms.require(req.room)
            if req.user_id not in current.members and req.user_id != current.owner:
                raise ProtocolError(ErrorCode.FORBIDDEN, "Not a member of this room")
        else:
            await self._check(req, "remove")
            member_id, member_name = await self._lookup(req.member)

        def remove(room: Room) -> Room | None:
            moderation.authorise(room, req.user_id, req.role, "remove", member_id)
            if member_id not in room.members:
                return None
            return replace(room, members=tuple(m for m in room.members if m != member_id))

        before = await self.runtime.parts.rooms.require(req.room)
        room = await self.runtime.parts.rooms.update(req.room, remove)
        await self.runtime.parts.memberships.remove(member_id, room.name)
        if room.private:
            await self._announce(room, member_id, "removed")
        if room.revision != before.revision:
            await self._event(room, req, "left" if leaving else "removed", member_id, member_name)
        return room.as_reply()

    async def set_role(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``chat.rooms.set_role`` (owner): ``member_role`` ``moderator`` or ``member``."""
        req = RoomRoleRequest.model_validate(body)
        await self._check(req, "role")
        member_id, member_name = await self._lookup(req.member)

        def change(room: Room) -> Room | None:
            moderation.authorise(room, req.user_id, req.role, "role", member_id)
            if room.private and member_id not in room.members:
                raise ProtocolError(ErrorCode.NOT_FOUND, "Not a member of this room")
            others = tuple(m for m in room.moderators if m != member_id)
            moderators = (*others, member_id) if req.member_role == "moderator" else others
            return None if moderators == room.moderators else replace(room, moderators=moderators)

        before = await self.runtime.parts.rooms.require(req.room)
        room = await self.runtime.parts.rooms.update(req.room, change)
        if room.revision != before.revision:
            await self._event(room, req, "role", member_id, member_name, role=req.member_role)
        return room.as_reply()

    # --- sanctions ----------------------------------------------------------------------------
    async def ban(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``chat.rooms.ban`` (owner, moderator): removes the user and refuses their ``join`` and
        ``history`` until unbanned or ``duration_s`` passes; their sockets get ``removed`` with
        reason ``banned`` within 2 s."""
        req = RoomSanctionRequest.model_validate(body)
        await self._check(req, "ban")
        member_id, member_name = await self._lookup(req.member)
        until = _until_ms(req.duration_s)

        def ban(room: Room) -> Room | None:
            moderation.authorise(room, req.user_id, req.role, "ban", member_id)
            return replace(
                room,
                bans=_set(room.bans, member_id, until),
                members=tuple(m for m in room.members if m != member_id),
            )

        room = await self.runtime.parts.rooms.update(req.room, ban)
        await self.runtime.parts.memberships.remove(member_id, room.name)
        await self._announce(room, member_id, "banned")
        await self._event(room, req, "banned", member_id, member_name, until=_iso(until))
        return room.as_reply()

    async def unban(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``chat.rooms.unban`` (owner, moderator): the user may join again (a private room's
        owner or moderator adds them back to the member list separately)."""
        return await self._lift(body, "unban", "unbanned")

    async def mute(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``chat.rooms.mute`` (owner, moderator): the user still reads, but every
        ``chat_message``, ``edit`` and ``react`` there is ``muted`` until ``duration_s`` passes."""
        req = RoomSanctionRequest.model_validate(body)
        await self._check(req, "mute")
        member_id, member_name = await self._lookup(req.member)
        until = _until_ms(req.duration_s)

        def mute(room: Room) -> Room | None:
            moderation.authorise(room, req.user_id, req.role, "mute", member_id)
            return replace(room, mutes=_set(room.mutes, member_id, until))

        room = await self.runtime.parts.rooms.update(req.room, mute)
        await self._event(room, req, "muted", member_id, member_name, until=_iso(until))
        return room.as_reply()

    async def unmute(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``chat.rooms.unmute`` (owner, moderator)."""
        return await self._lift(body, "unmute", "unmuted")

    async def _lift(
        self, body: dict[str, Any], action: Literal["unban", "unmute"], event: MemberAction
    ) -> dict[str, Any]:
        req = RoomSanctionRequest.model_validate(body)
        await self._check(req, action)
        member_id, member_name = await self._lookup(req.member)

        def lift(room: Room) -> Room | None:
            moderation.authorise(room, req.user_id, req.role, action, member_id)
            if action == "unban":
                return replace(room, bans=_set(room.bans, member_id, None))
            return replace(room, mutes=_set(room.mutes, member_id, None))

        before = await self.runtime.parts.rooms.require(req.room)
        room = await self.runtime.parts.rooms.update(req.room, lift)
        if room.revision != before.revision:
            await self._event(room, req, event, member_id, member_name)
        return room.as_reply()

    # --- leaving and direct messages ----------------------------------------------------------
    async def leave(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``chat.rooms.leave``: end the caller's membership for good (``{}``). A public room
        leaves their rooms list; a private room's member list loses them (``removed`` reaches
        their sockets, a ``left`` event the others); a direct message or the owner of a private
        room is ``conflict``."""
        req = RoomLeaveRequest.model_validate(body)
        parts = self.runtime.parts
        room = await parts.rooms.require(req.room)
        if room.private:
            moderation.authorise(room, req.user_id, "user", "leave", req.user_id)
            if req.user_id in room.members:
                member = RoomMemberRequest(
                    room=req.room, user_id=req.user_id, username=req.username, member=req.username
                )
                await self.remove_member(member.model_dump(), headers)
        await parts.memberships.remove(req.user_id, req.room)
        return {}

    async def open_dm(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``chat.dms.open``: ``{"room","peer":{"user_id","username"},"created"}``; the same room
        for the same two users whoever asks; ``not_found`` (no such user), ``conflict``
        (yourself)."""
        req = DmRequest.model_validate(body)
        peer_id, peer_name = await self._lookup(req.peer)
        if peer_id == req.user_id:
            raise ProtocolError(ErrorCode.CONFLICT, "A direct message needs another user")
        parts = self.runtime.parts
        room, created = await parts.rooms.create_dm((req.user_id, req.username), (peer_id, peer_name))
        await asyncio.gather(
            parts.memberships.ensure(req.user_id, room.name), parts.memberships.ensure(peer_id, room.name)
        )
        return {"room": room.name, "peer": {"user_id": peer_id, "username": peer_name}, "created": created}

    # --- helpers ------------------------------------------------------------------------------
    async def _check(self, req: RoomMemberRequest, action: moderation.Action) -> None:
        """Refuse strangers before any user lookup (no probing of usernames through rooms one
        cannot manage)."""
        room = await self.runtime.parts.rooms.require(req.room)
        if room.dm:
            raise ProtocolError(ErrorCode.CONFLICT, "A direct message has exactly its two members")
        allowed = (
            moderation.acts_as_owner(room, req.user_id, req.role)
            if action == "role"
            else moderation.is_moderator(room, req.user_id, req.role)
        )
        if not allowed:
            raise ProtocolError(ErrorCode.FORBIDDEN, "Only the owner or a moderator can manage this room")

    async def _lookup(self, username: str) -> tuple[str, str]:
        """``(user_id, username)`` of a username (``auth.lookup``); ``not_found``."""
        user = await request_json(
            self.runtime.parts.nc,
            subjects.AUTH_LOOKUP,
            {"username": username},
            timeout=self.runtime.settings.request_timeout,
        )
        user_id = user.get("user_id") if isinstance(user, dict) else None
        if not isinstance(user_id, str):
            raise ProtocolError(ErrorCode.NOT_FOUND, "User not found")
        return subjects.check_user_id(user_id), str(user.get("username") or username)

    async def _announce(self, room: Room, user_id: str, reason: Literal["removed", "banned"]) -> None:
        await announce_removal(
            self.runtime.parts.nc,
            room=room.name,
            user_id=user_id,
            reason=reason,
            rev=room.revision,
            timeout=self.runtime.settings.publish_timeout_seconds,
        )

    async def _event(
        self,
        room: Room,
        req: RoomMemberRequest | RoomLeaveRequest,
        action: MemberAction,
        member_id: str,
        member_name: str,
        **fields: Any,
    ) -> None:
        """Store and deliver the ``member`` event of an action already made (PROTOCOL.md s10)."""
        parts = self.runtime.parts
        where = parts.log.where(room.name)
        extra = {key: value for key, value in fields.items() if value is not None}

        async def prepare(seq: int, count: int) -> Draft:
            body = bodies.event_body(
                bodies.MEMBER,
                seq=seq,
                user_id=req.user_id,
                username=req.username,
                timestamp=utc_timestamp(),
                action=action,
                member={"user_id": member_id, "username": member_name},
                **extra,
            )
            return Draft(subject=where.event_subject, body=body)

        async def deliver(stored: Appended) -> None:
            await deliver_entry(parts.nc, room.name, stored.seq, stored.data, bodies.MEMBER)

        await parts.log.append(
            room.name,
            user_id=req.user_id,
            client_msg_id=None,
            prepare=prepare,
            after_store=deliver,
            batch=False,
            seq_floor=room.seq_floor,
        )
        logger.info("room=%s member=%s %s by user=%s", room.name, member_id, action, req.user_id)
