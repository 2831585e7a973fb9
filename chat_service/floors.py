"""Room seqs survive retention (only when ``NATTER_CHAT_RETENTION_DAYS`` > 0).

A room's next seq is read from its last stored message. With retention, a room that stays silent
longer than the retention period loses every message, and numbering would restart at 1: ids like
``general:1`` would be reused and ``last_seq`` would go backwards for clients (PROTOCOL.md section
4: seq "increases by exactly 1 per message"). So each replica periodically copies every room's
last seq into its registry entry (``seq_floor``, compare-and-set, only ever raised), at an
interval of a quarter of the retention period (at most hourly). When no message is stored, the
floor stands in for the last one: sends continue after it, joins report it as ``last_seq``.
"""

from __future__ import annotations

import asyncio
import logging

import nats.errors

from chat_service.roomlog.log import RoomLog
from chat_service.rooms import RoomRegistry
from shared.errors import ProtocolError
from shared.streams import DAY

logger = logging.getLogger(__name__)


def floor_interval(retention_days: float) -> float:
    """Seconds between two passes: a quarter of the retention, between 1 s and 1 hour."""
    return max(1.0, min(3600.0, retention_days * DAY / 4))


class FloorKeeper:
    """Raises each room's ``seq_floor`` to its last stored seq; :meth:`run` is a background task."""

    def __init__(self, rooms: RoomRegistry, log: RoomLog, *, interval: float) -> None:
        self._rooms = rooms
        self._log = log
        self._interval = interval

    async def run(self) -> None:
        """One pass every ``interval`` seconds forever; failures are logged and retried."""
        while True:
            try:
                raised = await self.pass_once()
                if raised:
                    logger.info("seq floors raised for %d rooms", raised)
            except (ProtocolError, nats.errors.Error) as error:
                logger.warning("seq floor pass failed: %r", error)
            await asyncio.sleep(self._interval)

    async def pass_once(self) -> int:
        """Raise every stale floor. Returns how many rooms were updated."""
        rooms = await self._rooms.all()
        tails = await self._log.tails([room.name for room in rooms])
        raised = 0
        for room in rooms:
            tail = tails.get(room.name)
            if tail is not None and tail.seq > room.seq_floor:
                if await self._rooms.raise_floor(room.name, tail.seq):
                    raised += 1
        return raised
