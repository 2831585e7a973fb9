"""The hub: which local sockets are in which room and which belong to which user (no I/O).

Split as centrifuge splits it (``hub.go``): the hub is a registry plus the per-room ordering
rule; subscribing to NATS is :mod:`gateway.bus`, one socket's protocol is
:mod:`gateway.connection`.

Ordering (DESIGN.md rule 6, PROTOCOL.md section 4): a room's ``message`` frames carry their
``seq``; per room the hub keeps the last relayed ``seq``, drops what is not newer, relays
``last + 1`` at once and parks later ones until the gap is filled (by a late frame or from
storage). Each socket also has a *floor*, the ``last_seq`` of its ``joined`` answer: frames at or
below it were already in that answer. While a socket's join is in flight its frames are buffered
and flushed after ``joined``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

#: An outgoing frame as the hub sees it: opaque, shared by every recipient
#: (:class:`gateway.wire.Outbound` in the gateway).
Frame = Any


class Subscriber(Protocol):
    """What the hub needs of a socket: identity and a non-blocking enqueue."""

    conn_id: str
    user_id: str

    def enqueue(self, frame: Any) -> None:
        """Queue ``frame`` for sending without awaiting; overflow is the socket's problem."""


@dataclass
class RoomState:
    """One room's local subscribers and ordering state."""

    #: socket -> floor seq, or None while its join is in flight.
    floors: dict[Subscriber, int | None] = field(default_factory=dict)
    #: message frames buffered for sockets whose join is in flight: (seq, frame).
    buffered: dict[Subscriber, list[tuple[int, Frame]]] = field(default_factory=dict)
    #: local sockets per user id (presence is per user, PROTOCOL.md section 3).
    users: dict[str, int] = field(default_factory=dict)
    #: last relayed seq; None until the first ``joined`` answer tells where the room is.
    last_seq: int | None = None
    #: frames that arrived ahead of a gap: seq -> frame.
    ahead: dict[int, Frame] = field(default_factory=dict)


class Hub:
    """Local registry: room -> sockets (with floors), user -> sockets. All methods are sync."""

    def __init__(self) -> None:
        self.rooms: dict[str, RoomState] = {}
        self.users: dict[str, set[Subscriber]] = {}
        self.connections: set[Subscriber] = set()

    # --- users ----------------------------------------------------------------------------
    def add_user_socket(self, sub: Subscriber) -> bool:
        """Register an authenticated socket; True if it is the user's first on this gateway."""
        sockets = self.users.setdefault(sub.user_id, set())
        first = not sockets
        sockets.add(sub)
        return first

    def remove_user_socket(self, sub: Subscriber) -> bool:
        """Unregister a socket; True if it was the user's last on this gateway."""
        sockets = self.users.get(sub.user_id)
        if not sockets or sub not in sockets:
            return False
        sockets.discard(sub)
        if not sockets:
            del self.users[sub.user_id]
            return True
        return False

    def user_sockets(self, user_id: str) -> list[Subscriber]:
        """The user's local sockets (a copy)."""
        return list(self.users.get(user_id, ()))

    # --- rooms ----------------------------------------------------------------------------
    def join_pending(self, room: str, sub: Subscriber) -> bool:
        """Add ``sub`` to ``room`` with its join in flight.

        Returns True when this is the user's first local socket in the room (the gateway then
        asks chat_service to record presence). Re-joining sets the socket back to pending.
        """
        state = self.rooms.setdefault(room, RoomState())
        already = sub in state.floors
        state.floors[sub] = None
        state.buffered[sub] = []
        if already:
            return False
        count = state.users.get(sub.user_id, 0)
        state.users[sub.user_id] = count + 1
        return count == 0

    def join_complete(self, room: str, sub: Subscriber, last_seq: int) -> list[Frame]:
        """Set ``sub``'s floor to ``last_seq``; return buffered frames newer than it, in order."""
        state = self.rooms.get(room)
        if state is None or sub not in state.floors:
            return []
        state.floors[sub] = last_seq
        buffered = state.buffered.pop(sub, [])
        if state.last_seq is None:
            state.last_seq = last_seq
            self._drain_ahead(state)
        return [frame for seq, frame in sorted(buffered, key=lambda item: item[0]) if seq > last_seq]

    def leave(self, room: str, sub: Subscriber) -> tuple[bool, bool]:
        """Remove ``sub`` from ``room``; returns ``(room_now_empty, was_users_last_socket)``."""
        state = self.rooms.get(room)
        if state is None or sub not in state.floors:
            return False, False
        del state.floors[sub]
        state.buffered.pop(sub, None)
        count = state.users.get(sub.user_id, 1) - 1
        last_of_user = count <= 0
        if last_of_user:
            state.users.pop(sub.user_id, None)
        else:
            state.users[sub.user_id] = count
        if not state.floors:
            del self.rooms[room]
            return True, last_of_user
        return False, last_of_user

    def is_joined(self, room: str, sub: Subscriber) -> bool:
        """True once ``sub``'s join of ``room`` completed."""
        state = self.rooms.get(room)
        return state is not None and state.floors.get(sub) is not None

    def member_user_id(self, room: str) -> str | None:
        """Any local subscriber's user id (used to read a room's history with its access)."""
        state = self.rooms.get(room)
        if state is None:
            return None
        return next(iter(state.users), None)

    # --- delivery -------------------------------------------------------------------------
    def deliver_message(self, room: str, seq: int, frame: Frame) -> int:
        """Relay one ``message`` frame in seq order.

        Returns the number of frames relayed now (0 when dropped or parked).
        """
        state = self.rooms.get(room)
        if state is None:
            return 0
        if state.last_seq is None:
            # No joined answer yet: every socket is pending; buffer for them.
            for sub, floor in state.floors.items():
                if floor is None:
                    state.buffered[sub].append((seq, frame))
            return 0
        if seq <= state.last_seq:
            return 0
        if seq > state.last_seq + 1:
            state.ahead[seq] = frame
            return 0
        self._relay(state, seq, frame)
        return 1 + self._drain_ahead(state)

    def _relay(self, state: RoomState, seq: int, frame: Frame) -> None:
        state.last_seq = seq
        for sub, floor in state.floors.items():
            if floor is None:
                state.buffered[sub].append((seq, frame))
            elif seq > floor:
                sub.enqueue(frame)

    def _drain_ahead(self, state: RoomState) -> int:
        relayed = 0
        assert state.last_seq is not None
        for seq in [s for s in state.ahead if s <= state.last_seq]:
            del state.ahead[seq]
        while state.ahead:
            nxt = state.last_seq + 1
            frame = state.ahead.pop(nxt, None)
            if frame is None:
                break
            self._relay(state, nxt, frame)
            relayed += 1
        return relayed

    def gap(self, room: str) -> tuple[int, int] | None:
        """``(after, count)`` of the missing seqs before the earliest parked frame, or None."""
        state = self.rooms.get(room)
        if state is None or state.last_seq is None or not state.ahead:
            return None
        first_ahead = min(state.ahead)
        return state.last_seq, first_ahead - state.last_seq - 1

    def deliver_event(self, room: str, frame: Frame, skip_user: str | None = None) -> int:
        """Relay an unordered room frame (presence, typing) to joined sockets; returns count."""
        state = self.rooms.get(room)
        if state is None:
            return 0
        count = 0
        for sub, floor in state.floors.items():
            if floor is not None and sub.user_id != skip_user:
                sub.enqueue(frame)
                count += 1
        return count

    def deliver_user(self, user_id: str, frame: Frame, skip_conn: str | None = None) -> int:
        """Relay a frame to every local socket of ``user_id`` but ``skip_conn`` (the socket that
        already has it as an answer); returns count."""
        count = 0
        for sub in self.users.get(user_id, ()):
            if sub.conn_id != skip_conn:
                sub.enqueue(frame)
                count += 1
        return count

    def deliver_all(self, frame: Frame) -> int:
        """Relay a frame to every authenticated local socket; returns count."""
        count = 0
        for sockets in self.users.values():
            for sub in sockets:
                sub.enqueue(frame)
                count += 1
        return count
