"""Read markers, unread counts and "my rooms" (PROTOCOL.md section 9).

``unread`` counts the room's messages after the user's marker that are not deleted: the
room's message count (``Natter-Count`` of its last entry) minus the count at the marker's entry,
minus the purged messages in between (their tombstones ``roomview.<k>.<room>.n.<count>``, one
``multi_last``). Exact up to 999; 999 means "999 or more".

Endpoints: ``chat.read`` (the ``read`` frame) and ``chat.rooms.mine`` (``GET /api/me/rooms``).
Sending a message moves the sender's marker to it (:meth:`ReadState.sent`, after the ack), and
the new marker goes to the sender's other sockets (the sending one knows).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import nats.errors

from chat_service.components import Runtime
from chat_service.roomlog import bodies
from chat_service.roomlog.log import RoomLog
from chat_service.rooms import Room
from shared import subjects
from shared.errors import ProtocolError
from shared.internal import MyRoomsRequest, ReadRequest
from shared.protocol import encode_frame
from shared.room_entries import LogPoint, entry_point
from shared.service_runner import ServiceApp

logger = logging.getLogger(__name__)

MAX_UNREAD: Final = 999
#: Beyond this many messages after the marker, unread is 999 without counting deletions.
EXACT_SPAN: Final = 2000
PREVIEW_CHARS: Final = 200


async def unread_count(
    log: RoomLog, room: str, read_seq: int, tail: LogPoint | None, *, count_at_marker: int = 0
) -> int:
    """Messages after ``read_seq`` that are not deleted, at most 999 (module docstring).
    ``count_at_marker``: the room's message count at ``read_seq`` when the caller knows it (a
    sender's own message, just stored), which saves reading that entry."""
    if tail is None or read_seq >= tail.seq:
        return 0
    at_marker = count_at_marker
    if read_seq > 0 and at_marker <= 0:
        entry = await log.log_entry(room, read_seq, tail=tail)
        at_marker = int(entry.headers.get("Natter-Count", "0")) if entry is not None else 0
    raw = tail.count - at_marker
    if raw <= 0:
        return 0
    if raw > EXACT_SPAN:
        return MAX_UNREAD
    where = log.where(room)
    stones = await log.multi_last(
        where.stream, [where.count_tombstone_subject(c) for c in range(at_marker + 1, tail.count + 1)]
    )
    return min(MAX_UNREAD, max(0, raw - len(stones)))


def read_marker_frame(room: str, seq: int, unread: int) -> bytes:
    """``{"type":"read_marker","room","seq","unread"}`` (no ``id``)."""
    return encode_frame("read_marker", room=room, seq=seq, unread=unread).encode()


#: Seconds between two marker moves of one user in one room while they keep sending: the first
#: move follows the ack at once, a steady sender's marker trails by at most this long.
MARKER_MOVE_INTERVAL: Final = 0.25


class ReadState:
    """``chat.read`` and ``chat.rooms.mine`` of one replica."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        #: (room, user id) -> (the highest seq the user sent there whose marker move is pending,
        #: the room's message count at it, the sending socket: None when sends of several
        #: sockets are pending together)
        self._to_move: dict[tuple[str, str], tuple[int, int, str | None]] = {}
        #: (room, user id) -> the task moving that marker (at most one per pair)
        self._movers: dict[tuple[str, str], asyncio.Task[None]] = {}

    def register(self, app: ServiceApp) -> None:
        """Add the endpoints to ``app``."""
        app.add_endpoint(subjects.CHAT_READ, self.read)
        app.add_endpoint(subjects.CHAT_ROOMS_MINE, self.mine)

    async def read(self, body: dict[str, Any], headers: dict[str, str]) -> bytes:
        """``chat.read``: the ``read_marker`` frame; when the marker moved, the same frame goes to
        the user's other sockets on every gateway (``deliver.user.<id>``, skipping the asker).

        Raises:
            ProtocolError: ``room_not_found``, ``forbidden``, ``unavailable``.
        """
        req = ReadRequest.model_validate(body)
        parts = self.runtime.parts
        await parts.rooms.require_access(req.room, req.user_id)
        tail = await parts.log.tail(req.room)
        seq = min(req.seq, tail.seq if tail else 0)
        marker, moved = await parts.memberships.mark_read(req.user_id, req.room, seq)
        unread = await unread_count(parts.log, req.room, marker, tail)
        frame = read_marker_frame(req.room, marker, unread)
        if moved:
            await self._push(req.user_id, frame, skip=req.conn_id)
        return frame

    async def _push(self, user_id: str, frame: bytes, *, skip: str | None) -> None:
        headers = {subjects.HDR_KIND: "read_marker"}
        if skip:
            headers[subjects.HDR_SKIP_CONN] = skip
        try:
            await self.runtime.parts.nc.publish(subjects.deliver_user(user_id), frame, headers=headers)
        except nats.errors.Error as error:  # the marker is stored; other sockets see it on join
            logger.warning("user=%s read marker not pushed: %r", user_id, error)

    def sent_soon(
        self, room: str, user_id: str, seq: int, count: int = 0, *, conn_id: str | None = None
    ) -> None:
        """After a send, without waiting: move the sender's marker to ``seq`` (PROTOCOL.md
        section 9) in the background. Moves of one user in one room are coalesced: while one is
        in flight, later sends only raise the seq the next move goes to, and a user who keeps
        sending has their marker moved at most every :data:`MARKER_MOVE_INTERVAL` seconds: 100
        messages a second cost 4 marker moves, not 100 (each is a compare-and-set on the
        remembered revision, a tail read and a push). ``count``: the room's message count at
        ``seq`` (:attr:`Appended.count`), 0 when unknown. ``conn_id``: the sending socket, which
        gets no copy of the pushed marker."""
        key = (room, user_id)
        pending = self._to_move.get(key)
        if pending is None:
            self._to_move[key] = (seq, count, conn_id)
        else:
            sender = pending[2] if pending[2] == conn_id else None
            self._to_move[key] = (seq, count, sender) if seq > pending[0] else (*pending[:2], sender)
        if key not in self._movers:
            self._movers[key] = asyncio.ensure_future(self._move(key))

    async def _move(self, key: tuple[str, str]) -> None:
        room, user_id = key
        try:
            while (pending := self._to_move.pop(key, None)) is not None:
                await self.sent(room, user_id, *pending)
                if key in self._to_move:  # still sending: the next move waits a little
                    await asyncio.sleep(MARKER_MOVE_INTERVAL)
        finally:
            del self._movers[key]

    async def sent(
        self, room: str, user_id: str, seq: int, count: int = 0, conn_id: str | None = None
    ) -> None:
        """After a send: move the sender's marker to their message (best effort, logged), and
        tell their sockets but ``conn_id`` (the sending one). ``count``: the room's message count
        at ``seq`` (0: read it)."""
        parts = self.runtime.parts
        try:
            marker, moved = await parts.memberships.mark_read(user_id, room, seq)
            if moved:
                known = parts.log.known_tail(room)
                if known is not None and known.seq == marker:
                    # The sender's message was the room's last entry when this replica stored
                    # (or last read) it: nothing was unread then, and no read is needed now.
                    unread = 0
                else:
                    tail = await parts.log.tail(room)
                    unread = await unread_count(parts.log, room, marker, tail, count_at_marker=count)
                await self._push(user_id, read_marker_frame(room, marker, unread), skip=conn_id)
        except (ProtocolError, nats.errors.Error) as error:
            logger.warning("room=%s user=%s marker not moved to %d: %r", room, user_id, seq, error)

    async def mine(self, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``chat.rooms.mine``: the user's rooms (public ones joined and not left, private ones on
        whose member list they are, their direct messages), newest activity first."""
        req = MyRoomsRequest.model_validate(body)
        parts = self.runtime.parts
        memberships, rooms = await asyncio.gather(parts.memberships.of_user(req.user_id), parts.rooms.all())
        by_name = {room.name: room for room in rooms}
        markers = {m.room: m.read_seq for m in memberships}
        mine: dict[str, Room] = {}
        for name in markers:
            room = by_name.get(name)
            if (
                room is not None
                and room.may_join(req.user_id)
                and (not room.private or _listed(room, req.user_id))
            ):
                mine[name] = room
        for room in rooms:
            if room.private and _listed(room, req.user_id) and not room.is_banned(req.user_id):
                mine.setdefault(room.name, room)
        limiter = asyncio.Semaphore(16)

        async def describe(room: Room) -> tuple[str, dict[str, Any]]:
            async with limiter:
                return await self._describe(room, req.user_id, markers.get(room.name, 0))

        described = await asyncio.gather(*(describe(room) for room in mine.values()))
        described.sort(key=lambda item: item[0], reverse=True)
        return {"rooms": [row for _, row in described]}

    async def _describe(self, room: Room, user_id: str, read_seq: int) -> tuple[str, dict[str, Any]]:
        """``(sort key: last activity time, row)`` of one room for ``user_id``."""
        log = self.runtime.parts.log
        tail_msg, last = await asyncio.gather(log.tail_entry(room.name), log.last_message(room.name))
        tail = entry_point(tail_msg) if tail_msg is not None else None
        last_seq = max(tail.seq if tail else 0, room.seq_floor)
        activity = ""
        if tail_msg is not None:
            activity = str(bodies.decode(tail_msg.data).get("timestamp") or "")
        preview = None
        if last is not None:
            state = await log.state(room.name, entry_point(last).seq)
            if state is None or not state.deleted:
                data = bodies.decode(last.data)
                text = (
                    state.edited
                    if state is not None and state.edited is not None
                    else str(data.get("message", ""))
                )
                preview = {
                    "seq": data.get("seq"),
                    "user_id": data.get("user_id"),
                    "username": data.get("username"),
                    "message": text[:PREVIEW_CHARS],
                    "timestamp": data.get("timestamp"),
                }
        row = {
            "name": room.name,
            "private": room.private,
            "dm": bool(room.dm),
            "peer": room.peer_of(user_id),
            "role": room.role_of(user_id),
            "last_seq": last_seq,
            "read_seq": min(read_seq, last_seq),
            "unread": await unread_count(log, room.name, read_seq, tail),
            "last_message": preview,
        }
        return activity or room.created_at, row


def _listed(room: Room, user_id: str) -> bool:
    """On a private room's member list (or its owner)."""
    return user_id == room.owner or user_id in room.members
