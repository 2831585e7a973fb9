"""Where the event feed keeps its copies of a room's text, so that a delete can erase them
(PROTOCOL.md section 8 "Delete means gone"; :mod:`chat_service.feed` writes, the purge reads).

After relaying a batch of shard ``k``'s log entries into ``EVENTS``, the relay writes one record
``roomview.<k>._fx.<first>`` (``first``: the stream sequence of the batch's first entry; no room
name starts with ``_``): ``{"first","last","copies":[[room, room seq, stream seq of the entry,
EVENTS seq], ...]}`` for the entries whose feed copy carries text (messages and edits), kept 8
days (``Nats-TTL``, past EVENTS' 7). One write per batch, not per message.

To find the copy of the entry stored at stream sequence ``s``, read the records that follow
``s`` in the stream (direct get ``next_by_subj``): the record of the batch that relayed ``s`` is
the first whose range ``[first, last]`` holds ``s``; a record starting after ``s`` means the
relay has not reached ``s`` yet (it then checks the message's state itself before it leaves a
copy behind).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Final

from chat_service.roomlog.log import RoomLog
from shared import room_shards
from shared.stream_reader import direct_get

#: ``Nats-TTL`` of a batch record: past the 7 days EVENTS keeps events.
RECORD_TTL: Final = "192h"
#: Records read at most to locate one entry (each is one batch of the relay).
MAX_SCAN: Final = 64


def records_filter(shard: int) -> str:
    """Every batch record of shard ``shard``."""
    return f"roomview.{shard}._fx.*"


def record_subject(shard: int, first: int) -> str:
    """The record of the batch whose first entry is at stream sequence ``first``."""
    return f"roomview.{shard}._fx.{first}"


def encode_record(first: int, last: int, copies: list[tuple[str, int, int, int]]) -> bytes:
    """A batch record's body (module docstring)."""
    return json.dumps({"first": first, "last": last, "copies": copies}, separators=(",", ":")).encode()


async def feed_copies(log: RoomLog, shard: int, room: str, stream_seqs: Iterable[int]) -> list[int]:
    """``EVENTS`` sequences of the feed copies of the entries stored at ``stream_seqs`` in
    ``room``'s shard (a deleted message and its edits); entries not relayed yet have none.

    Raises:
        ProtocolError: ``unavailable`` when storage does not answer.
    """
    stream = room_shards.stream_name(shard)
    out: list[int] = []
    for wanted in stream_seqs:
        start = wanted
        for _ in range(MAX_SCAN):
            msg = await direct_get(log.nc, stream, seq=start, next_by_subject=records_filter(shard))
            if msg is None:
                break
            try:
                record: dict[str, Any] = json.loads(msg.data)
                first, last = int(record["first"]), int(record["last"])
            except (ValueError, KeyError, TypeError):
                start = msg.stream_seq + 1
                continue
            if first > wanted:
                break  # not relayed yet
            if first <= wanted <= last:
                out += [int(c[3]) for c in record.get("copies", []) if c[0] == room and int(c[2]) == wanted]
                break
            start = msg.stream_seq + 1
    return out
