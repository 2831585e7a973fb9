"""Purging deleted text from the room logs (PROTOCOL.md section 8: "the stored copies are purged
from JetStream within 60 s").

A delete's atomic batch writes a pending purge on ``roomview.<k>.<room>.p.<seq>``:
``{"erase":[stream seqs]}`` (the message and each of its edits), with a one-day TTL. The
replica that stored the delete erases them at once, before it delivers and acks; then it
overwrites the pending purge with an empty "done" marker that expires after a second. If that
replica dies in between, :meth:`Purger.sweep`, run by every replica every ``interval`` seconds,
finds pending purges of every shard (one ``multi_last`` over ``roomview.<k>.*.p.*``) and
finishes them. Erasing twice is harmless.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Final

import nats.errors

from chat_service.roomlog.log import RoomLog
from shared import room_shards
from shared.errors import ProtocolError

logger = logging.getLogger(__name__)

#: How long a pending purge is kept for sweeps to find (``Nats-TTL``).
PURGE_TTL: Final = "24h"
#: How long the "done" marker lives before the server removes it.
DONE_TTL: Final = "1s"


def mark_done_headers() -> dict[str, str]:
    """Headers of the "done" marker: replaces the pending purge (rollup), gone in a second."""
    return {"Nats-Rollup": "sub", "Nats-TTL": DONE_TTL}


class Purger:
    """Erases deleted entries; :meth:`run` is the background sweep."""

    def __init__(self, log: RoomLog, *, interval: float = 30.0, timeout: float = 2.0) -> None:
        self._log = log
        self._interval = interval
        self._timeout = timeout

    async def purge(self, room: str, target: int, stream_seqs: list[int]) -> None:
        """Erase ``stream_seqs`` (deleted message ``target`` and its edits), then mark the
        pending purge done.

        Raises:
            ProtocolError: ``unavailable`` when storage did not confirm (the sweep retries).
        """
        where = self._log.where(room)
        await self._log.erase(where.stream, stream_seqs)
        try:
            await self._log.nc.publish(where.purge_subject(target), b"", headers=mark_done_headers())
        except nats.errors.Error as error:  # the sweep erases again and marks it later
            logger.warning("room=%s seq=%d purge not marked done: %r", room, target, error)
        logger.info("room=%s seq=%d purged %d stored entries", room, target, len(stream_seqs))

    async def sweep(self) -> int:
        """Finish every pending purge of every shard; returns how many were finished."""
        done = 0
        for shard in range(self._log.shards):
            stream = room_shards.stream_name(shard)
            pending = await self._log.multi_last(stream, [room_shards.pending_purges_filter(shard)])
            for subject, msg in pending.items():
                if not msg.data:
                    continue
                parts = subject.split(".")  # roomview.<k>.<room>.p.<seq>
                try:
                    erase = [int(seq) for seq in json.loads(msg.data).get("erase", [])]
                    room, target = parts[2], int(parts[4])
                except (ValueError, IndexError, AttributeError):
                    logger.warning("unreadable pending purge %s skipped", subject)
                    continue
                await self.purge(room, target, erase)
                done += 1
        return done

    async def run(self) -> None:
        """Sweep every ``interval`` seconds forever; a failed sweep is logged and retried."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                finished = await self.sweep()
                if finished:
                    logger.info("purge sweep finished %d pending purges", finished)
            except (ProtocolError, nats.errors.Error) as error:
                logger.warning("purge sweep failed: %r", error)
