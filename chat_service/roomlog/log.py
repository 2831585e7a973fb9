"""Appending to and reading from room logs (:mod:`shared.room_shards` has the subjects).

Append (DESIGN.md rules 6, 7, 11, 13): the room's next ``seq`` is its last entry's
``Natter-Seq`` + 1, and every publish carries ``Nats-Expected-Last-Subject-Sequence`` = that
entry's stream sequence, checked against the room's whole log
(``Nats-Expected-Last-Subject-Sequence-Subject: roomlog.<k>.<room>.>``): storage refuses (10071
"wrong last sequence") a write based on a stale view, so two replicas never store the same
``seq`` and seqs have no gaps.

* A message is one publish with ``Nats-Msg-Id`` ``<room>:<user_id>:<client_msg_id>``; a
  duplicate is answered ``duplicate: true`` with the original's stream sequence, whose body is
  re-read (v1's rule: nats-server checks the expected sequence before de-duplication, so a
  retry with a fresh expected sequence finds the original).
* Any other event is an atomic batch (ADR-50): the event, the message states it changes, and
  the request's idempotency record (``roomview.<k>.<room>.d.<key>``, ``Nats-TTL`` 10 minutes).
  All of it is stored or none. A repeated ``client_msg_id`` finds the record first and gets the
  original's answer, before any validation against the (by then changed) state.

A PubAck timeout means "unknown": the attempt is repeated (bounded), after looking for the
record, then ``unavailable``. Within one replica a room's writes are serialised by a per-room
lock and the caller's ``after_store`` runs under it, so this replica publishes a room's
deliveries in ``seq`` order.

Group commit (a hot room is not one write at a time). Plain messages wait in the room's queue
while a write is in flight; the next holder of the lock stores every queued message (up to
:data:`MAX_GROUP`) as one atomic batch: consecutive seqs, each entry with its own
``Nats-Msg-Id``, the first with the expected-last-sequence check, which covers the whole batch
because a batch is stored contiguously or not at all. So a room's throughput is no longer one
message per storage round trip (an fsync each with ``sync_interval: always``) but a batch per
round trip, while a lone message still costs one publish. A batch that meets a ``Nats-Msg-Id``
already stored (10201: a client's retry, or the batch itself after an unknown outcome) is
written again one message at a time, which answers each retry with its original.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import nats.errors
from nats.aio.client import Client
from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError

from chat_service.directget import DirectReader
from chat_service.roomlog.reads import Entry, Index, KeyedReader
from chat_service.roomlog.state import MessageState
from chat_service.seqindex import Point
from shared import room_shards, subjects
from shared.errors import ErrorCode, ProtocolError
from shared.request_mux import mux_for
from shared.room_entries import HDR_COUNT, HDR_THREAD_COUNT, LogPoint, entry_point, thread_count
from shared.room_shards import RoomLayout
from shared.stream_reader import StoredMsg, direct_get
from shared.streams import WRONG_LAST_SEQUENCE, publish_acked

logger = logging.getLogger(__name__)

#: An atomic batch holding a ``Nats-Msg-Id`` already stored (a repeated request).
BATCH_DUPLICATE: Final = 10201
MAX_UNKNOWN_OUTCOMES: Final = 3
HDR_MSG_ID: Final = "Nats-Msg-Id"
HDR_EXPECTED: Final = "Nats-Expected-Last-Subject-Sequence"
HDR_EXPECTED_SUBJECT: Final = "Nats-Expected-Last-Subject-Sequence-Subject"
#: multi_last takes at most 1024 subjects (ADR-31).
MULTI_LAST_MAX: Final = 1024
RECORD_TTL: Final = "10m"
#: ``STREAM.MSG.DELETE`` answers for a message that is not there (erased already): done.
#: 10057 "no message found", 10043 "sequence not found".
ALREADY_GONE: Final = frozenset({10057, 10043})
#: Tombstones read at most to answer a retry of a message deleted since.
TOMBSTONE_SCAN: Final = 200
#: Most messages of one room stored in one atomic batch (group commit); nats-server allows
#: 1,000 per batch (ADR-50), and a smaller group keeps each write's latency short.
MAX_GROUP: Final = 100


@dataclass(frozen=True, slots=True)
class Draft:
    """What one append attempt writes: the entry (``subject``, ``body``, extra ``headers``) and,
    for an event, the other writes of its atomic batch and the idempotency ``record``."""

    subject: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    extra: tuple[tuple[str, bytes, dict[str, str]], ...] = ()
    record: dict[str, Any] | None = None
    #: anything the caller wants back in :attr:`Appended.note` once this draft is stored.
    note: Any = None


@dataclass(frozen=True, slots=True)
class Appended:
    """The outcome of an append: the entry's ``seq`` and body, or (``duplicate``) the original's;
    ``record`` is the original event's idempotency record when found that way."""

    seq: int
    stream_seq: int
    data: bytes
    duplicate: bool = False
    record: dict[str, Any] | None = None
    note: Any = None
    #: the room's message count up to and including this entry (0 when not known: duplicates)
    count: int = 0


#: ``prepare(seq, count)``: the draft for storing at room ``seq`` when the room holds ``count``
#: messages; ``None`` when the request changes nothing (nothing is stored).
Prepare = Callable[[int, int], Awaitable[Draft | None]]


@dataclass(slots=True)
class _Write:
    """One append request waiting for (or done with) the room lock; ``outcome`` is set once it
    was written, by its own caller or by the holder of the lock that wrote its group."""

    user_id: str
    client_msg_id: str | None
    key: str
    msg_id: str
    prepare: Prepare
    after_store: Callable[[Appended], Awaitable[None]]
    batch: bool
    message: bool
    seq_floor: int
    outcome: tuple[Appended | None, BaseException | None] | None = None

    def result(self) -> Appended | None:
        """The stored entry, or raise what writing it raised."""
        assert self.outcome is not None
        result, error = self.outcome
        if error is not None:
            raise error
        return result


@dataclass(slots=True)
class _Room:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tail: LogPoint | None = None
    tail_known: bool = False
    #: plain messages waiting to be group-committed, in arrival order
    queue: deque[_Write] = field(default_factory=deque)


class RoomLog:
    """The room logs of every shard; one instance per replica.

    Args:
        nc: the NATS connection.
        reader: header-less batched direct gets on ``nc``.
        shards: the shard count (read from ``ROOMS_0``, :func:`shared.provisioning.room_shard_count`).
        publish_timeout: seconds to wait for one PubAck.
        attempts: bound on attempts per append.
        max_rooms: rooms whose lock and tail are cached (least recently used forgotten).
    """

    def __init__(
        self,
        nc: Client,
        reader: DirectReader,
        *,
        shards: int,
        publish_timeout: float = 2.0,
        attempts: int = 50,
        max_rooms: int = 10_000,
    ) -> None:
        self.nc = nc
        self.shards = shards
        self._publish_timeout = publish_timeout
        self._attempts = attempts
        self._max_rooms = max_rooms
        self._rooms: OrderedDict[str, _Room] = OrderedDict()
        self.keyed = KeyedReader(nc, reader)
        self._reader = reader

    # --- where --------------------------------------------------------------------------------
    def where(self, room: str) -> RoomLayout:
        """The room's stream and subjects."""
        return room_shards.layout(room, self.shards)

    def log_index(self, room: str) -> Index:
        """The whole log, keyed by room seq."""
        where = self.where(room)
        return Index(where.stream, where.log_filter)

    def messages_index(self, room: str) -> Index:
        """The messages, keyed by their count."""
        where = self.where(room)
        return Index(where.stream, where.messages_filter, HDR_COUNT)

    def by_seq_index(self, room: str) -> Index:
        """The messages, keyed by room seq (not contiguous)."""
        where = self.where(room)
        return Index(where.stream, where.messages_filter, subjects.HDR_SEQ)

    def thread_index(self, room: str, parent: int) -> Index:
        """The replies to ``parent``, keyed by thread count."""
        where = self.where(room)
        return Index(where.stream, where.message_subject(parent), HDR_THREAD_COUNT)

    def _room(self, room: str) -> _Room:
        state = self._rooms.get(room)
        if state is None:
            state = self._rooms[room] = _Room()
            while len(self._rooms) > self._max_rooms:
                victim = next(
                    (n for n, s in self._rooms.items() if n != room and not s.lock.locked() and not s.queue),
                    None,
                )
                if victim is None:
                    break
                del self._rooms[victim]
        else:
            self._rooms.move_to_end(room)
        return state

    # --- reading ------------------------------------------------------------------------------
    async def tail(self, room: str) -> LogPoint | None:
        """The room's last entry (``None``: empty log); one direct get.

        Raises:
            ProtocolError: ``unavailable``.
        """
        where = self.where(room)
        msg = await direct_get(self.nc, where.stream, last_by_subject=where.log_filter)
        point = None if msg is None else entry_point(msg)
        state = self._room(room)
        if point is not None and (state.tail is None or point.stream_seq >= state.tail.stream_seq):
            state.tail, state.tail_known = point, True
        if point is not None:
            self.keyed.learn(self.log_index(room), Point(point.seq, point.stream_seq))
        return point

    def known_tail(self, room: str) -> LogPoint | None:
        """The room's last entry as this replica last stored or read it, without a read (None:
        not known). It was the room's last entry at that moment; another replica may have
        written after it."""
        state = self._rooms.get(room)
        return state.tail if state is not None and state.tail_known else None

    async def tails(self, rooms: list[str], *, concurrency: int = 16) -> dict[str, LogPoint | None]:
        """:meth:`tail` of each room (``concurrency`` direct gets at a time)."""
        limiter = asyncio.Semaphore(concurrency)

        async def one(room: str) -> LogPoint | None:
            async with limiter:
                return await self.tail(room)

        points = await asyncio.gather(*(one(room) for room in rooms))
        return dict(zip(rooms, points, strict=True))

    async def last_message(self, room: str) -> StoredMsg | None:
        """The room's last message, with headers (``None``: none stored)."""
        where = self.where(room)
        msg = await direct_get(self.nc, where.stream, last_by_subject=where.messages_filter)
        if msg is not None:
            point = entry_point(msg)
            self.keyed.learn(self.messages_index(room), Point(point.count, msg.stream_seq))
            self.keyed.learn(self.by_seq_index(room), Point(point.seq, msg.stream_seq))
        return msg

    async def read_log(
        self, room: str, first: int, last: int, *, tail: LogPoint, limit: int | None = None
    ) -> list[Entry]:
        """Log entries with ``first <= seq <= last`` (erased ones absent), oldest first."""
        return await self.keyed.read(
            self.log_index(room), first, last, tail=Point(tail.seq, tail.stream_seq), limit=limit
        )

    async def read_messages(self, room: str, first: int, last: int, *, tail: StoredMsg) -> list[Entry]:
        """Messages with count ``first..last`` (``tail``: :meth:`last_message`)."""
        point = entry_point(tail)
        return await self.keyed.read(
            self.messages_index(room), first, last, tail=Point(point.count, tail.stream_seq)
        )

    async def read_thread(
        self, room: str, parent: int, first: int, last: int, *, tail: StoredMsg
    ) -> list[Entry]:
        """Replies to ``parent`` with thread count ``first..last`` (``tail``: :meth:`thread_tail`)."""
        return await self.keyed.read(
            self.thread_index(room, parent), first, last, tail=Point(thread_count(tail), tail.stream_seq)
        )

    async def thread_tail(self, room: str, parent: int) -> StoredMsg | None:
        """The latest reply to ``parent`` (``None``: no replies)."""
        where = self.where(room)
        return await direct_get(self.nc, where.stream, last_by_subject=where.message_subject(parent))

    async def message(self, room: str, seq: int) -> Entry | None:
        """Message ``seq`` of the room with its headers, ``None`` when no message has that seq
        (an event's seq, never stored, or erased)."""
        tail = await self.last_message(room)
        if tail is None:
            return None
        top = entry_point(tail).seq
        if seq > top:
            return None
        found = await self.keyed.read(
            self.by_seq_index(room), seq, seq, tail=Point(top, tail.stream_seq), limit=1
        )
        return found[0] if found and found[0].seq == seq else None

    async def tail_entry(self, room: str) -> StoredMsg | None:
        """The room's last entry itself (body and headers), ``None`` for an empty log."""
        where = self.where(room)
        return await direct_get(self.nc, where.stream, last_by_subject=where.log_filter)

    async def log_entry(self, room: str, seq: int, *, tail: LogPoint | None = None) -> Entry | None:
        """Entry ``seq`` of the room's log with headers and stream sequence (``None``: absent);
        ``tail``: the room's tail if the caller just read it."""
        tail = tail or await self.tail(room)
        if tail is None or seq > tail.seq:
            return None
        where = self.where(room)
        index = Index(where.stream, where.log_filter, subjects.HDR_SEQ)
        found = await self.keyed.read(index, seq, seq, tail=Point(tail.seq, tail.stream_seq), limit=1)
        return found[0] if found and found[0].seq == seq else None

    async def multi_last(self, stream: str, subject_list: list[str]) -> dict[str, StoredMsg]:
        """The last message of each of ``subject_list`` that has one (batched, 1024 per call)."""
        out: dict[str, StoredMsg] = {}
        for start in range(0, len(subject_list), MULTI_LAST_MAX):
            chunk = subject_list[start : start + MULTI_LAST_MAX]
            found = await self._reader.multi_last_of(stream, chunk)
            for msg in found:
                out[msg.subject] = msg
        return out

    async def states(self, room: str, seqs: Iterable[int]) -> dict[int, MessageState]:
        """The stored states of messages ``seqs`` (absent: untouched)."""
        where = self.where(room)
        wanted = {where.state_subject(seq): seq for seq in seqs}
        if not wanted:
            return {}
        found = await self.multi_last(where.stream, list(wanted))
        out = {}
        for subject, msg in found.items():
            try:
                out[wanted[subject]] = MessageState.decode(msg.data, revision=msg.stream_seq)
            except (ValueError, KeyError):
                logger.warning("room=%s unreadable state at %s skipped", room, subject)
        return out

    async def state(self, room: str, seq: int) -> MessageState | None:
        """The stored state of message ``seq``, ``None`` when untouched."""
        return (await self.states(room, [seq])).get(seq)

    async def tombstones(self, room: str, seqs: Iterable[int]) -> dict[int, bytes]:
        """The redacted bodies that stand in for erased entries ``seqs``."""
        where = self.where(room)
        wanted = {where.tombstone_subject(seq): seq for seq in seqs}
        if not wanted:
            return {}
        found = await self.multi_last(where.stream, list(wanted))
        return {wanted[subject]: msg.data for subject, msg in found.items()}

    async def record(self, room: str, key: str) -> dict[str, Any] | None:
        """The idempotency record ``key`` (:func:`shared.room_shards.request_key`), if stored
        within the last 10 minutes."""
        where = self.where(room)
        msg = await direct_get(self.nc, where.stream, last_by_subject=where.request_subject(key))
        if msg is None or not msg.data:
            return None
        try:
            value = json.loads(msg.data)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    # --- erasing --------------------------------------------------------------------------------
    async def erase(self, stream: str, stream_seqs: Iterable[int]) -> None:
        """Erase stored messages (``STREAM.MSG.DELETE``, overwritten on disk, NATS docs "Deleting
        messages"); already gone counts as done.

        Raises:
            ProtocolError: ``unavailable`` when storage did not confirm.
        """
        for stream_seq in stream_seqs:
            if stream_seq <= 0:
                continue
            try:
                reply = await mux_for(self.nc).request(
                    f"$JS.API.STREAM.MSG.DELETE.{stream}",
                    json.dumps({"seq": stream_seq}).encode(),
                    timeout=self._publish_timeout,
                )
            except Exception as error:
                raise ProtocolError(ErrorCode.UNAVAILABLE) from error
            answer = json.loads(reply.data or b"{}")
            error_info = answer.get("error")
            if error_info and error_info.get("err_code") not in ALREADY_GONE:
                logger.error("erase of %s/%d refused: %s", stream, stream_seq, error_info)
                raise ProtocolError(ErrorCode.UNAVAILABLE)

    # --- appending ------------------------------------------------------------------------------
    async def append(
        self,
        room: str,
        *,
        user_id: str,
        client_msg_id: str | None,
        prepare: Prepare,
        after_store: Callable[[Appended], Awaitable[None]],
        batch: bool,
        message: bool = False,
        seq_floor: int = 0,
    ) -> Appended | None:
        """Store one entry with the room's next ``seq``, exactly once per request.

        Plain messages (``message`` and not ``batch``) are group-committed: while one write of
        the room is in flight, the messages that arrive queue up, and the next write stores all
        of them (up to :data:`MAX_GROUP`) as one atomic batch with consecutive seqs, checked
        against the room's tail once (module docstring). A lone message is one publish, as
        before. Everything else is written alone, in arrival order with the messages.

        Args:
            room: the room (valid name).
            user_id: who asks (``Natter-User``, part of the idempotency key).
            client_msg_id: the idempotency key; ``None`` gets a fresh one (retries within this
                call stay idempotent).
            prepare: builds the draft per attempt (:data:`Prepare`); may raise ProtocolError
                (validation against the room's current state) or return ``None``. For a plain
                message it must not do I/O (it runs while the group is being written).
            after_store: awaited under the room lock with the result (deliveries in order).
            batch: an atomic batch (the entry, ``draft.extra`` and the idempotency record)
                rather than one publish.
            message: the entry is a message (it counts in ``Natter-Count``).
            seq_floor: the room's last seq known to the registry, used only when the log is
                empty (all passed retention), so that seqs never restart.

        Returns:
            The stored entry (or the original of a duplicate); ``None`` when ``prepare`` said the
            request changes nothing.

        Raises:
            ProtocolError: from ``prepare``; ``unavailable`` when storage cannot confirm.
        """
        key = room_shards.request_key(user_id, client_msg_id or uuid.uuid4().hex)
        msg_id = f"{room}:{user_id}:{client_msg_id}" if client_msg_id else f"{room}:{user_id}:{key}"
        write = _Write(
            user_id=user_id,
            client_msg_id=client_msg_id,
            key=key,
            msg_id=msg_id,
            prepare=prepare,
            after_store=after_store,
            batch=batch,
            message=message,
            seq_floor=seq_floor,
        )
        state = self._room(room)
        if message and not batch:
            state.queue.append(write)
        async with state.lock:
            if write.outcome is not None:  # an earlier holder stored it with its group
                return write.result()
            if not (message and not batch):
                return await self._write_one(room, state, write)
            if write not in state.queue:  # taken by a group whose writer failed midway
                return await self._settle(write, self._write_one(room, state, write))
            # Lock and queue are both first come, first served, so this write heads the queue.
            group: list[_Write] = []
            while state.queue and len(group) < MAX_GROUP:
                group.append(state.queue.popleft())
            if len(group) == 1:
                outcome = await self._settle(group[0], self._write_one(room, state, group[0]))
                return outcome
            await self._write_group(room, state, group)
            return write.result()

    async def _settle(self, write: _Write, work: Awaitable[Appended | None]) -> Appended | None:
        """Await ``work`` (the writing of ``write``) and record its outcome on ``write``."""
        try:
            result = await work
        except BaseException as error:
            write.outcome = (None, error)
            raise
        write.outcome = (result, None)
        return result

    async def _write_one(self, room: str, state: _Room, write: _Write) -> Appended | None:
        """Store ``write`` alone (the room lock is held)."""
        where = self.where(room)
        batch, key = write.batch, write.key
        if batch and write.client_msg_id is not None:
            found = await self.record(room, key)
            if found is not None:
                return Appended(
                    seq=int(found.get("seq") or 0), stream_seq=0, data=b"", duplicate=True, record=found
                )
        tail = state.tail if state.tail_known else await self.tail(room)
        unknown = 0
        check_record = False
        #: the request's Nats-Msg-Id belongs to a plain message stored earlier (a client reused
        #: its client_msg_id for a reply): publish the entry alone, whose duplicate PubAck
        #: points at that original (the answer a repeated client_msg_id gets, section 4)
        alone = False
        for _ in range(self._attempts):
            if batch and check_record and not alone:
                found = await self.record(room, key)
                if found is not None:
                    return Appended(
                        seq=int(found.get("seq") or 0),
                        stream_seq=0,
                        data=b"",
                        duplicate=True,
                        record=found,
                    )
            seq = (tail.seq if tail else write.seq_floor) + 1
            count = tail.count if tail else 0
            draft = await write.prepare(seq, count)
            if draft is None:
                return None
            new_count = count + (1 if write.message else 0)
            headers = {
                **draft.headers,
                **self._entry_headers(write, seq, new_count),
                HDR_EXPECTED: str(tail.stream_seq if tail else 0),
                HDR_EXPECTED_SUBJECT: where.log_filter,
            }
            try:
                if batch and not alone:
                    record = {**(draft.record or {}), "seq": seq}
                    extra = (
                        *draft.extra,
                        (
                            where.request_subject(key),
                            json.dumps(record).encode(),
                            {"Nats-TTL": RECORD_TTL},
                        ),
                    )
                    stream_seq = await self._publish_batch(draft.subject, draft.body, headers, extra)
                    duplicate = False
                else:
                    ack = await publish_acked(
                        self.nc, draft.subject, draft.body, timeout=self._publish_timeout, headers=headers
                    )
                    stream_seq, duplicate = ack.seq, bool(ack.duplicate)
                    if alone and not duplicate:  # the original left the 10-minute window meanwhile
                        logger.warning("room=%s seq=%d stored without its batch's other writes", room, seq)
            except APIError as error:
                if error.err_code in WRONG_LAST_SEQUENCE:
                    tail = await self.tail(room)  # another replica wrote: re-read and retry
                    check_record = unknown > 0
                    continue
                if error.err_code == BATCH_DUPLICATE:
                    alone = check_record  # no record of it either: a plain message has the id
                    check_record = True
                    continue
                if isinstance(error, ServiceUnavailableError):
                    unknown += 1
                    if unknown >= MAX_UNKNOWN_OUTCOMES:
                        break
                    check_record = True
                    await asyncio.sleep(0.1 * unknown)
                    continue
                logger.error("room=%s publish refused: %s", room, error)
                raise ProtocolError(ErrorCode.INTERNAL) from error
            except NoStreamResponseError:
                logger.error("room=%s stream %s missing: run `natter provision`", room, where.stream)
                break
            except nats.errors.Error:  # PubAck timeout, connection trouble: outcome unknown
                unknown += 1
                logger.warning("room=%s publish outcome unknown (attempt %d)", room, unknown)
                if unknown >= MAX_UNKNOWN_OUTCOMES:
                    break
                check_record = True
                continue
            if duplicate:
                original = await self._read_stored(where.stream, stream_seq)
                if original is None:  # deleted since: its tombstone stands in for it
                    original = await self._tombstone_of(room, stream_seq, write)
                point = entry_point(original)
                result = Appended(seq=point.seq, stream_seq=stream_seq, data=original.data, duplicate=True)
            else:
                self._stored(room, state, LogPoint(seq, new_count, stream_seq), message=write.message)
                result = Appended(
                    seq=seq, stream_seq=stream_seq, data=draft.body, note=draft.note, count=new_count
                )
            await write.after_store(result)
            return result
        state.tail_known = False
        logger.warning("room=%s entry not confirmed after bounded retries", room)
        raise ProtocolError(ErrorCode.UNAVAILABLE)

    async def _write_group(self, room: str, state: _Room, group: list[_Write]) -> None:
        """Store the plain messages ``group`` as one atomic batch with consecutive seqs (the room
        lock is held); each write's outcome is recorded on it and its ``after_store`` awaited in
        seq order. Only the first entry carries the expected-last-sequence check: the batch is
        stored contiguously or not at all, so one check covers every seq in it.

        When the batch holds a ``Nats-Msg-Id`` already stored (a client's retry of a message
        stored earlier, or this batch itself after an unknown outcome: 10201), each message is
        written alone instead, which finds the originals.
        """
        where = self.where(room)
        tail = state.tail if state.tail_known else await self.tail(room)
        unknown = 0
        for _ in range(self._attempts):
            seq0 = (tail.seq if tail else group[0].seq_floor) + 1
            count0 = tail.count if tail else 0
            drafts: list[Draft] = []
            for index, write in enumerate(group):
                draft = await write.prepare(seq0 + index, count0 + index)
                assert draft is not None, "a message always stores something"
                drafts.append(draft)
            items: list[tuple[str, bytes, dict[str, str]]] = []
            for index, (write, draft) in enumerate(zip(group, drafts, strict=True)):
                headers = {**draft.headers, **self._entry_headers(write, seq0 + index, count0 + index + 1)}
                if index == 0:
                    headers[HDR_EXPECTED] = str(tail.stream_seq if tail else 0)
                    headers[HDR_EXPECTED_SUBJECT] = where.log_filter
                items.append((draft.subject, draft.body, headers))
            try:
                first = await self._publish_batch(items[0][0], items[0][1], items[0][2], tuple(items[1:]))
            except APIError as error:
                if error.err_code in WRONG_LAST_SEQUENCE:
                    tail = await self.tail(room)
                    continue
                if error.err_code == BATCH_DUPLICATE:
                    break  # below: one by one
                if isinstance(error, ServiceUnavailableError):
                    unknown += 1
                    if unknown >= MAX_UNKNOWN_OUTCOMES:
                        break
                    await asyncio.sleep(0.1 * unknown)
                    continue
                logger.error("room=%s batch refused: %s", room, error)
                failure = ProtocolError(ErrorCode.INTERNAL)
                for write in group:
                    write.outcome = (None, failure)
                return
            except NoStreamResponseError:
                logger.error("room=%s stream %s missing: run `natter provision`", room, where.stream)
                break
            except nats.errors.Error:  # outcome unknown: the retry (or the fallback) finds out
                unknown += 1
                logger.warning("room=%s batch outcome unknown (attempt %d)", room, unknown)
                if unknown >= MAX_UNKNOWN_OUTCOMES:
                    break
                continue
            last = len(group) - 1
            self._stored(room, state, LogPoint(seq0 + last, count0 + last + 1, first + last), message=True)
            for index, (write, draft) in enumerate(zip(group, drafts, strict=True)):
                write.outcome = (
                    Appended(
                        seq=seq0 + index, stream_seq=first + index, data=draft.body, count=count0 + index + 1
                    ),
                    None,
                )
            for write in group:  # deliveries in seq order; each caller answers after the lock is free
                stored = write.result()
                assert stored is not None
                try:
                    await write.after_store(stored)
                except Exception as error:  # stored but not delivered: its caller answers the error,
                    write.outcome = (None, error)  # and the client's retry finds the original
            return
        # One by one: a duplicate in the group, or outcomes unknown.
        state.tail_known = False
        for write in group:
            try:
                await self._settle(write, self._write_one(room, state, write))
            except ProtocolError:
                continue  # recorded on the write; its caller raises it

    def _entry_headers(self, write: _Write, seq: int, count: int) -> dict[str, str]:
        """The headers every log entry carries (docs/subjects.md "Room logs")."""
        return {
            subjects.HDR_SEQ: str(seq),
            HDR_COUNT: str(count),
            subjects.HDR_USER: write.user_id,
            HDR_MSG_ID: write.msg_id,
        }

    def _stored(self, room: str, state: _Room, point: LogPoint, *, message: bool) -> None:
        """Remember the room's new tail (the last entry just stored)."""
        state.tail, state.tail_known = point, True
        self.keyed.learn(self.log_index(room), Point(point.seq, point.stream_seq))
        if message:
            self.keyed.learn(self.messages_index(room), Point(point.count, point.stream_seq))
            self.keyed.learn(self.by_seq_index(room), Point(point.seq, point.stream_seq))

    async def _publish_batch(
        self,
        subject: str,
        body: bytes,
        headers: dict[str, str],
        extra: tuple[tuple[str, bytes, dict[str, str]], ...],
    ) -> int:
        """Publish ``subject`` + ``extra`` as one atomic batch; the first message's stream seq.

        Raises:
            APIError: the batch was refused (e.g. 10071, 10201); nats.errors.Error: no answer.
        """
        batch_id = uuid.uuid4().hex
        items = [(subject, body, headers), *extra]
        for index, (item_subject, item_body, item_headers) in enumerate(items[:-1], start=1):
            await self.nc.publish(
                item_subject,
                item_body,
                headers={**item_headers, "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(index)},
            )
        last_subject, last_body, last_headers = items[-1]
        reply = await mux_for(self.nc).request(
            last_subject,
            last_body,
            timeout=self._publish_timeout,
            headers={
                **last_headers,
                "Nats-Batch-Id": batch_id,
                "Nats-Batch-Sequence": str(len(items)),
                "Nats-Batch-Commit": "1",
            },
        )
        answer = json.loads(reply.data)
        if "error" in answer:
            raise APIError.from_error(answer["error"])
        # The commit's seq is the batch's last message; the event is the first of ``count``.
        return int(answer["seq"]) - int(answer.get("count", len(items))) + 1

    async def _read_stored(self, stream: str, stream_seq: int) -> StoredMsg | None:
        """The message at ``stream_seq`` (retrying briefly: a replica may lag on a cluster);
        None when it is not there (erased: a deleted message)."""
        for attempt in range(3):
            msg = await direct_get(self.nc, stream, seq=stream_seq)
            if msg is not None:
                return msg
            await asyncio.sleep(0.05 * (attempt + 1))
        return None

    async def _tombstone_of(self, room: str, stream_seq: int, write: _Write) -> StoredMsg:
        """The tombstone of the deleted message stored at ``stream_seq`` by ``write``'s user with
        its ``client_msg_id`` (a retry of a message deleted since: it is answered with the
        original's ack, PROTOCOL.md section 4). Tombstones are written by the delete, after the
        message, so the scan starts there (bounded: :data:`TOMBSTONE_SCAN`).

        Raises:
            ProtocolError: ``message_not_found`` when none matches within the bound.
        """
        where = self.where(room)
        start = stream_seq + 1
        for _ in range(TOMBSTONE_SCAN):
            msg = await direct_get(self.nc, where.stream, seq=start, next_by_subject=where.tombstones_filter)
            if msg is None:
                break
            try:
                body = json.loads(msg.data)
            except ValueError:
                body = {}
            if body.get("client_msg_id") == write.client_msg_id and body.get("user_id") == write.user_id:
                return msg
            start = msg.stream_seq + 1
        raise ProtocolError(ErrorCode.MESSAGE_NOT_FOUND, "The message this client_msg_id sent was deleted")
