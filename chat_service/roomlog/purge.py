"""Purging deleted text from the room logs (PROTOCOL.md section 8: "the stored copies are purged
from JetStream within 60 s").

A delete's atomic batch writes a pending purge on ``roomview.<k>.<room>.p.<seq>``:
``{"erase":[stream seqs],"mentions":[usernames]}`` (the message and each of its edits; who the
message mentioned), with a one-day TTL. The replica that stored the delete erases them at once,
before it delivers and acks, and publishes ``events.chat.message_deleted`` when someone was
mentioned (notify strips the text from their mention notifications); then it overwrites the
pending purge with an empty "done" marker that expires after a second. If that replica dies in
between, :meth:`Purger.sweep`, run by every replica every ``interval`` seconds, finds pending
purges of every shard (one ``multi_last`` over ``roomview.<k>.*.p.*``) and finishes them.
Erasing twice and publishing twice are harmless (the event's ``Nats-Msg-Id``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, Final

import nats.errors
from nats.js import JetStreamContext

from chat_service.attachments import Attachments
from chat_service.events import publish_deletion
from chat_service.roomlog.feedrecords import feed_copies
from chat_service.roomlog.log import RoomLog
from shared import room_shards, subjects
from shared.errors import ProtocolError

logger = logging.getLogger(__name__)

#: How long a pending purge is kept for sweeps to find (``Nats-TTL``).
PURGE_TTL: Final = "24h"
#: How long the "done" marker lives before the server removes it.
DONE_TTL: Final = "1s"


def mark_done_headers() -> dict[str, str]:
    """Headers of the "done" marker: replaces the pending purge (rollup), gone in a second."""
    return {"Nats-Rollup": "sub", "Nats-TTL": DONE_TTL}


@dataclass(frozen=True, slots=True)
class PurgePlan:
    """What a delete leaves to erase: stream seqs of the message and its edits, and the
    lowercase usernames the message mentioned."""

    erase: tuple[int, ...]
    mentions: tuple[str, ...] = ()
    #: the deleted message's attachments (PROTOCOL.md section 11: deleted with it)
    attachments: tuple[str, ...] = ()

    def encode(self) -> bytes:
        """The pending purge's body, ``{"erase":[..]}`` plus ``"mentions"`` when there are any."""
        body: dict[str, list[Any]] = {"erase": list(self.erase)}
        if self.mentions:
            body["mentions"] = list(self.mentions)
        if self.attachments:
            body["attachments"] = list(self.attachments)
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> PurgePlan:
        """Parse a pending purge's body.

        Raises:
            ValueError: not such a body.
        """
        value = json.loads(raw)
        if not isinstance(value, dict):
            raise ValueError("pending purge is not an object")
        erase = tuple(int(seq) for seq in value.get("erase", []))
        mentions = tuple(str(name) for name in value.get("mentions", []))
        attachments = tuple(str(a) for a in value.get("attachments", []))
        return cls(erase=erase, mentions=mentions, attachments=attachments)


class Purger:
    """Erases deleted entries; :meth:`run` is the background sweep.

    Args:
        log: the room logs.
        js: publishes ``events.chat.message_deleted``.
        interval: seconds between sweeps.
        timeout: seconds to wait for each JetStream answer.
    """

    def __init__(
        self,
        log: RoomLog,
        js: JetStreamContext,
        attachments: Attachments | None = None,
        *,
        interval: float = 30.0,
        timeout: float = 2.0,
    ) -> None:
        self._log = log
        self._js = js
        self._attachments = attachments
        self._interval = interval
        self._timeout = timeout

    async def purge(self, room: str, target: int, plan: PurgePlan) -> None:
        """Erase ``plan.erase`` (deleted message ``target`` and its edits), announce the delete
        to notify when the message mentioned anyone, then mark the pending purge done (left
        pending, for the sweep, when the announcement failed).

        Raises:
            ProtocolError: ``unavailable`` when storage did not confirm (the sweep retries).
        """
        where = self._log.where(room)
        copies = await feed_copies(self._log, where.shard, room, plan.erase)
        await self._log.erase(where.stream, plan.erase)
        await self._log.erase(subjects.EVENTS_STREAM, copies)  # the event feed's (chat_service.feed)
        if plan.attachments and self._attachments is not None:
            await self._attachments.delete(list(plan.attachments))
        if plan.mentions and not await publish_deletion(
            self._js, room=room, seq=target, mentions=list(plan.mentions), timeout=self._timeout
        ):
            return
        try:
            await self._log.nc.publish(where.purge_subject(target), b"", headers=mark_done_headers())
        except nats.errors.Error as error:  # the sweep erases again and marks it later
            logger.warning("room=%s seq=%d purge not marked done: %r", room, target, error)
        logger.info("room=%s seq=%d purged %d stored entries", room, target, len(plan.erase))

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
                    plan = PurgePlan.decode(msg.data)
                    room, target = parts[2], int(parts[4])
                except (ValueError, IndexError, TypeError):
                    logger.warning("unreadable pending purge %s skipped", subject)
                    continue
                await self.purge(room, target, plan)
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
