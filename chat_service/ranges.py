"""Reading a room's messages by room ``seq`` range (history pages, join recovery, gap fills).

The stream is global, so a room's messages are scattered among other rooms'. A read first finds
where its first seq sits (:func:`chat_service.seqindex.locate`, one direct get per probe, helped
by the room's checkpoints), then reads forward with header-less batched direct gets of at most
1000 messages. Short ranges start optimistically at the position the first seq would have if the
room's recent messages were contiguous in the stream (often exact): one batch, no probe.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

from nats.aio.client import Client

from chat_service.directget import DirectReader
from chat_service.roomstate import RoomState, RoomStates
from chat_service.seqindex import ORIGIN, Checkpoints, Point, SeqIndexError, locate
from chat_service.stored import StoredMessage, room_seq_of, seq_of_body
from shared import subjects
from shared.stream_reader import direct_get

logger = logging.getLogger(__name__)

STREAM: Final = subjects.MESSAGES_STREAM
#: Largest batched direct get.
MAX_BATCH: Final = 1000
#: Ranges shorter than this are read optimistically from the estimated start (no probe first).
OPTIMISTIC_SPAN: Final = 100


class RangeReader:
    """Reads room seq ranges.

    Args:
        nc: the connection (single-message probes).
        reader: batched direct gets.
        states: the replica's per-room states (checkpoints).
        last: the store's "last message of a room" read (used to recover from a stream reset).
    """

    def __init__(
        self,
        nc: Client,
        reader: DirectReader,
        states: RoomStates,
        last: Callable[[str], Awaitable[Point | None]],
    ) -> None:
        self._nc = nc
        self._reader = reader
        self._states = states
        self._last = last

    async def read(
        self, room: str, first: int, last: int, *, tail: Point, limit: int | None = None
    ) -> list[StoredMessage]:
        """Stored messages with ``first <= seq <= last``, oldest first, at most ``limit``.

        Messages that passed retention are simply absent (the result then starts later).
        Cost: when the start position is known (checkpoint) or the room's messages are contiguous
        in the stream near the start, one batched read; otherwise a few single-message probes
        (:func:`chat_service.seqindex.locate`) and then batched reads of at most 1000.

        Args:
            room: the room.
            first, last: inclusive room seq range.
            tail: the room's last message as returned by :meth:`last` (an upper bracket).
            limit: stop after this many messages (``None``: the whole range).

        Raises:
            ProtocolError: ``unavailable`` (storage did not answer), ``internal``.
        """
        first = max(first, 1)
        last = min(last, tail.room_seq)
        if first > last:
            return []
        max_count = limit if limit is not None else last - first + 1
        subject = subjects.messages_subject(room)
        state = self._states.get(room)
        below, above = state.checkpoints.bracket(first)
        if above is None or above.room_seq > tail.room_seq:
            above = tail
        if below is None or below.stream_seq >= above.stream_seq:
            below = ORIGIN
        # Where message ``first`` is at the latest (exact when the stretch up to ``above`` is
        # contiguous in the stream): the first message read from there has seq >= first.
        guess = max(above.stream_seq - (above.room_seq - first), below.stream_seq + 1)
        if above.room_seq == first or last - first < OPTIMISTIC_SPAN:
            found, first_seen = await self._read_forward(state, subject, guess, first, last, max_count)
            if first_seen is None or first_seen <= first:
                return found
            # The guess overshot (other rooms' messages in between) or the start passed retention:
            # find where ``first`` starts, knowing that ``first_seen`` is the first message at or
            # after ``guess``, and read the part before it.
            start = await self._locate(room, subject, state, first, below, Point(first_seen, guess))
            head_end = min(first_seen - 1, last)
            head, _ = await self._read_forward(state, subject, start.stream_seq, first, head_end, max_count)
            return (head + found)[:max_count]
        start = await self._locate(room, subject, state, first, below, above)
        found, _ = await self._read_forward(state, subject, start.stream_seq, first, last, max_count)
        return found

    async def _read_forward(
        self, state: RoomState, subject: str, start_stream_seq: int, first: int, last: int, max_count: int
    ) -> tuple[list[StoredMessage], int | None]:
        """Messages with ``first <= seq <= last`` at stream sequence >= ``start_stream_seq``, and
        the seq of the first message met there (``None`` if there was none)."""
        out: list[StoredMessage] = []
        first_seen: int | None = None
        next_stream_seq = start_stream_seq
        current = first - 1
        while len(out) < max_count and current < last:
            want = min(MAX_BATCH, max_count - len(out), last - current)
            batch = await self._reader.bodies(STREAM, subject=subject, start_seq=next_stream_seq, batch=want)
            for body in batch.bodies:
                seq = seq_of_body(body)
                if first_seen is None:
                    first_seen = seq
                if seq > last:
                    return out, first_seen
                if seq > current:
                    out.append(StoredMessage(seq=seq, data=body))
                    current = seq
            if batch.bodies:
                state.checkpoints.add(Point(seq_of_body(batch.bodies[-1]), batch.last_stream_seq))
            if len(batch.bodies) < want:
                break
            next_stream_seq = batch.last_stream_seq + 1
        return out, first_seen

    async def _locate(
        self, room: str, subject: str, state: RoomState, target: int, below: Point, above: Point
    ) -> Point:
        """Where to start reading ``target`` (see :func:`chat_service.seqindex.locate`)."""

        async def probe(stream_seq: int) -> Point | None:
            msg = await direct_get(self._nc, STREAM, seq=stream_seq, next_by_subject=subject)
            return None if msg is None else Point(room_seq_of(msg), msg.stream_seq)

        try:
            point = await locate(target, probe, below=below, above=above)
        except SeqIndexError:
            # Only possible if the stream was deleted and re-created: forget what we knew.
            logger.warning("room=%s seq index inconsistent; resetting its checkpoints", room)
            state.checkpoints = Checkpoints()
            tail = await self._last(room)
            if tail is None or tail.room_seq < target:
                return Point(target, (tail.stream_seq + 1) if tail else 1)
            point = await locate(target, probe, below=ORIGIN, above=tail)
        if point.room_seq == target:
            state.checkpoints.add(point)
        return point
