"""Who is in which room: KV bucket ``natter_presence``, key ``<room>.<user_id>.<gateway_id>``,
value ``{"username"}`` (docs/subjects.md), and the ``user_joined`` / ``user_left`` frames.

Presence is per user (PROTOCOL.md section 3): a user is online in a room while any gateway has a
key for them there. The gateway tells chat when a user's first local socket joins
(``first_local``) and the last one leaves (``last_local``); gateways that die are swept by the
janitor (:mod:`chat_service.janitor`).

Exactly one ``user_joined`` per arrival among concurrent joins: the joiner writes its key first,
then announces only if no *older* key (lower KV revision) exists for the user in the room.
``user_left`` is announced by whoever removed the user's last key.

Each replica remembers the revision of the keys it wrote (a bounded LRU), so the leave that
follows a join on the same replica deletes the key by that revision without reading it first;
a stale revision (the key was rewritten or swept meanwhile) only fails that delete, and the
leave then reads the user's keys as before.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Final, Literal

from nats.aio.client import Client
from nats.js.errors import APIError
from nats.js.kv import KeyValue

from chat_service.directget import DirectReader
from chat_service.frames import OnlineUser, presence_change_frame
from chat_service.kvscan import KvItem, parse_json_value, scan
from shared import subjects
from shared.protocol import dumps
from shared.streams import WRONG_LAST_SEQUENCE

logger = logging.getLogger(__name__)

#: What :meth:`Presence.remove` did.
RemoveOutcome = Literal["lost", "removed", "announced"]
#: Presence keys whose last written revision a replica remembers (least recently used forgotten).
KNOWN_REVISIONS: Final = 50_000


def split_key(key: str) -> tuple[str, str, str] | None:
    """``(room, user_id, gateway_id)`` of a presence key, ``None`` if it is malformed."""
    parts = key.split(".")
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1], parts[2]


def online_users(items: list[KvItem]) -> list[OnlineUser]:
    """Unique users among presence items, sorted by username (case-insensitive), then id."""
    users: dict[str, OnlineUser] = {}
    for item in items:
        parts = split_key(item.key)
        if parts is None:
            continue
        user_id = parts[1]
        username = parse_json_value(item).get("username")
        users.setdefault(user_id, OnlineUser(user_id=user_id, username=str(username or "")))
    return sorted(users.values(), key=lambda u: (u.username.lower(), u.user_id))


class Presence:
    """Presence records and announcements for every room."""

    def __init__(
        self, nc: Client, reader: DirectReader, kv: KeyValue, *, known_revisions: int = KNOWN_REVISIONS
    ) -> None:
        self._nc = nc
        self._reader = reader
        self._kv = kv
        self._max_known = known_revisions
        #: key -> (value, revision) this replica wrote last (module docstring)
        self._written: OrderedDict[str, KvItem] = OrderedDict()

    def _remember(self, item: KvItem) -> None:
        self._written[item.key] = item
        self._written.move_to_end(item.key)
        while len(self._written) > self._max_known:
            self._written.popitem(last=False)

    async def _scan(self, pattern: str) -> list[KvItem]:
        return await scan(self._reader, self._kv, bucket=subjects.KV_PRESENCE, pattern=pattern)

    async def all_items(self) -> list[KvItem]:
        """Every presence key (one batched read, or a watcher beyond 1024 keys)."""
        return await self._scan(">")

    async def online(self, room: str) -> list[OnlineUser]:
        """Users with at least one socket in ``room`` on any gateway."""
        return online_users(await self._scan(f"{subjects.check_room(room)}.>"))

    async def _user_keys(self, room: str, user_id: str) -> list[KvItem]:
        return await self._scan(f"{subjects.check_room(room)}.{subjects.check_user_id(user_id)}.*")

    async def counts(self) -> dict[str, int]:
        """``{room: number of unique online users}`` for every room with someone online."""
        users: dict[str, set[str]] = {}
        for item in await self.all_items():
            parts = split_key(item.key)
            if parts is not None:
                users.setdefault(parts[0], set()).add(parts[1])
        return {room: len(ids) for room, ids in users.items()}

    async def join(
        self, room: str, *, user_id: str, username: str, gateway_id: str
    ) -> tuple[bool, list[OnlineUser]]:
        """Record that ``user_id`` has a socket in ``room`` on ``gateway_id``; announce
        ``user_joined`` if the user was online there nowhere else.

        One write and one scan of the room's keys: the scan, read after the write, both decides
        the announcement (an *older* key of the same user means someone else announced) and is
        the room's online list, so a join needs no second scan for :meth:`online`.

        Returns:
            ``(announced, online)``: whether ``user_joined`` was published, and the room's online
            users (this one included) sorted as :func:`online_users` sorts them.
        """
        key = subjects.presence_key(room, user_id, gateway_id)
        value = dumps({"username": username}).encode()
        revision = await self._kv.put(key, value)
        self._remember(KvItem(key=key, value=value, revision=revision))
        items = await self._scan(f"{subjects.check_room(room)}.>")
        online = online_users(items)
        mine = f"{room}.{user_id}."
        older = [
            item
            for item in items
            if item.key.startswith(mine) and item.key != key and item.revision < revision
        ]
        if older:
            return False, online
        await self.announce("user_joined", room, user_id=user_id, username=username)
        return True, online

    async def leave(self, room: str, *, user_id: str, username: str, gateway_id: str) -> bool:
        """Remove this gateway's key for the user; announce ``user_left`` if it was the user's
        last key in the room. Returns True if announced. A key that is already gone (e.g. swept
        by the janitor, which announced) changes nothing."""
        key = subjects.presence_key(room, user_id, gateway_id)
        written = self._written.pop(key, None)
        if written is not None:
            outcome = await self.remove(written, user_id=user_id, username=username, room=room)
            if outcome != "lost":
                return outcome == "announced"
        mine = [item for item in await self._user_keys(room, user_id) if item.key == key]
        if not mine:
            return False
        outcome = await self.remove(mine[0], user_id=user_id, username=username, room=room)
        return outcome == "announced"

    async def remove(self, item: KvItem, *, room: str, user_id: str, username: str) -> RemoveOutcome:
        """Delete ``item`` if it is unchanged since read (one replica wins a race); announce
        ``user_left`` when no key for the user remains in the room.

        Returns:
            ``"lost"`` (someone else removed or refreshed the key first), ``"removed"``, or
            ``"announced"`` (removed, and ``user_left`` published).
        """
        try:
            await self._kv.delete(item.key, last=item.revision)
        except APIError as error:
            if error.err_code in WRONG_LAST_SEQUENCE:
                return "lost"
            raise
        if await self._user_keys(room, user_id):
            return "removed"
        await self.announce("user_left", room, user_id=user_id, username=username)
        return "announced"

    async def announce(
        self, kind: Literal["user_joined", "user_left"], room: str, *, user_id: str, username: str
    ) -> None:
        """Publish a presence frame to ``deliver.room.<room>`` (headers Natter-Room, Natter-Kind)."""
        frame = presence_change_frame(kind, room=room, user_id=user_id, username=username)
        await self._nc.publish(
            subjects.deliver_room(room),
            frame,
            headers={subjects.HDR_ROOM: room, subjects.HDR_KIND: "presence"},
        )
        logger.debug("room=%s user=%s %s", room, user_id, kind)  # per join: DEBUG, as connects are
