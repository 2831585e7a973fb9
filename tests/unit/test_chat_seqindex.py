"""Locating a room seq in the global message stream (pure logic, fake streams).

A fake stream is a list of room seqs by stream sequence (``None``: another room's message);
``probe(p)`` answers like JetStream's direct get with ``next_by_subj``: the room's first message
at stream sequence >= p.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat_service.seqindex import ORIGIN, Checkpoints, Point, SeqIndexError, locate


class FakeStream:
    """One room's messages inside a stream of ``len(layout)`` entries (stream seq = index + 1)."""

    def __init__(self, layout: list[int | None], *, expired_before: int = 0) -> None:
        self.layout = layout
        self.expired_before = expired_before  # stream seqs < this are gone (retention)
        self.probes = 0

    @classmethod
    def build(cls, messages: int, *, others: int, seed: int, expired: int = 0) -> FakeStream:
        rng = random.Random(seed)
        slots: list[int | None] = [None] * others + [0] * messages
        rng.shuffle(slots)
        seq = 0
        layout: list[int | None] = []
        for slot in slots:
            if slot is None:
                layout.append(None)
            else:
                seq += 1
                layout.append(seq)
        stream = cls(layout)
        if expired:
            stream.expired_before = stream.stream_seq_of(expired + 1)
        return stream

    def stream_seq_of(self, room_seq: int) -> int:
        return self.layout.index(room_seq) + 1

    @property
    def last(self) -> Point:
        for index in range(len(self.layout) - 1, -1, -1):
            value = self.layout[index]
            if value is not None:
                return Point(value, index + 1)
        raise AssertionError("empty room")

    def first_available(self) -> Point:
        for index, value in enumerate(self.layout):
            if value is not None and index + 1 >= self.expired_before:
                return Point(value, index + 1)
        raise AssertionError("nothing stored")

    async def probe(self, p: int) -> Point | None:
        self.probes += 1
        for index in range(max(p, self.expired_before, 1) - 1, len(self.layout)):
            value = self.layout[index]
            if value is not None:
                return Point(value, index + 1)
        return None


async def test_dense_room_is_found_with_one_probe() -> None:
    stream = FakeStream(list(range(1, 1001)))
    found = await locate(951, stream.probe, above=stream.last)
    assert found == Point(951, 951)
    assert stream.probes == 1


async def test_recent_block_after_other_traffic_is_found_with_one_probe() -> None:
    layout: list[int | None] = [None] * 5000 + list(range(1, 101))
    stream = FakeStream(layout)
    found = await locate(51, stream.probe, above=stream.last)
    assert found == Point(51, 5051)
    assert stream.probes == 1


async def test_target_equal_to_above_needs_no_probe() -> None:
    stream = FakeStream([None, 1, None, 2])
    assert await locate(2, stream.probe, above=Point(2, 4)) == Point(2, 4)
    assert stream.probes == 0


@pytest.mark.parametrize("seed", range(6))
async def test_every_target_in_an_interleaved_stream(seed: int) -> None:
    stream = FakeStream.build(300, others=3000, seed=seed)
    last = stream.last
    bound = 2 * math.ceil(math.log2(len(stream.layout))) + 4
    for target in range(1, last.room_seq + 1):
        stream.probes = 0
        found = await locate(target, stream.probe, above=last)
        assert found == Point(target, stream.stream_seq_of(target))
        assert stream.probes <= bound, (target, stream.probes)


async def test_checkpoints_narrow_the_search() -> None:
    stream = FakeStream.build(2000, others=20000, seed=7)
    target = 1500
    below = Point(1490, stream.stream_seq_of(1490))
    above = Point(1510, stream.stream_seq_of(1510))
    found = await locate(target, stream.probe, below=below, above=above)
    assert found == Point(target, stream.stream_seq_of(target))
    assert stream.probes <= 2 * math.ceil(math.log2(above.stream_seq - below.stream_seq)) + 2


@pytest.mark.parametrize("target", [1, 5, 99, 100])
async def test_expired_target_gives_the_first_stored_message(target: int) -> None:
    stream = FakeStream.build(400, others=1000, seed=3, expired=100)
    assert stream.first_available().room_seq == 101
    found = await locate(target, stream.probe, above=stream.last)
    assert found == stream.first_available()


async def test_target_after_expired_prefix_is_exact() -> None:
    stream = FakeStream.build(400, others=1000, seed=4, expired=100)
    found = await locate(250, stream.probe, above=stream.last)
    assert found == Point(250, stream.stream_seq_of(250))


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    messages=st.integers(min_value=1, max_value=120),
    others=st.integers(min_value=0, max_value=400),
    seed=st.integers(min_value=0, max_value=10_000),
)
async def test_locate_matches_a_linear_scan(
    data: st.DataObject, messages: int, others: int, seed: int
) -> None:
    expired = data.draw(st.integers(min_value=0, max_value=messages - 1))
    stream = FakeStream.build(messages, others=others, seed=seed, expired=expired)
    target = data.draw(st.integers(min_value=1, max_value=messages))
    # an optional checkpoint below the target, as the cache would supply it
    below = ORIGIN
    if target > 1 and data.draw(st.booleans()):
        known = data.draw(st.integers(min_value=1, max_value=target - 1))
        below = Point(known, stream.stream_seq_of(known))
    found = await locate(target, stream.probe, below=below, above=stream.last)
    expected = next(
        Point(value, index + 1)
        for index, value in enumerate(stream.layout)
        if value is not None and value >= target and index + 1 >= stream.expired_before
    )
    assert found == expected


async def test_bad_brackets_are_refused() -> None:
    stream = FakeStream([1, 2, 3])
    with pytest.raises(ValueError):
        await locate(3, stream.probe, below=Point(3, 3), above=Point(3, 3))
    with pytest.raises(ValueError):
        await locate(4, stream.probe, above=Point(3, 3))
    with pytest.raises(ValueError):
        await locate(0, stream.probe, above=Point(3, 3))


async def test_a_lying_probe_is_detected() -> None:
    async def nothing(p: int) -> Point | None:
        return None

    with pytest.raises(SeqIndexError):
        await locate(5, nothing, above=Point(10, 100))

    async def backwards(p: int) -> Point | None:
        return Point(1, max(p - 1, 1))

    with pytest.raises(SeqIndexError):
        await locate(5, backwards, above=Point(10, 100))


def test_checkpoints_bracket() -> None:
    checkpoints = Checkpoints()
    for point in (Point(10, 100), Point(20, 250), Point(30, 400)):
        checkpoints.add(point)
    assert checkpoints.bracket(5) == (None, Point(10, 100))
    assert checkpoints.bracket(10) == (None, Point(10, 100))
    assert checkpoints.bracket(11) == (Point(10, 100), Point(20, 250))
    assert checkpoints.bracket(30) == (Point(20, 250), Point(30, 400))
    assert checkpoints.bracket(31) == (Point(30, 400), None)


def test_checkpoints_ignore_duplicates_and_origin() -> None:
    checkpoints = Checkpoints()
    checkpoints.add(Point(5, 50))
    checkpoints.add(Point(5, 50))
    checkpoints.add(ORIGIN)
    assert len(checkpoints) == 1


def test_checkpoints_stay_bounded_sorted_and_dense_at_the_recent_end() -> None:
    checkpoints = Checkpoints(capacity=64)
    for seq in range(1, 1001):
        checkpoints.add(Point(seq, seq * 3))
    assert len(checkpoints) <= 64
    below, above = checkpoints.bracket(1000)
    assert above == Point(1000, 3000)
    assert below == Point(999, 2997)
    # every remembered point is still true and brackets its target tightly from both sides
    for seq in range(1, 1001):
        low, high = checkpoints.bracket(seq)
        assert high is not None and high.room_seq >= seq and high.stream_seq == high.room_seq * 3
        if low is not None:
            assert low.room_seq < seq and low.stream_seq == low.room_seq * 3
    assert checkpoints.bracket(1)[0] is None
