"""The answers built from room logs (PROTOCOL.md sections 3, 4 and 8).

Materialised (``history``, ``joined`` without ``since``, the HTTP page): messages in their
current state, ``limit`` counting messages. A page reads the room's last message (1 direct get),
finds where ``before`` falls (a checkpoint, or a few probes), reads the page by message count
(1 batched get), then the states and reply counts of exactly those messages (1 ``multi_last``
of at most 2 x 100 subjects). Nothing else of the log is read: a room with a million
reactions answers a page as fast as one without (docs/subjects.md "Room logs").

Raw (``joined`` with ``since``, gateway gap fills with ``after``): the log's entries in ``seq``
order, each its stored body; an erased entry (deleted text) is replaced by its tombstone.

* join without ``since``: the latest ``join_latest`` messages, ``recovered`` false;
* join with ``since``: every entry with ``seq > since`` and ``recovered`` true, unless more than
  ``recovery_limit`` are missing or some passed retention: then the latest messages and
  ``recovered`` false; ``since >= last_seq``: none, ``recovered`` true;
* history ``before`` (or neither): the latest ``limit`` messages with ``seq < before``, oldest
  first, ``has_more`` when older ones are stored; with ``thread``, the same over the replies to
  that message;
* history ``after`` (gateways): up to ``limit`` raw entries with ``seq > after``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from chat_service.roomlog.bodies import decode, seq_of_body
from chat_service.roomlog.log import RoomLog
from chat_service.roomlog.reads import Entry, Index
from chat_service.roomlog.state import materialise
from chat_service.seqindex import Point
from shared import subjects
from shared.protocol import dumps
from shared.room_entries import LogPoint, entry_point, thread_count
from shared.stream_reader import StoredMsg


@dataclass(frozen=True, slots=True)
class Recovery:
    """What a ``joined`` frame carries besides presence."""

    last_seq: int
    messages: list[bytes]
    recovered: bool


@dataclass(frozen=True, slots=True)
class Page:
    """What a ``history`` frame carries."""

    messages: list[bytes]
    has_more: bool


async def recover(
    log: RoomLog,
    room: str,
    since: int | None,
    *,
    recovery_limit: int,
    latest: int,
    me: str,
    seq_floor: int = 0,
    tail_read: Awaitable[LogPoint | None] | None = None,
) -> Recovery:
    """Entries or messages for a join (module docstring). ``seq_floor`` is the room's last seq
    when nothing is stored any more (:mod:`chat_service.floors`). ``tail_read``: the room's
    :meth:`RoomLog.tail` already under way (a future the caller shares with other readers, so
    that a join reads the tail once); read here when absent.

    Raises:
        ProtocolError: ``unavailable`` when storage does not answer.
    """
    tail = await (tail_read if tail_read is not None else log.tail(room))
    if tail is None:
        return Recovery(last_seq=seq_floor, messages=[], recovered=since is not None and since >= seq_floor)
    last_seq = tail.seq
    if since is not None:
        if since >= last_seq:
            return Recovery(last_seq=last_seq, messages=[], recovered=True)
        missing = last_seq - since
        if missing <= recovery_limit:
            entries = await replay(
                log, room, since + 1, last_seq, tail_seq=last_seq, tail_stream_seq=tail.stream_seq
            )
            if len(entries) == missing and seq_of_body(entries[0]) == since + 1:
                return Recovery(last_seq=last_seq, messages=entries, recovered=True)
            # some passed retention: fall through to the latest messages
    if latest <= 0:
        return Recovery(last_seq=last_seq, messages=[], recovered=False)
    latest_page = await page(log, room, before=None, limit=latest, me=me)
    return Recovery(last_seq=last_seq, messages=latest_page.messages, recovered=False)


async def replay(
    log: RoomLog,
    room: str,
    first: int,
    last: int,
    *,
    tail_seq: int,
    tail_stream_seq: int,
    limit: int | None = None,
) -> list[bytes]:
    """Raw entries ``first..last`` (at most ``limit``), erased ones as their tombstones."""
    entries = await log.read_log(room, first, last, tail=LogPoint(tail_seq, 0, tail_stream_seq), limit=limit)
    if not entries:
        return []
    end = entries[-1].seq if limit is not None and len(entries) >= limit else min(last, tail_seq)
    present = {entry.seq for entry in entries}
    start = first if entries[0].seq > first else entries[0].seq
    holes = [seq for seq in range(start, end + 1) if seq not in present]
    if not holes:
        return [entry.data for entry in entries]
    stones = await log.tombstones(room, holes[:1024])
    merged = {entry.seq: entry.data for entry in entries}
    merged.update(stones)
    ordered = [merged[seq] for seq in sorted(merged) if seq <= end]
    return ordered[:limit] if limit is not None else ordered


async def after(log: RoomLog, room: str, after_seq: int, *, limit: int) -> Page:
    """Up to ``limit`` raw entries with ``seq > after_seq`` (gateway gap fills)."""
    tail = await log.tail(room)
    if tail is None or tail.seq <= after_seq:
        return Page(messages=[], has_more=False)
    entries = await replay(
        log, room, after_seq + 1, tail.seq, tail_seq=tail.seq, tail_stream_seq=tail.stream_seq, limit=limit
    )
    has_more = bool(entries) and seq_of_body(entries[-1]) < tail.seq
    return Page(messages=entries, has_more=has_more)


async def page(
    log: RoomLog, room: str, *, before: int | None, limit: int, me: str, thread: int | None = None
) -> Page:
    """The latest ``limit`` messages with ``seq < before`` (of the room, or of ``thread``'s
    replies), materialised for user ``me``, oldest first. Purged (deleted) messages are read
    from their tombstones, so they keep their place as ``deleted: true``.

    Raises:
        ProtocolError: ``unavailable`` when storage does not answer.
    """
    where = log.where(room)
    if thread is None:
        tail = await log.last_message(room)
        count_index, seq_index = log.messages_index(room), log.by_seq_index(room)

        def stone_subject(count: int) -> str:
            return where.count_tombstone_subject(count)
    else:
        tail = await log.thread_tail(room, thread)
        count_index = log.thread_index(room, thread)
        seq_index = Index(where.stream, where.message_subject(thread), subjects.HDR_SEQ)

        def stone_subject(count: int) -> str:
            return where.thread_tombstone_subject(thread, count)

    # How many messages (or replies) there are, purged ones included: the room's last entry
    # carries the message count; a thread's count is its parent's ``replies``.
    if thread is None:
        room_tail = await log.tail(room)
        total = room_tail.count if room_tail is not None else 0
    else:
        parent_state = await log.state(room, thread)
        total = parent_state.replies if parent_state is not None else 0
    if tail is not None:
        total = max(total, thread_count(tail) if thread is not None else entry_point(tail).count)
    high = total
    if before is not None and tail is not None and before <= entry_point(tail).seq:
        # The first stored message at or after ``before``: the page ends just below it.
        top_seq = entry_point(tail).seq
        found = await log.keyed.read(
            seq_index, before, top_seq, tail=Point(top_seq, tail.stream_seq), limit=1
        )
        if found:
            stored = _as_stored(found[0])
            high = (thread_count(stored) if thread is not None else entry_point(stored).count) - 1
    entries: list[Entry] = []
    low = 0
    for _ in range(4):
        if high < 1:
            return Page(messages=[], has_more=False)
        low = high - limit  # one more than asked: if it is stored, older messages exist
        entries = []
        if tail is not None:
            top = thread_count(tail) if thread is not None else entry_point(tail).count
            entries = await log.keyed.read(count_index, max(low, 1), high, tail=Point(top, tail.stream_seq))
        entries = await _with_tombstones(log, where.stream, entries, max(low, 1), high, stone_subject)
        newer = [entry.key for entry in entries if before is not None and entry.seq >= before]
        if not newer:
            break
        high = min(newer) - 1  # purged messages at or after ``before`` sat below that entry
    has_more = low >= 1 and bool(entries) and entries[0].key == low
    if has_more:
        entries = entries[1:]
    entries = entries[-limit:]
    return Page(messages=await materialised(log, room, entries, me=me), has_more=has_more)


async def _with_tombstones(
    log: RoomLog, stream: str, entries: list[Entry], low: int, high: int, stone_subject: Callable[[int], str]
) -> list[Entry]:
    """``entries`` (keys ``low..high`` of a count index) with the keys missing among them filled
    from tombstones of purged messages, where one exists (a key that passed retention has none)."""
    present = {entry.key for entry in entries}
    missing = [key for key in range(low, high + 1) if key not in present]
    if not missing:
        return entries
    wanted = {stone_subject(key): key for key in missing[:1024]}
    found = await log.multi_last(stream, list(wanted))
    filled = list(entries)
    for subject, msg in found.items():
        filled.append(
            Entry(
                key=wanted[subject],
                seq=int(msg.headers.get(subjects.HDR_SEQ) or seq_of_body(msg.data)),
                data=msg.data,
                headers=msg.headers,
            )
        )
    return sorted(filled, key=lambda entry: entry.key)


def _as_stored(entry: Entry) -> StoredMsg:
    return StoredMsg(stream_seq=0, subject="", headers=entry.headers, data=entry.data)


async def materialised(log: RoomLog, room: str, entries: list[Entry], *, me: str) -> list[bytes]:
    """``entries`` (messages) in their current state for user ``me`` (one ``multi_last``)."""
    if not entries:
        return []
    states = await log.states(room, [entry.seq for entry in entries])
    return [
        dumps(materialise(decode(entry.data), states.get(entry.seq), me=me)).encode() for entry in entries
    ]
