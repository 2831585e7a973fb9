"""Room management endpoints: ``chat.rooms.list``, ``chat.rooms.create``,
``chat.rooms.add_member`` and ``chat.rooms.remove_member`` (docs/subjects.md).

They answer JSON objects (the gateway's HTTP API relays them): a room is
``{"name","private","owner","members":[user ids]}``. Only a room's owner manages its members;
members are named by username and resolved with ``auth.lookup``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from chat_service.access import announce_removal
from chat_service.components import Runtime
from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.internal import RoomCreateRequest, RoomMemberRequest, RoomsListRequest
from shared.nats_client import request_json
from shared.service_runner import ServiceApp


class RoomAdmin:
    """The room-management endpoints of one replica."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def register(self, app: ServiceApp) -> None:
        """Add the ``chat.rooms.*`` endpoints to ``app``."""
        app.add_endpoint(subjects.CHAT_ROOMS_LIST, self.rooms_list)
        app.add_endpoint(subjects.CHAT_ROOMS_CREATE, self.rooms_create)
        app.add_endpoint(subjects.CHAT_ROOMS_ADD_MEMBER, self.add_member)
        app.add_endpoint(subjects.CHAT_ROOMS_REMOVE_MEMBER, self.remove_member)

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
        """``chat.rooms.create``: the room; ``invalid_room``, ``conflict``."""
        req = RoomCreateRequest.model_validate(body)
        room = await self.runtime.parts.rooms.create(req.name, owner=req.user_id, private=req.private)
        return room.as_reply()

    async def add_member(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``chat.rooms.add_member`` (owner only): the room; ``room_not_found``, ``forbidden``,
        ``not_found`` (no such user)."""
        req = RoomMemberRequest.model_validate(body)
        member_id = await self._member_id(req)

        def add(members: tuple[str, ...]) -> tuple[str, ...]:
            return members if member_id in members else (*members, member_id)

        room = await self.runtime.parts.rooms.change_members(req.room, actor=req.user_id, change=add)
        return room.as_reply()

    async def remove_member(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``chat.rooms.remove_member`` (the owner, or a member removing themselves): the room;
        the owner cannot be removed.

        Authorisation is live (PROTOCOL.md section 10): before the answer the removal is
        announced to every gateway (:func:`chat_service.access.announce_removal`), which drops
        the user's sockets from the room within 2 s with a ``removed`` frame. A removal of
        someone who is no longer a member is announced again, so a retry after a lost answer
        (or a replica that died between the registry write and the announcement) still reaches
        every gateway.
        """
        req = RoomMemberRequest.model_validate(body)
        leaving = req.member.lower() == req.username.lower()
        member_id = await self._member_id(req, leaving=leaving)
        parts = self.runtime.parts
        room = await parts.rooms.require(req.room)
        if member_id == room.owner:
            raise ProtocolError(ErrorCode.FORBIDDEN, "The owner cannot be removed")

        def remove(members: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(m for m in members if m != member_id)

        room = await parts.rooms.change_members(
            req.room, actor=req.user_id, change=remove, leaving=req.user_id if leaving else None
        )
        if room.private:
            await announce_removal(
                parts.nc,
                room=room.name,
                user_id=member_id,
                reason="removed",
                rev=room.revision,
                timeout=self.runtime.settings.publish_timeout_seconds,
            )
        return room.as_reply()

    async def _member_id(self, req: RoomMemberRequest, *, leaving: bool = False) -> str:
        """Check the room and its owner first (no user lookups for strangers), then resolve
        ``req.member`` with ``auth.lookup``; ``leaving``: the actor names themselves."""
        room = await self.runtime.parts.rooms.require(req.room)
        if leaving and req.user_id in room.members:
            return req.user_id
        if room.owner is None or room.owner != req.user_id:
            raise ProtocolError(ErrorCode.FORBIDDEN, "Only the room owner can manage members")
        user = await request_json(
            self.runtime.parts.nc,
            subjects.AUTH_LOOKUP,
            {"username": req.member},
            timeout=self.runtime.settings.request_timeout,
        )
        user_id = user.get("user_id") if isinstance(user, dict) else None
        if not isinstance(user_id, str):
            raise ProtocolError(ErrorCode.NOT_FOUND, "User not found")
        return subjects.check_user_id(user_id)
