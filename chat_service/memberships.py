"""Who is a member of which room, and how far they have read (PROTOCOL.md section 9).

KV bucket ``natter_memberships``, key ``<user_id>.<room>``, value
``{"read_seq":58,"since":"<timestamp>"}``: one entry per user and room, so a user's rooms and
read markers are one ``multi_last`` over ``$KV.natter_memberships.<user_id>.*``
(:meth:`Memberships.of_user`). Membership is per user, not per socket: a public room's entry is
created on the user's first join and removed by ``POST /api/rooms/{room}/leave``; a private
room's (and a direct message's) follows its member list.

Read markers only move forward: :meth:`Memberships.mark_read` is a compare-and-set that keeps
the higher ``seq``. Each replica remembers the last revision it read or wrote per key (a bounded
LRU) and tries the compare-and-set on it first: a sender's marker move after each message is
then one KV write, not a read and a write. A stale revision (another replica wrote, the user
left) only fails the compare-and-set, which then reads the entry as before.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Final

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from chat_service.directget import DirectReader
from chat_service.kvscan import scan
from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.protocol import dumps, utc_timestamp
from shared.stream_reader import kv_entry
from shared.streams import kv_update

logger = logging.getLogger(__name__)

UPDATE_ATTEMPTS: Final = 20
#: Seconds to wait for the PubAck of a marker move.
KV_TIMEOUT: Final = 5.0
#: Memberships whose last known revision a replica remembers (least recently used forgotten).
KNOWN_REVISIONS: Final = 20_000


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

    def __init__(self, reader: DirectReader, kv: KeyValue, *, known_revisions: int = KNOWN_REVISIONS) -> None:
        self._reader = reader
        self._kv = kv
        self._max_known = known_revisions
        #: key -> the membership as this replica last read or wrote it (module docstring)
        self._known: OrderedDict[str, Membership] = OrderedDict()

    def _remember(self, key: str, membership: Membership | None) -> None:
        if membership is None:
            self._known.pop(key, None)
            return
        self._known[key] = membership
        self._known.move_to_end(key)
        while len(self._known) > self._max_known:
            self._known.popitem(last=False)

    async def get(self, user_id: str, room: str) -> Membership | None:
        """The membership, ``None`` when the user is no member (one direct get)."""
        key = key_of(user_id, room)
        entry = await kv_entry(self._reader.nc, subjects.KV_MEMBERSHIPS, key)
        membership = None if entry is None else Membership.decode(room, entry.data, revision=entry.stream_seq)
        self._remember(key, membership)
        return membership

    async def ensure(self, user_id: str, room: str, *, known: Membership | None = None) -> Membership:
        """The membership, created (nothing read) if missing; ``known``: just read by the caller."""
        if known is not None:
            return known
        fresh = Membership(room=room, since=utc_timestamp())
        key = key_of(user_id, room)
        try:
            revision = await self._kv.create(key, fresh.encode())
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            found = await self.get(user_id, room)
            return found or fresh
        created = replace(fresh, revision=revision)
        self._remember(key, created)
        return created

    async def remove(self, user_id: str, room: str) -> None:
        """End the membership (no-op when there is none)."""
        key = key_of(user_id, room)
        self._remember(key, None)
        await self._kv.delete(key)

    async def mark_read(self, user_id: str, room: str, seq: int) -> tuple[int, bool]:
        """Move the user's marker to ``seq`` unless it is already there or further; creates the
        membership if needed. Returns ``(marker now, moved)``.

        Raises:
            ProtocolError: ``unavailable`` after :data:`UPDATE_ATTEMPTS` lost races.
        """
        key = key_of(user_id, room)
        known = self._known.get(key)
        # A remembered revision below ``seq`` is tried as is (a stale one fails the compare-and-set
        # and is read again); one at or past ``seq`` is read, so that the answer is the marker now.
        current = known if known is not None and known.read_seq < seq else None
        for _ in range(UPDATE_ATTEMPTS):
            if current is None:
                current = await self.get(user_id, room)
                if current is not None and current.read_seq >= seq:
                    return current.read_seq, False
            updated = Membership(room=room, read_seq=seq, since=current.since if current else utc_timestamp())
            try:
                if current is None:
                    revision = await self._kv.create(key, updated.encode())
                else:
                    revision = await kv_update(
                        self._reader.nc,
                        subjects.KV_MEMBERSHIPS,
                        key,
                        updated.encode(),
                        last=current.revision,
                        timeout=KV_TIMEOUT,
                    )
            except (KeyWrongLastSequenceError, KeyNotFoundError):
                current = None
                continue
            self._remember(key, replace(updated, revision=revision))
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
