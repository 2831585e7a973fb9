"""Per-room event sequencing: each room's events (v2: messages, edits, deletes, reactions,
member changes) reach the user once, in ``seq`` order.

PROTOCOL.md section 4: a room's ``seq`` starts at 1 and grows by exactly 1 per message; after a
reconnect, ``join`` with ``since`` = the last ``seq`` seen closes any gap. :class:`Sequencer` is
the pure bookkeeping of that rule (no I/O): the client feeds it every pushed ``message`` frame and
every ``joined`` answer, hands the user what it returns, and sends the ``join`` it asks for.

Per room it keeps ``last`` (the highest ``seq`` handed out), a ``filling`` flag (a ``join`` with
``since`` is in flight) and ``held`` frames (received past a gap, kept until the gap is filled):

- ``seq <= last``: a duplicate, dropped.
- ``seq == last + 1`` and not filling: handed out, then any held frames that now follow.
- ``seq > last + 1``: held, and (unless a fill is already in flight) a fill is requested:
  :class:`Outcome` ``fill`` = ``since`` to send as ``{"type":"join","room":..,"since":since}``.
- a ``joined`` answer hands out its ``messages`` above ``last``, then the held frames that follow;
  frames still held past a new gap request another fill.

When storage cannot return what is missing (``recovered: false``: more than 1000 messages missing
or past retention), the jump is handed out as an SDK ``gap`` frame
``{"type":"gap","room":..,"after":last,"before":first_seq_available}`` so that the application can
page back with ``history``; order and uniqueness still hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Frame = dict[str, Any]


#: Pushed frames that are room events, sequenced by ``seq`` (PROTOCOL.md section 8).
ROOM_EVENT_TYPES = frozenset({"message", "message_edited", "message_deleted", "reaction", "member"})


def message_frame(room: str, data: Frame) -> Frame:
    """A pushed-style frame for one stored room event (its ``data`` object): ``message``, or
    the event type a replayed item names in its ``type`` (PROTOCOL.md section 8)."""
    kind = data.get("type")
    return {"type": kind if kind in ROOM_EVENT_TYPES else "message", "room": room, "data": data}


def gap_frame(room: str, after: int, before: int) -> Frame:
    """The SDK's ``gap`` frame: messages ``after < seq < before`` of ``room`` cannot be recovered."""
    return {"type": "gap", "room": room, "after": after, "before": before}


def seq_of(data: Any) -> int | None:
    """The ``seq`` of a message ``data`` object, or ``None`` if it has no integer ``seq`` >= 1."""
    if not isinstance(data, dict):
        return None
    seq = data.get("seq")
    if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 1:
        return seq
    return None


@dataclass
class Outcome:
    """What the caller does next: hand ``deliver`` to the user in order, then, if ``fill`` is not
    ``None``, send ``join`` with ``since=fill`` for that room."""

    deliver: list[Frame] = field(default_factory=list)
    fill: int | None = None


@dataclass
class RoomState:
    """The sequencing state of one room (see the module docstring)."""

    last: int | None = None
    filling: bool = False
    held: dict[int, Frame] = field(default_factory=dict)


class Sequencer:
    """Per-room dedup, ordering and gap detection for ``message`` frames (pure logic).

    Args:
        max_held: frames held per room past a gap; beyond that the lowest are handed out as a
            ``gap`` (bounded memory if a fill never succeeds).
    """

    def __init__(self, max_held: int = 10_000) -> None:
        self.max_held = max_held
        self._rooms: dict[str, RoomState] = {}

    # --- tracking -------------------------------------------------------------------------
    def track(self, room: str) -> None:
        """Start tracking ``room`` (before its first ``joined`` answer); no-op if tracked."""
        self._rooms.setdefault(room, RoomState())

    def forget(self, room: str) -> None:
        """Stop tracking ``room`` (after ``leave``): its frames are dropped from now on."""
        self._rooms.pop(room, None)

    def tracked(self, room: str) -> bool:
        """Whether ``room`` is tracked."""
        return room in self._rooms

    def rooms(self) -> list[str]:
        """Tracked rooms."""
        return list(self._rooms)

    def last_seq(self, room: str) -> int | None:
        """The highest ``seq`` handed out for ``room`` (``None``: none yet / not tracked)."""
        state = self._rooms.get(room)
        return state.last if state else None

    def state(self, room: str) -> RoomState | None:
        """The room's state (read-only use: tests, diagnostics)."""
        return self._rooms.get(room)

    def begin_fill(self, room: str) -> int | None:
        """Mark a ``join`` with ``since`` in flight for ``room`` (e.g. after a reconnect): frames
        are held until its answer. Returns the ``since`` to send (``None``: no baseline yet)."""
        state = self._rooms.setdefault(room, RoomState())
        state.filling = True
        return state.last

    # --- input ----------------------------------------------------------------------------
    def push(self, frame: Frame) -> Outcome:
        """A pushed room event frame (``{"type":"message"|...,"room":..,"data":{"seq":..}}``).

        Frames of untracked rooms and frames without a valid ``seq`` are dropped.
        """
        room = frame.get("room")
        seq = seq_of(frame.get("data"))
        state = self._rooms.get(room) if isinstance(room, str) else None
        if state is None or seq is None:
            return Outcome()
        assert isinstance(room, str)
        if state.last is not None and seq <= state.last:
            return Outcome()
        if state.last is None or state.filling:
            state.held.setdefault(seq, frame)
            return Outcome(deliver=self._bound(room, state))
        if seq == state.last + 1:
            state.last = seq
            out = [frame]
            out.extend(self._drain(state))
            return Outcome(deliver=out)
        state.held.setdefault(seq, frame)
        state.filling = True
        return Outcome(deliver=self._bound(room, state), fill=state.last)

    def joined(self, room: str, answer: Frame, since: int | None, *, replay: bool = True) -> Outcome:
        """A ``joined`` answer (``last_seq``, ``messages`` oldest first, ``recovered``).

        Args:
            room: the room joined.
            answer: the ``joined`` frame.
            since: the ``since`` sent with the ``join`` (``None`` if none).
            replay: on a first join without ``since``, hand out the answer's messages (the
                latest 50); ``False`` starts after ``last_seq`` instead.
        """
        state = self._rooms.setdefault(room, RoomState())
        last_seq = answer.get("last_seq")
        last_seq = last_seq if isinstance(last_seq, int) and not isinstance(last_seq, bool) else None
        stored = sorted(
            ((seq, data) for data in answer.get("messages") or [] if (seq := seq_of(data)) is not None),
            key=lambda item: item[0],
        )
        if state.last is None:
            if since is not None:
                state.last = since
            elif not replay or not stored:
                state.last = last_seq or 0
            else:
                state.last = stored[0][0] - 1
        out: list[Frame] = []
        for seq, data in stored:
            if seq <= state.last:
                continue
            if seq > state.last + 1:
                out.append(gap_frame(room, state.last, seq))
            out.append(message_frame(room, data))
            state.last = seq
        if last_seq is not None and last_seq > state.last and answer.get("recovered") is False:
            out.append(gap_frame(room, state.last, last_seq + 1))
            state.last = last_seq
        state.filling = False
        out.extend(self._drain(state))
        fill = self._gap_after_drain(state)
        return Outcome(deliver=out, fill=fill)

    def fill_failed(self, room: str) -> Outcome:
        """The fill ``join`` failed (error or timeout): stop holding back on it. Returns a new
        fill request when frames are still held past a gap (the caller retries after a delay)."""
        state = self._rooms.get(room)
        if state is None:
            return Outcome()
        state.filling = False
        if state.last is None:
            return Outcome()
        out = self._drain(state)
        return Outcome(deliver=out, fill=self._gap_after_drain(state))

    # --- internals ------------------------------------------------------------------------
    def _drain(self, state: RoomState) -> list[Frame]:
        """Hand out held frames that follow ``last``; drop held duplicates."""
        assert state.last is not None
        for seq in [s for s in state.held if s <= state.last]:
            del state.held[seq]
        out = []
        while (frame := state.held.pop(state.last + 1, None)) is not None:
            out.append(frame)
            state.last += 1
        return out

    def _gap_after_drain(self, state: RoomState) -> int | None:
        if state.held and state.last is not None:
            state.filling = True
            return state.last
        return None

    def _bound(self, room: str, state: RoomState) -> list[Frame]:
        """Past ``max_held`` held frames, give up on the gap below the lowest one."""
        if len(state.held) <= self.max_held or state.last is None:
            return []
        lowest = min(state.held)
        out = [gap_frame(room, state.last, lowest)]
        state.last = lowest - 1
        out.extend(self._drain(state))
        return out
