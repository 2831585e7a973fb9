"""What every entry of a room log carries in its headers (docs/subjects.md "Room logs").

An entry is a message (``roomlog.<k>.<room>.m.*``) or another room event (``.e``). Headers:

* ``Natter-Seq``: the room ``seq`` of the entry (also the body's ``seq``);
* ``Natter-Count``: how many messages the room holds up to and including this entry (a
  message's own ordinal among messages, contiguous: pages of messages are read by it);
* ``Natter-Thread-Count``: on a reply, its ordinal in its thread (thread pages are read by it);
* ``Natter-User``: who caused it.

Both producers of entries (chat_service, and the v1 migration run by ``natter provision``)
build them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from shared import subjects
from shared.stream_reader import StoredMsg

HDR_COUNT: Final = "Natter-Count"
HDR_THREAD_COUNT: Final = "Natter-Thread-Count"


@dataclass(frozen=True, slots=True)
class LogPoint:
    """One log entry's place: room ``seq``, message ``count`` up to it, stream sequence."""

    seq: int
    count: int
    stream_seq: int


def _int_header(msg: StoredMsg, name: str) -> int:
    value = msg.headers.get(name, "")
    return int(value) if value.isdigit() else 0


def entry_point(msg: StoredMsg) -> LogPoint:
    """The :class:`LogPoint` of a stored entry read with its headers (0 for a missing header)."""
    return LogPoint(
        seq=_int_header(msg, subjects.HDR_SEQ), count=_int_header(msg, HDR_COUNT), stream_seq=msg.stream_seq
    )


def thread_count(msg: StoredMsg) -> int:
    """A reply's ordinal in its thread (``Natter-Thread-Count``; 0 when absent)."""
    return _int_header(msg, HDR_THREAD_COUNT)
