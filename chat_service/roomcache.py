"""Rooms for the send path, cached and kept fresh by a watch on the rooms bucket.

``chat.send`` needs the room (does it exist, may this user post, its ``seq_floor``) on every
message; reading KV ``natter_rooms`` for each one was about 17% of a chat replica's CPU and one
more NATS round trip per message (docs/benchmarks.md, "rooms"). :class:`RoomCache` keeps rooms
it has read, and an ordered push consumer on the bucket's subjects (``$KV.natter_rooms.>``,
deliver policy *new*, headers only, as nats.py's own ``KeyValue.watch`` builds it) drops an
entry within milliseconds of any replica's write (NATS docs, "Key/Value Store: watch").

Only public rooms are cached: anyone may post to them, so a cached entry can never let through
a send that access control would refuse. Private rooms (membership changes must take effect at
once: a removed member's next send is ``forbidden``) are read from KV every time. What a public
room's entry can have stale is its ``seq_floor``, for milliseconds (the watch), at most
``max_age`` seconds if the watch is broken (a reconnect its ordered consumer has not recovered
yet). A read that raced a bucket write is not cached. Joins take public rooms from the cache
too (:meth:`RoomCache.get_or_create_public`); a ban, like a mute, is a write to the room's entry,
so the watch drops the cached room within milliseconds. History and room administration keep
reading KV directly.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from nats.js import JetStreamContext, api

from chat_service.rooms import Room, RoomRegistry, check_access
from shared import subjects

logger = logging.getLogger(__name__)


class RoomCache:
    """At most ``capacity`` public rooms (least recently used dropped first), each trusted for at most
    ``max_age`` seconds without a watch update.

    Args:
        registry: the KV-backed registry that answers misses.
        js: JetStream context for the watch.
        capacity: rooms kept.
        max_age: seconds an entry is used without being read again.
    """

    def __init__(
        self, registry: RoomRegistry, js: JetStreamContext, *, capacity: int = 10_000, max_age: float = 10.0
    ) -> None:
        self._registry = registry
        self._js = js
        self._capacity = capacity
        self._max_age = max_age
        self._rooms: OrderedDict[str, tuple[float, Room]] = OrderedDict()
        self._prefix = f"$KV.{subjects.KV_ROOMS}."
        #: watch messages seen; a read that saw it change meanwhile is not cached.
        self._updates = 0
        self._sub: Any = None

    async def start(self) -> None:
        """Subscribe the watch (updates from now on)."""
        self._sub = await self._js.subscribe(
            f"{self._prefix}>",
            stream=f"KV_{subjects.KV_ROOMS}",
            cb=self._on_update,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.NEW,
            headers_only=True,
        )

    async def _on_update(self, msg: Any) -> None:
        """Any write to the bucket: forget that room (the next send reads it again)."""
        self._updates += 1
        self._rooms.pop(msg.subject[len(self._prefix) :], None)

    async def require_access(self, name: str, user_id: str) -> Room:
        """The room if ``user_id`` may post to it (same rules as
        :meth:`RoomRegistry.require_access`).

        Raises:
            ProtocolError: ``room_not_found``; ``forbidden`` for a private room the user is not in.
        """
        room = await self._read_through(name, self._registry.require)
        check_access(room, user_id)
        return room

    async def get_or_create_public(self, name: str) -> Room:
        """The room for a join: a cached public room, else :meth:`RoomRegistry.get_or_create_public`
        (which creates a missing public room); the caller checks access.

        Raises:
            ProtocolError: as :meth:`RoomRegistry.get_or_create_public`.
        """
        return await self._read_through(name, self._registry.get_or_create_public)

    async def _read_through(self, name: str, read: Callable[[str], Awaitable[Room]]) -> Room:
        """The cached room, else ``read(name)``, kept when public and no write raced the read."""
        room = self._fresh(name)
        if room is None:
            seen = self._updates
            room = await read(name)
            if self._updates == seen and not room.private:
                self._store(room)
        return room

    def _fresh(self, name: str) -> Room | None:
        cached = self._rooms.get(name)
        if cached is None:
            return None
        stamp, room = cached
        if time.monotonic() - stamp > self._max_age:
            del self._rooms[name]
            return None
        self._rooms.move_to_end(name)
        return room

    def _store(self, room: Room) -> None:
        self._rooms[room.name] = (time.monotonic(), room)
        self._rooms.move_to_end(room.name)
        while len(self._rooms) > self._capacity:
            self._rooms.popitem(last=False)

    def __len__(self) -> int:
        return len(self._rooms)
