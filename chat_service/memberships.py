"""Who is a member of which room, and how far they have read (PROTOCOL.md section 9).

KV bucket ``natter_memberships``, key ``<user_id>.<room>``, value
``{"read_seq":58,"since":"<timestamp>"}``: one entry per user and room, so a user's rooms and
read markers are one ``multi_last`` over ``$KV.natter_memberships.<user_id>.*``
(:meth:`Memberships.of_user`). Membership is per user, not per socket: a public room's entry is
created on the user's first join and removed by ``POST /api/rooms/{room}/leave``; a private
room's (and a direct message's) follows its member list.

Read markers only move forward: :meth:`Memberships.mark_read` is a compare-and-set that keeps
the higher ``seq``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Final

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from chat_service.directget import DirectReader
from chat_service.kvscan import scan
from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.protocol import dumps, utc_timestamp
from shared.stream_reader import kv_entry

logger = logging.getLogger(__name__)

UPDATE_ATTEMPTS: Final = 20


@dataclass(frozen=True, slots=True)
class Membership:
    """One user's membership of one room: their read marker and since when."""

    room: str
    read_seq: int = 0
    since: str = ""
    revision: int = 0

    def encode(self) -> bytes:
        """The KV value."""
        return dumps({"read_seq": self.read_seq, "since": self.since}).encode()

    @classmethod
    def decode(cls, room: str, data: bytes, *, revision: int) -> Membership:
        """Parse a stored value; a malformed one reads as "nothing read"."""
        try:
            raw = json.loads(data) if data else {}
        except ValueError:
            raw = {}
        raw = raw if isinstance(raw, dict) else {}
        seq = raw.get("read_seq")
        return cls(
            room=room,
            read_seq=seq if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0 else 0,
            since=str(raw.get("since") or ""),
            revision=revision,
        )


def key_of(user_id: str, room: str) -> str:
    """``<user_id>.<room>``."""
    return f"{subjects.check_user_id(user_id)}.{subjects.check_room(room)}"


class Memberships:
    """The ``natter_memberships`` bucket of one replica."""

    def __init__(self, reader: DirectReader, kv: KeyValue) -> None:
        self._reader = reader
        self._kv = kv

    async def get(self, user_id: str, room: str) -> Membership | None:
        """The membership, ``None`` when the user is no member (one direct get)."""
        entry = await kv_entry(self._reader.nc, subjects.KV_MEMBERSHIPS, key_of(user_id, room))
        if entry is None:
            return None
        return Membership.decode(room, entry.data, revision=entry.stream_seq)

    async def ensure(self, user_id: str, room: str, *, known: Membership | None = None) -> Membership:
        """The membership, created (nothing read) if missing; ``known``: just read by the caller."""
        if known is not None:
            return known
        fresh = Membership(room=room, since=utc_timestamp())
        try:
            revision = await self._kv.create(key_of(user_id, room), fresh.encode())
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            found = await self.get(user_id, room)
            return found or fresh
        return Membership(room=room, since=fresh.since, revision=revision)

    async def remove(self, user_id: str, room: str) -> None:
        """End the membership (no-op when there is none)."""
        await self._kv.delete(key_of(user_id, room))

    async def mark_read(self, user_id: str, room: str, seq: int) -> tuple[int, bool]:
        """Move the user's marker to ``seq`` unless it is already there or further; creates the
        membership if needed. Returns ``(marker now, moved)``.

        Raises:
            ProtocolError: ``unavailable`` after :data:`UPDATE_ATTEMPTS` lost races.
        """
        key = key_of(user_id, room)
        for _ in range(UPDATE_ATTEMPTS):
            current = await self.get(user_id, room)
            if current is not None and current.read_seq >= seq:
                return current.read_seq, False
            updated = Membership(room=room, read_seq=seq, since=current.since if current else utc_timestamp())
            try:
                if current is None:
                    await self._kv.create(key, updated.encode())
                else:
                    await self._kv.update(key, updated.encode(), last=current.revision)
            except (KeyWrongLastSequenceError, KeyNotFoundError):
                continue
            return seq, True
        raise ProtocolError(ErrorCode.UNAVAILABLE)

    async def of_user(self, user_id: str) -> list[Membership]:
        """Every membership of ``user_id`` (one batched read)."""
        prefix = f"{subjects.check_user_id(user_id)}."
        items = await scan(self._reader, self._kv, bucket=subjects.KV_MEMBERSHIPS, pattern=f"{prefix}*")
        return [
            Membership.decode(item.key[len(prefix) :], item.value, revision=item.revision)
            for item in items
            if subjects.is_valid_room(item.key[len(prefix) :])
        ]
