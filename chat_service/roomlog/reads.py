"""Reading a range of a room's log entries by a contiguous key, with batched direct gets.

A shard stream holds many rooms, so one room's entries are scattered among others'. Each
reader is an :class:`Index`: a filter subject and the key that counts its entries without
gaps:

* the whole log (``roomlog.<k>.<room>.>``): the room ``seq``, read from bodies (header-less
  batches, :meth:`chat_service.directget.DirectReader.bodies`);
* the messages (``.m.*``): ``Natter-Count``; one thread (``.m.<parent>``):
  ``Natter-Thread-Count`` (batches with headers);
* the messages by room ``seq`` (``by_seq``): not contiguous (events sit between messages) but
  still growing no faster than stream sequences, which is all :func:`locate` needs; used to
  find one message or where a page ``before`` a seq ends.

A read finds where its first key sits (:func:`chat_service.seqindex.locate`, one direct get per
probe, helped by remembered checkpoints), then reads forward in batches of at most 1000.
Short ranges start optimistically where the first key would be if the entries were contiguous
in the stream (often exact): one batch, no probe.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from nats.aio.client import Client

from chat_service.directget import DirectReader
from chat_service.roomlog.bodies import seq_of_body
from chat_service.seqindex import ORIGIN, Checkpoints, Point, SeqIndexError, locate
from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.stream_reader import StoredMsg, direct_batch, direct_get

logger = logging.getLogger(__name__)

#: Largest batched direct get.
MAX_BATCH: Final = 1000
#: Ranges shorter than this are read optimistically from the estimated start (no probe first).
OPTIMISTIC_SPAN: Final = 100


@dataclass(frozen=True, slots=True)
class Index:
    """One way of counting a room's entries: ``stream``, ``subject`` (a filter), and the header
    holding the key (``None``: the room seq from the body, read without headers)."""

    stream: str
    subject: str
    key_header: str | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry read: its key in the index, room ``seq``, body, headers and stream sequence
    (empty and 0 for a header-less read)."""

    key: int
    seq: int
    data: bytes
    headers: dict[str, str]
    stream_seq: int = 0


def key_of(index: Index, msg: StoredMsg) -> int:
    """The key of ``msg`` in ``index`` (``Natter-Seq`` when the index keys by seq).

    Raises:
        ProtocolError: ``internal`` for an entry without it.
    """
    name = index.key_header or subjects.HDR_SEQ
    value = msg.headers.get(name, "")
    if value.isdigit():
        return int(value)
    if index.key_header is None:
        return seq_of_body(msg.data)
    logger.error("entry at %d of %s has no %s", msg.stream_seq, index.stream, name)
    raise ProtocolError(ErrorCode.INTERNAL)


class Checkpointed:
    """Checkpoints per index, for up to ``max_indexes`` indexes (least recently used dropped)."""

    def __init__(self, max_indexes: int = 20_000) -> None:
        self._max = max_indexes
        self._points: OrderedDict[Index, Checkpoints] = OrderedDict()

    def get(self, index: Index) -> Checkpoints:
        """The checkpoints of ``index`` (created on first use)."""
        points = self._points.get(index)
        if points is None:
            points = self._points[index] = Checkpoints()
            while len(self._points) > self._max:
                self._points.popitem(last=False)
        else:
            self._points.move_to_end(index)
        return points

    def reset(self, index: Index) -> None:
        """Forget what is known of ``index`` (the stream changed under us)."""
        self._points.pop(index, None)


class KeyedReader:
    """Reads key ranges of indexes.

    Args:
        nc: the connection (single-message probes, batches with headers).
        reader: header-less batched direct gets.
    """

    def __init__(self, nc: Client, reader: DirectReader) -> None:
        self._nc = nc
        self._reader = reader
        self.checkpoints = Checkpointed()

    def learn(self, index: Index, point: Point) -> None:
        """Remember where key ``point.room_seq`` of ``index`` is stored."""
        self.checkpoints.get(index).add(point)

    async def read(
        self, index: Index, first: int, last: int, *, tail: Point, limit: int | None = None
    ) -> list[Entry]:
        """Entries with ``first <= key <= last``, oldest first, at most ``limit``.

        Entries that passed retention (or were erased) are absent. Cost: one batched read when
        the start is known or guessed right; otherwise a few single-message probes and then
        batched reads of at most 1000.

        Args:
            index: what to read.
            first, last: inclusive key range.
            tail: the last entry of the index (key, stream seq): an upper bracket.
            limit: stop after this many entries (``None``: the whole range).

        Raises:
            ProtocolError: ``unavailable`` (storage did not answer), ``internal``.
        """
        first = max(first, 1)
        last = min(last, tail.room_seq)
        if first > last:
            return []
        max_count = limit if limit is not None else last - first + 1
        points = self.checkpoints.get(index)
        below, above = points.bracket(first)
        if above is None or above.room_seq > tail.room_seq:
            above = tail
        if below is None or below.stream_seq >= above.stream_seq:
            below = ORIGIN
        # Where ``first`` is at the latest (exact when the entries up to ``above`` are contiguous
        # in the stream): the first entry read from there has key >= first.
        guess = max(above.stream_seq - (above.room_seq - first), below.stream_seq + 1)
        if above.room_seq == first or last - first < OPTIMISTIC_SPAN:
            found, first_seen = await self._read_forward(index, guess, first, last, max_count)
            if first_seen is None or first_seen <= first:
                return found
            start = await self._locate(index, first, below, Point(first_seen, guess))
            head_end = min(first_seen - 1, last)
            head, _ = await self._read_forward(index, start.stream_seq, first, head_end, max_count)
            return (head + found)[:max_count]
        start = await self._locate(index, first, below, above)
        found, _ = await self._read_forward(index, start.stream_seq, first, last, max_count)
        return found

    async def _batch(self, index: Index, start: int, want: int) -> tuple[list[Entry], int]:
        """Up to ``want`` entries at stream sequence >= ``start``, and the last one's stream
        sequence (0 when none)."""
        if index.key_header is None:
            bodies = await self._reader.bodies(
                index.stream, subject=index.subject, start_seq=start, batch=want
            )
            entries = []
            for body in bodies.bodies:
                seq = seq_of_body(body)
                entries.append(Entry(key=seq, seq=seq, data=body, headers={}))
            return entries, bodies.last_stream_seq
        msgs = await direct_batch(self._nc, index.stream, subject=index.subject, start_seq=start, batch=want)
        entries = [
            Entry(
                key=key_of(index, m),
                seq=int(m.headers.get(subjects.HDR_SEQ, "0")),
                data=m.data,
                headers=m.headers,
                stream_seq=m.stream_seq,
            )
            for m in msgs
        ]
        return entries, msgs[-1].stream_seq if msgs else 0

    async def _read_forward(
        self, index: Index, start_stream_seq: int, first: int, last: int, max_count: int
    ) -> tuple[list[Entry], int | None]:
        """Entries with ``first <= key <= last`` at stream sequence >= ``start_stream_seq``, and
        the key of the first entry met there (``None`` if there was none)."""
        out: list[Entry] = []
        first_seen: int | None = None
        next_stream_seq = start_stream_seq
        current = first - 1
        points = self.checkpoints.get(index)
        while len(out) < max_count and current < last:
            want = min(MAX_BATCH, max_count - len(out), last - current)
            batch, last_stream_seq = await self._batch(index, next_stream_seq, want)
            for entry in batch:
                if first_seen is None:
                    first_seen = entry.key
                if entry.key > last:
                    return out, first_seen
                if entry.key > current:
                    out.append(entry)
                    current = entry.key
            if batch:
                points.add(Point(batch[-1].key, last_stream_seq))
            if len(batch) < want:
                break
            next_stream_seq = last_stream_seq + 1
        return out, first_seen

    async def _locate(self, index: Index, target: int, below: Point, above: Point) -> Point:
        """Where to start reading ``target`` (:func:`chat_service.seqindex.locate`)."""

        async def probe(stream_seq: int) -> Point | None:
            msg = await direct_get(self._nc, index.stream, seq=stream_seq, next_by_subject=index.subject)
            return None if msg is None else Point(key_of(index, msg), msg.stream_seq)

        try:
            point = await locate(target, probe, below=below, above=above)
        except SeqIndexError:
            # Only possible if the stream was deleted and re-created: forget what we knew.
            logger.warning("index %s inconsistent; resetting its checkpoints", index.subject)
            self.checkpoints.reset(index)
            tail_msg = await direct_get(self._nc, index.stream, last_by_subject=index.subject)
            if tail_msg is None:
                return Point(target, above.stream_seq + 1)
            tail = Point(key_of(index, tail_msg), tail_msg.stream_seq)
            if tail.room_seq < target:
                return Point(target, tail.stream_seq + 1)
            point = await locate(target, probe, below=ORIGIN, above=tail)
        if point.room_seq == target:
            self.checkpoints.get(index).add(point)
        return point
