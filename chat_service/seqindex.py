"""Finding a room ``seq`` in the global ``CHAT_MESSAGES`` stream (pure logic, no I/O).

Every room is one subject of one stream, so a room's messages are scattered over the stream's
sequence numbers, interleaved with other rooms. Two facts make lookup cheap:

* room ``seq`` grows with stream sequence (both are assigned at storage, DESIGN.md rule 6), and
  each message takes its own stream sequence, so ``s(r2) - s(r1) >= r2 - r1``;
* messages are immutable, so a remembered ``(room seq, stream seq)`` pair (a :class:`Point`)
  stays true forever. A cache of such checkpoints can be incomplete, never wrong.

:func:`locate` searches with a probe "first message of the room at stream sequence >= p"
(JetStream direct get with ``next_by_subj``), mixing a guess that is exact when the room's recent
messages are contiguous in the stream, interpolation between known points, and bisection
(which bounds the worst case to about ``2 * log2(range)`` probes).
"""

from __future__ import annotations

import bisect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True, order=True)
class Point:
    """A message of one room: its room ``seq`` and the stream sequence holding it.

    ``Point(0, 0)`` is the virtual origin: "room seq 0" sits before every stream sequence.
    """

    room_seq: int
    stream_seq: int


ORIGIN: Final = Point(0, 0)

#: ``probe(p)``: the room's first message at stream sequence >= ``p``, ``None`` when there is none.
Probe = Callable[[int], Awaitable[Point | None]]


class SeqIndexError(RuntimeError):
    """The probes contradict the search's invariants (the stream changed under us)."""


async def locate(
    target: int, probe: Probe, *, below: Point = ORIGIN, above: Point, max_probes: int = 256
) -> Point:
    """The room's first message with ``room_seq >= target``.

    That is message ``target`` itself when it is stored, or the first message still stored when
    ``target`` passed retention (retention removes a prefix of the stream).

    Args:
        target: room seq to find (>= 1).
        probe: see :data:`Probe`.
        below: a message with ``room_seq < target`` (or :data:`ORIGIN`).
        above: a message with ``room_seq >= target`` (typically the room's last message).
        max_probes: safety bound on probes.

    Raises:
        ValueError: ``below``/``above`` do not bracket ``target``.
        SeqIndexError: probes contradict monotonicity, or ``max_probes`` was exceeded.
    """
    if not below.room_seq < target <= above.room_seq or below.stream_seq >= above.stream_seq:
        raise ValueError(f"bad bracket for {target}: {below} {above}")
    if above.room_seq == target:
        return above
    # Invariants: message (a_q) is at stream seq a_t and a_q < target; every message with room
    # seq < b_q is at a stream seq < b_p, and the first message at or after b_p is b (b_q > target).
    a_q, a_t = below.room_seq, below.stream_seq
    b_q, b_p, b_t = above.room_seq, above.stream_seq, above.stream_seq
    probes = 0
    while b_p - a_t > 1:
        if probes >= max_probes:
            raise SeqIndexError(f"no convergence for {target} after {probes} probes")
        p = _next_probe(target, probes, a_q=a_q, a_t=a_t, b_q=b_q, b_p=b_p)
        got = await probe(p)
        probes += 1
        if got is None or got.stream_seq < p:
            raise SeqIndexError(f"probe({p}) returned {got}")
        if got.room_seq == target:
            return got
        if got.room_seq < target:
            if got.stream_seq >= b_p or got.room_seq <= a_q:
                raise SeqIndexError(f"probe({p}) returned {got} outside ({a_q}@{a_t}, {b_q}@{b_p})")
            a_q, a_t = got.room_seq, got.stream_seq
        else:
            if got.room_seq > b_q:
                raise SeqIndexError(f"probe({p}) returned {got} beyond {b_q}")
            b_q, b_p, b_t = got.room_seq, p, got.stream_seq
    return Point(b_q, b_t)


def _next_probe(target: int, probes: int, *, a_q: int, a_t: int, b_q: int, b_p: int) -> int:
    """Choose the next stream sequence to probe, strictly inside ``(a_t, b_p)``."""
    lo, hi = a_t + 1, b_p - 1
    # If message ``target`` exists it lies in [a_t + (target - a_q), b_p - (b_q - target)].
    est_lo, est_hi = a_t + (target - a_q), b_p - (b_q - target)
    if est_lo > est_hi:  # target is not stored (retention): plain bisection finds the first one
        return (lo + hi) // 2
    lo, hi = max(lo, est_lo), min(hi, est_hi)
    if probes == 0:
        return hi  # exact when the room's recent messages are contiguous in the stream
    if probes % 2 == 1:
        guess = a_t + (target - a_q) * (b_p - a_t) // (b_q - a_q)
        return min(max(guess, lo), hi)
    return (lo + hi) // 2


class Checkpoints:
    """Known :class:`Point` s of one room, sorted, bounded to ``capacity`` entries.

    When full, every second point of the older half is forgotten, so recent positions (where
    most reads go) stay dense and old ones stay spread out.
    """

    def __init__(self, capacity: int = 512) -> None:
        if capacity < 4:
            raise ValueError("capacity must be >= 4")
        self.capacity = capacity
        self._seqs: list[int] = []
        self._points: list[Point] = []

    def __len__(self) -> int:
        return len(self._points)

    def add(self, point: Point) -> None:
        """Remember ``point`` (a no-op when its room seq is known already)."""
        if point.room_seq <= 0:
            return
        index = bisect.bisect_left(self._seqs, point.room_seq)
        if index < len(self._seqs) and self._seqs[index] == point.room_seq:
            return
        self._seqs.insert(index, point.room_seq)
        self._points.insert(index, point)
        if len(self._points) > self.capacity:
            half = len(self._points) // 2
            keep = self._points[:half:2] + self._points[half:]
            self._points = keep
            self._seqs = [p.room_seq for p in keep]

    def bracket(self, target: int) -> tuple[Point | None, Point | None]:
        """``(below, above)``: the closest known points with ``room_seq < target`` and
        ``room_seq >= target`` (either may be ``None``)."""
        index = bisect.bisect_left(self._seqs, target)
        below = self._points[index - 1] if index > 0 else None
        above = self._points[index] if index < len(self._points) else None
        return below, above
