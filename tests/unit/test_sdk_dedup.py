"""natter.sdk.dedup.Sequencer: per-room seq order, duplicates dropped, gaps filled (pure logic)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from natter.sdk.dedup import Sequencer, gap_frame


def msg(seq: int, room: str = "r") -> dict[str, Any]:
    return {
        "type": "message",
        "room": room,
        "data": {"id": f"{room}:{seq}", "seq": seq, "message": f"m{seq}"},
    }


def joined(last_seq: int, seqs: list[int], recovered: bool, room: str = "r") -> dict[str, Any]:
    return {
        "type": "joined",
        "room": room,
        "last_seq": last_seq,
        "online": [],
        "messages": [msg(s, room)["data"] for s in seqs],
        "recovered": recovered,
    }


def seqs(frames: list[dict[str, Any]]) -> list[int]:
    return [f["data"]["seq"] for f in frames if f["type"] == "message"]


def started(last: int = 0) -> Sequencer:
    sequencer = Sequencer()
    sequencer.track("r")
    sequencer.joined("r", joined(last, [], False), None)
    return sequencer


def test_in_order_frames_pass_and_duplicates_are_dropped() -> None:
    sequencer = started()
    out = []
    for seq in (1, 2, 2, 3, 1, 3):
        outcome = sequencer.push(msg(seq))
        assert outcome.fill is None
        out += outcome.deliver
    assert seqs(out) == [1, 2, 3]
    assert sequencer.last_seq("r") == 3


def test_gap_holds_later_frames_and_asks_for_a_fill_once() -> None:
    sequencer = started()
    assert seqs(sequencer.push(msg(1)).deliver) == [1]
    gap = sequencer.push(msg(4))
    assert gap.deliver == [] and gap.fill == 1
    more = sequencer.push(msg(5))
    assert more.deliver == [] and more.fill is None  # a fill is already in flight
    answer = sequencer.joined("r", joined(5, [2, 3, 4, 5], True), since=1)
    assert seqs(answer.deliver) == [2, 3, 4, 5] and answer.fill is None
    assert seqs(sequencer.push(msg(5)).deliver) == []
    assert seqs(sequencer.push(msg(6)).deliver) == [6]


def test_fill_answer_older_than_held_frames_then_held_frames_follow() -> None:
    sequencer = started(2)
    assert sequencer.push(msg(5)).fill == 2
    sequencer.push(msg(6))
    answer = sequencer.joined("r", joined(4, [3, 4], True), since=2)
    assert seqs(answer.deliver) == [3, 4, 5, 6] and answer.fill is None


def test_fill_that_leaves_a_gap_asks_again() -> None:
    sequencer = started()
    assert sequencer.push(msg(3)).fill == 0
    sequencer.push(msg(6))
    answer = sequencer.joined("r", joined(3, [1, 2, 3], True), since=0)
    assert seqs(answer.deliver) == [1, 2, 3] and answer.fill == 3
    answer = sequencer.joined("r", joined(6, [4, 5, 6], True), since=3)
    assert seqs(answer.deliver) == [4, 5, 6] and answer.fill is None


def test_frames_of_untracked_rooms_and_bad_seqs_are_dropped() -> None:
    sequencer = started()
    assert sequencer.push(msg(1, room="other")).deliver == []
    assert sequencer.push({"type": "message", "room": "r", "data": {"seq": "1"}}).deliver == []
    assert sequencer.push({"type": "message", "room": "r", "data": {"seq": 0}}).deliver == []
    sequencer.forget("r")
    assert sequencer.push(msg(1)).deliver == [] and not sequencer.tracked("r")


def test_first_join_replays_backlog_or_starts_after_last_seq() -> None:
    replaying = Sequencer()
    replaying.track("r")
    out = replaying.joined("r", joined(60, list(range(11, 61)), False), None)
    assert seqs(out.deliver) == list(range(11, 61)) and not any(f["type"] == "gap" for f in out.deliver)
    quiet = Sequencer()
    quiet.track("r")
    assert quiet.joined("r", joined(60, list(range(11, 61)), False), None, replay=False).deliver == []
    assert seqs(quiet.push(msg(61)).deliver) == [61]


def test_frames_before_the_first_answer_are_held() -> None:
    sequencer = Sequencer()
    sequencer.track("r")
    assert sequencer.push(msg(3)).deliver == []
    out = sequencer.joined("r", joined(2, [1, 2], False), None)
    assert seqs(out.deliver) == [1, 2, 3]


def test_join_with_since_delivers_after_since() -> None:
    sequencer = Sequencer()
    sequencer.track("r")
    out = sequencer.joined("r", joined(5, [3, 4, 5], True), since=2)
    assert seqs(out.deliver) == [3, 4, 5]


def test_unrecoverable_gap_is_reported_once_then_order_continues() -> None:
    sequencer = started(10)
    assert sequencer.begin_fill("r") == 10
    assert sequencer.push(msg(2000)).deliver == []
    answer = sequencer.joined("r", joined(2000, list(range(1951, 2001)), False), since=10)
    assert answer.deliver[0] == gap_frame("r", 10, 1951)
    assert seqs(answer.deliver) == list(range(1951, 2001))
    assert [f for f in answer.deliver if f["type"] == "gap"] == [gap_frame("r", 10, 1951)]


def test_recovered_false_without_messages_reports_the_jump() -> None:
    sequencer = started(10)
    out = sequencer.joined("r", joined(30, [], False), since=10)
    assert out.deliver == [gap_frame("r", 10, 31)] and sequencer.last_seq("r") == 30


def test_failed_fill_stops_holding_and_asks_again_if_frames_wait() -> None:
    sequencer = started(1)
    assert sequencer.push(msg(3)).fill == 1
    retry = sequencer.fill_failed("r")
    assert retry.deliver == [] and retry.fill == 1
    assert sequencer.fill_failed("unknown").fill is None


def test_held_frames_are_bounded() -> None:
    sequencer = Sequencer(max_held=3)
    sequencer.track("r")
    sequencer.joined("r", joined(0, [], False), None)
    assert sequencer.push(msg(5)).fill == 0
    for seq in (6, 7):
        assert sequencer.push(msg(seq)).deliver == []
    out = sequencer.push(msg(8)).deliver
    assert out[0] == gap_frame("r", 0, 5) and seqs(out) == [5, 6, 7, 8]


def test_rooms_are_independent() -> None:
    sequencer = Sequencer()
    for room in ("a", "b"):
        sequencer.track(room)
        sequencer.joined(room, joined(0, [], False, room=room), None)
    assert seqs(sequencer.push(msg(1, "a")).deliver) == [1]
    assert seqs(sequencer.push(msg(1, "b")).deliver) == [1]
    assert sequencer.push(msg(3, "a")).fill == 1
    assert seqs(sequencer.push(msg(2, "b")).deliver) == [2]


@given(
    st.lists(st.integers(min_value=1, max_value=40), max_size=120),
    st.lists(st.integers(min_value=0, max_value=40), max_size=10),
)
def test_output_is_strictly_contiguous_whatever_arrives(pushes: list[int], fill_points: list[int]) -> None:
    """Any mix of duplicates, reorderings and gaps: the output is 1, 2, 3, ... with no repeat."""
    sequencer = started()
    out: list[dict[str, Any]] = []
    fills = iter(fill_points)
    for seq in pushes:
        outcome = sequencer.push(msg(seq))
        out += outcome.deliver
        while outcome.fill is not None:
            # Storage answers with everything after `since` up to some later seq.
            upto = max(outcome.fill, next(fills, 40))
            outcome = sequencer.joined(
                "r", joined(upto, list(range(outcome.fill + 1, upto + 1)), True), outcome.fill
            )
            out += outcome.deliver
    delivered = seqs(out)
    assert delivered == list(range(1, len(delivered) + 1))
    assert all(f["type"] == "message" for f in out)
