"""The room registry: KV bucket ``natter_rooms``, key ``<room>``, value
``{"name","private","owner","members":[user ids],"created_at","seq_floor","dm","moderators",
"bans","mutes"}`` (docs/subjects.md; ``seq_floor`` is chat_service's own addition, see
:mod:`chat_service.floors`; v2: ``dm`` ``{user_id: username}`` for a direct message,
``moderators`` [user ids], ``bans`` / ``mutes`` ``{user_id: until_ms}``, 0 = no end).

Rules (PROTOCOL.md sections 3 and 10): a public room is created on first join or over HTTP, has
no owner (``null``) and anyone may join it. A private room is created over HTTP; only its
owner and members may join it, read its history or send to it. ``general`` always exists.
Creation uses KV ``create`` (atomic across replicas); membership changes use ``update`` with the
revision read (compare-and-set), retried on conflict.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from chat_service.directget import DirectReader
from chat_service.kvscan import scan
from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.protocol import dumps, utc_timestamp
from shared.stream_reader import kv_entry

logger = logging.getLogger(__name__)

GENERAL: Final = "general"
#: Compare-and-set attempts for one membership change before answering ``unavailable``.
UPDATE_ATTEMPTS: Final = 20


DM_PREFIX: Final = "dm-"


def is_dm_name(name: str) -> bool:
    """True for the reserved ``dm-`` names (PROTOCOL.md section 9)."""
    return name.startswith(DM_PREFIX)


def dm_name(first: str, second: str) -> str:
    """``dm-<40 hex>``: the room of two user ids, the same whichever comes first."""
    low, high = sorted((first, second))
    return DM_PREFIX + hashlib.sha256(f"{low}\x00{high}".encode()).hexdigest()[:40]


def check_access(room: Room, user_id: str) -> None:
    """Raise ``forbidden`` unless ``user_id`` may read ``room`` now (banned: "Banned")."""
    if room.is_banned(user_id):
        raise ProtocolError(ErrorCode.FORBIDDEN, "Banned from this room")
    if not room.may_join(user_id):
        raise ProtocolError(ErrorCode.FORBIDDEN, "Private room")


@dataclass(frozen=True, slots=True)
class Room:
    """One room as stored, plus the KV ``revision`` it was read at."""

    name: str
    private: bool
    owner: str | None
    members: tuple[str, ...]
    created_at: str
    #: A room seq known to be stored at some point (kept while retention is on): when every
    #: message passed retention, numbering continues after it (chat_service.floors).
    seq_floor: int = 0
    #: v2 (PROTOCOL.md sections 9, 10).
    dm: tuple[tuple[str, str], ...] = ()
    moderators: tuple[str, ...] = ()
    bans: tuple[tuple[str, int], ...] = ()
    mutes: tuple[tuple[str, int], ...] = ()
    revision: int = 0

    def may_join(self, user_id: str, *, now_ms: int | None = None) -> bool:
        """Public rooms: anyone not banned. Private rooms: the owner and the members."""
        if self.is_banned(user_id, now_ms=now_ms):
            return False
        return not self.private or user_id == self.owner or user_id in self.members

    @staticmethod
    def _active(entries: tuple[tuple[str, int], ...], user_id: str, now_ms: int | None) -> bool:
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        return any(who == user_id and (until == 0 or until > now) for who, until in entries)

    def is_banned(self, user_id: str, *, now_ms: int | None = None) -> bool:
        """True while ``user_id`` is banned (a timed ban ends by itself)."""
        return self._active(self.bans, user_id, now_ms)

    def is_muted(self, user_id: str, *, now_ms: int | None = None) -> bool:
        """True while ``user_id`` is muted."""
        return self._active(self.mutes, user_id, now_ms)

    def role_of(self, user_id: str) -> str:
        """``owner``, ``moderator`` or ``member`` (PROTOCOL.md section 10)."""
        if self.owner is not None and user_id == self.owner:
            return "owner"
        if user_id in self.moderators:
            return "moderator"
        return "member"

    def peer_of(self, user_id: str) -> dict[str, str] | None:
        """The other user of a direct message, ``None`` for other rooms."""
        for other, username in self.dm:
            if other != user_id:
                return {"user_id": other, "username": username}
        return None

    def as_stored(self) -> dict[str, Any]:
        """The KV value."""
        return {
            "name": self.name,
            "private": self.private,
            "owner": self.owner,
            "members": list(self.members),
            "created_at": self.created_at,
            "seq_floor": self.seq_floor,
            "dm": dict(self.dm),
            "moderators": list(self.moderators),
            "bans": dict(self.bans),
            "mutes": dict(self.mutes),
        }

    def as_reply(self) -> dict[str, Any]:
        """``{"name","private","owner","members","dm","moderators"}``: the reply of
        ``chat.rooms.*``."""
        return {
            "name": self.name,
            "private": self.private,
            "owner": self.owner,
            "members": list(self.members),
            "dm": bool(self.dm),
            "moderators": list(self.moderators),
        }

    def encode(self) -> bytes:
        """The KV value as compact JSON bytes."""
        return dumps(self.as_stored()).encode()

    @classmethod
    def decode(cls, data: bytes, *, revision: int, name: str | None = None) -> Room:
        """Parse a stored value; tolerant of missing fields (older or hand-written entries)."""
        raw = json.loads(data) if data else {}
        if not isinstance(raw, dict):
            raw = {}
        members = raw.get("members") or []
        owner = raw.get("owner")
        floor = raw.get("seq_floor")

        def pairs(value: Any, kind: type) -> tuple[tuple[str, Any], ...]:
            if not isinstance(value, dict):
                return ()
            return tuple(
                (k, v)
                for k, v in value.items()
                if isinstance(k, str) and isinstance(v, kind) and not isinstance(v, bool)
            )

        moderators = raw.get("moderators") or []
        private = bool(raw.get("private", False))
        return cls(
            name=str(raw.get("name") or name or ""),
            private=private,
            # Public rooms have no owner (PROTOCOL.md section 10); one created over HTTP before
            # 2026-12-08 stored its creator, who now has no more say in it than anyone.
            owner=owner if isinstance(owner, str) and private else None,
            members=tuple(m for m in members if isinstance(m, str)),
            created_at=str(raw.get("created_at") or ""),
            seq_floor=floor if isinstance(floor, int) and not isinstance(floor, bool) and floor > 0 else 0,
            dm=pairs(raw.get("dm"), str),
            moderators=tuple(m for m in moderators if isinstance(m, str)),
            bans=pairs(raw.get("bans"), int),
            mutes=pairs(raw.get("mutes"), int),
            revision=revision,
        )


class RoomRegistry:
    """Rooms in KV ``natter_rooms``; every read goes to KV (another replica may have changed it)."""

    def __init__(self, reader: DirectReader, kv: KeyValue) -> None:
        self._reader = reader
        self._kv = kv

    async def get(self, name: str) -> Room | None:
        """The room, or ``None`` when it does not exist."""
        entry = await kv_entry(self._reader.nc, subjects.KV_ROOMS, subjects.check_room(name))
        if entry is None:
            return None
        return Room.decode(entry.data, revision=entry.stream_seq, name=name)

    async def require(self, name: str) -> Room:
        """The room. Raises ProtocolError ``room_not_found``."""
        room = await self.get(name)
        if room is None:
            raise ProtocolError(ErrorCode.ROOM_NOT_FOUND)
        return room

    async def require_access(self, name: str, user_id: str) -> Room:
        """The room if ``user_id`` may join it.

        Raises:
            ProtocolError: ``room_not_found``; ``forbidden`` for a private room the user is not in.
        """
        room = await self.require(name)
        check_access(room, user_id)
        return room

    async def get_or_create_public(self, name: str) -> Room:
        """The room, creating it as public with no owner if it does not exist (first join).

        Concurrent creators on any replica are all fine: one ``create`` wins, the others read it.

        Raises:
            ProtocolError: ``forbidden`` for a ``dm-`` name that is no direct message (reserved,
                PROTOCOL.md section 9).
        """
        room = await self.get(name)
        if room is not None:
            return room
        if is_dm_name(name):
            raise ProtocolError(ErrorCode.FORBIDDEN, "dm- names are reserved for direct messages")
        fresh = Room(name=name, private=False, owner=None, members=(), created_at=utc_timestamp())
        try:
            revision = await self._kv.create(name, fresh.encode())
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            # Another creator won. On a cluster nats.py's own re-read (a direct get) may hit a
            # follower that has not applied the winner's write yet: read until it shows up.
            for _ in range(40):
                room = await self.get(name)
                if room is not None:
                    return room
                await asyncio.sleep(0.05)
            return await self.require(name)
        logger.info("room=%s created on join", name)
        return replace(fresh, revision=revision)

    async def ensure_general(self) -> None:
        """Create ``general`` (public, owner ``null``) unless it exists."""
        await self.get_or_create_public(GENERAL)

    async def create(self, name: object, *, owner: str, private: bool) -> Room:
        """Create a room; a private room is owned by ``owner`` and starts with members
        ``[owner]``; a public one has no owner (PROTOCOL.md section 10).

        Raises:
            ProtocolError: ``invalid_room`` for a bad name; ``conflict`` if it exists.
        """
        room_name = subjects.check_room(name)
        if is_dm_name(room_name):
            raise ProtocolError(ErrorCode.FORBIDDEN, "dm- names are reserved for direct messages")
        room = Room(
            name=room_name,
            private=private,
            owner=owner if private else None,
            members=(owner,) if private else (),
            created_at=utc_timestamp(),
        )
        try:
            revision = await self._kv.create(room_name, room.encode())
        except KeyWrongLastSequenceError as error:
            raise ProtocolError(ErrorCode.CONFLICT, "Room already exists") from error
        logger.info("room=%s created private=%s owner=%s", room_name, private, room.owner)
        return replace(room, revision=revision)

    async def raise_floor(self, name: str, seq: int) -> bool:
        """Set the room's ``seq_floor`` to ``seq`` unless it is already there or higher
        (compare-and-set; a concurrent change is re-read). Returns True if it was written."""
        for _ in range(UPDATE_ATTEMPTS):
            room = await self.get(name)
            if room is None or room.seq_floor >= seq:
                return False
            try:
                await self._kv.update(name, replace(room, seq_floor=seq).encode(), last=room.revision)
            except KeyWrongLastSequenceError:
                continue
            return True
        return False

    async def update(self, name: str, change: Callable[[Room], Room | None]) -> Room:
        """Apply ``change`` to the room (compare-and-set, re-read and re-applied on a lost race);
        ``change`` returns ``None`` (or the same room) for no change, and may raise
        :class:`ProtocolError` (its permission and validity checks run on the current state).

        Raises:
            ProtocolError: ``room_not_found``; whatever ``change`` raises; ``unavailable`` after
                :data:`UPDATE_ATTEMPTS` lost races.
        """
        for _ in range(UPDATE_ATTEMPTS):
            room = await self.require(name)
            updated = change(room)
            if updated is None or updated == room:
                return room
            try:
                revision = await self._kv.update(name, updated.encode(), last=room.revision)
            except KeyWrongLastSequenceError:
                continue
            return replace(updated, revision=revision)
        raise ProtocolError(ErrorCode.UNAVAILABLE)

    async def create_dm(self, first: tuple[str, str], second: tuple[str, str]) -> tuple[Room, bool]:
        """The direct message of two users ``(user_id, username)``, created if needed; returns
        ``(room, created)``. The same two users get the same room whoever asks."""
        name = dm_name(first[0], second[0])
        room = Room(
            name=name,
            private=True,
            owner=None,
            members=tuple(sorted((first[0], second[0]))),
            created_at=utc_timestamp(),
            dm=tuple(sorted((first, second))),
        )
        try:
            revision = await self._kv.create(name, room.encode())
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            for _ in range(40):
                existing = await self.get(name)
                if existing is not None:
                    return existing, False
                await asyncio.sleep(0.05)
            return await self.require(name), False
        logger.info("room=%s direct message created", name)
        return replace(room, revision=revision), True

    async def all(self) -> list[Room]:
        """Every room (one batched read of the bucket)."""
        items = await scan(self._reader, self._kv, bucket=subjects.KV_ROOMS)
        rooms = []
        for item in items:
            try:
                rooms.append(Room.decode(item.value, revision=item.revision, name=item.key))
            except ValueError:
                logger.warning("room=%s unreadable registry entry skipped", item.key)
        return rooms
