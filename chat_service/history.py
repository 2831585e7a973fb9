"""Which stored messages a ``joined`` or ``history`` frame carries (PROTOCOL.md sections 3, 4).

* join without ``since``: the latest ``join_latest`` (50) messages, ``recovered`` false;
* join with ``since``: every message with ``seq > since`` and ``recovered`` true, unless more than
  ``recovery_limit`` (1000) are missing or some passed retention: then the latest 50 and
  ``recovered`` false, so the client pages back with ``history``; ``since >= last_seq``: none,
  ``recovered`` true;
* history ``before`` (or neither): the latest ``limit`` messages with ``seq < before``, oldest
  first; ``has_more`` tells whether older ones are stored;
* history ``after`` (gateways filling gaps): up to ``limit`` messages with ``seq > after``,
  oldest first; ``has_more`` tells whether newer ones exist.

Everything here reads via :class:`chat_service.store.MessageStore`; message bodies stay bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from chat_service.store import MessageStore


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
    store: MessageStore, room: str, since: int | None, *, recovery_limit: int, latest: int, seq_floor: int = 0
) -> Recovery:
    """Messages for a join (see the module docstring). ``seq_floor`` is the room's last seq when
    no message is stored any more (:mod:`chat_service.floors`).

    Raises:
        ProtocolError: ``unavailable`` when storage does not answer.
    """
    tail = await store.last(room)
    if tail is None:
        if since is not None and since >= seq_floor:
            return Recovery(last_seq=seq_floor, messages=[], recovered=True)
        return Recovery(last_seq=seq_floor, messages=[], recovered=False)
    last_seq = tail.room_seq
    if since is not None:
        if since >= last_seq:
            return Recovery(last_seq=last_seq, messages=[], recovered=True)
        missing = last_seq - since
        if missing <= recovery_limit:
            found = await store.read(room, since + 1, last_seq, tail=tail)
            if len(found) == missing and found[0].seq == since + 1:
                return Recovery(last_seq=last_seq, messages=[m.data for m in found], recovered=True)
            # some passed retention: fall through to the latest messages
    if latest <= 0:
        return Recovery(last_seq=last_seq, messages=[], recovered=False)
    found = await store.read(room, last_seq - latest + 1, last_seq, tail=tail)
    return Recovery(last_seq=last_seq, messages=[m.data for m in found], recovered=False)


async def page(store: MessageStore, room: str, *, before: int | None, after: int | None, limit: int) -> Page:
    """Messages for a ``history`` request (see the module docstring); ``after`` wins over
    ``before`` when both are given.

    Raises:
        ProtocolError: ``unavailable`` when storage does not answer.
    """
    tail = await store.last(room)
    if tail is None:
        return Page(messages=[], has_more=False)
    if after is not None:
        found = await store.read(room, after + 1, tail.room_seq, tail=tail, limit=limit)
        has_more = bool(found) and found[-1].seq < tail.room_seq
        return Page(messages=[m.data for m in found], has_more=has_more)
    high = tail.room_seq if before is None else min(tail.room_seq, before - 1)
    if high < 1:
        return Page(messages=[], has_more=False)
    # Read one more than asked: if it is stored, older messages exist.
    low = high - limit
    found = await store.read(room, max(low, 1), high, tail=tail)
    has_more = low >= 1 and bool(found) and found[0].seq == low
    if has_more:
        found = found[1:]
    return Page(messages=[m.data for m in found[-limit:]], has_more=has_more)
