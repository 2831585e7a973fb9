"""Per-room state cached by one replica, bounded (least recently used rooms are forgotten).

Everything here is a cache of facts about immutable messages, or a local lock: losing it costs
a few extra reads, never correctness.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field

from chat_service.seqindex import Checkpoints, Point


@dataclass(slots=True)
class RoomState:
    """What one replica remembers about one room: the send lock, the last message it knows
    of, and :class:`~chat_service.seqindex.Checkpoints` of where room seqs sit in the stream."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: The last message this replica knows of (``None``: unknown, or the room is empty).
    tail: Point | None = None
    tail_known: bool = False
    checkpoints: Checkpoints = field(default_factory=Checkpoints)

    def learn_tail(self, point: Point | None) -> None:
        """Remember ``point`` as a checkpoint, and as the tail if it is newer."""
        if point is None:
            return
        self.checkpoints.add(point)
        if self.tail is None or point.stream_seq > self.tail.stream_seq:
            self.tail = point
            self.tail_known = True


class RoomStates:
    """``room -> RoomState`` for up to ``max_rooms`` rooms; a room whose lock is held is never
    evicted (sends to it stay serialised)."""

    def __init__(self, max_rooms: int = 10_000) -> None:
        self.max_rooms = max_rooms
        self._states: OrderedDict[str, RoomState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def get(self, room: str) -> RoomState:
        """The state of ``room`` (created on first use; marks it recently used)."""
        state = self._states.get(room)
        if state is None:
            state = self._states[room] = RoomState()
            while len(self._states) > self.max_rooms:
                victim = next(
                    (name for name, old in self._states.items() if name != room and not old.lock.locked()),
                    None,
                )
                if victim is None:  # every other room is busy sending: stay over the bound
                    break
                del self._states[victim]
        else:
            self._states.move_to_end(room)
        return state
