"""Pure logic of notify_service.read_state: the ``natter_notify_read`` value and its merge."""

from __future__ import annotations

import json

from notify_service.read_state import MAX_READ_IDS, ReadState, decode_state, encode_state, merge


def test_is_read_by_sequence_or_id() -> None:
    state = ReadState(read_ids=frozenset({"b"}), all_before=5)
    assert state.is_read(5, "a")
    assert state.is_read(9, "b")
    assert not state.is_read(6, "a")


def test_encode_decode_round_trip() -> None:
    state = ReadState(read_ids=frozenset({"z", "a"}), all_before=12)
    raw = encode_state(state)
    assert json.loads(raw) == {"read_ids": ["a", "z"], "all_before": 12}
    assert decode_state(raw) == state


def test_decode_tolerates_missing_or_malformed_values() -> None:
    assert decode_state(None) == ReadState()
    assert decode_state(b"") == ReadState()
    assert decode_state(b"not json") == ReadState()
    assert decode_state(b'{"read_ids":"x","all_before":1}') == ReadState()
    assert decode_state(b'{"all_before":true}') == ReadState()
    assert decode_state(b'{"read_ids":["a",3]}') == ReadState(read_ids=frozenset({"a"}))


def test_merge_ids_keeps_only_stored_ids() -> None:
    stored = [(1, "a"), (2, "b"), (3, "c")]
    state = merge(ReadState(), stored=stored, ids=["b", "ghost"])
    assert state == ReadState(read_ids=frozenset({"b"}), all_before=0)
    state = merge(state, stored=stored, ids=["c"])
    assert state.read_ids == frozenset({"b", "c"})


def test_merge_all_moves_all_before_and_drops_covered_ids() -> None:
    stored = [(1, "a"), (2, "b"), (3, "c")]
    state = merge(ReadState(read_ids=frozenset({"b"})), stored=stored, mark_all=True)
    assert state == ReadState(read_ids=frozenset(), all_before=3)
    assert merge(state, stored=[*stored, (7, "d")], ids=["d"]) == ReadState(frozenset({"d"}), 3)


def test_merge_never_moves_all_before_back() -> None:
    state = ReadState(all_before=10)
    assert merge(state, stored=[(4, "a")], mark_all=True).all_before == 10
    assert merge(state, stored=[], mark_all=True).all_before == 10


def test_merge_drops_ids_no_longer_stored() -> None:
    state = ReadState(read_ids=frozenset({"old", "kept"}))
    assert merge(state, stored=[(8, "kept")]).read_ids == frozenset({"kept"})


def test_merge_caps_read_ids_keeping_newest() -> None:
    stored = [(seq, f"n{seq}") for seq in range(1, MAX_READ_IDS + 51)]
    state = merge(ReadState(), stored=stored, ids=[nid for _, nid in stored])
    assert len(state.read_ids) == MAX_READ_IDS
    assert f"n{MAX_READ_IDS + 50}" in state.read_ids
    assert "n1" not in state.read_ids
