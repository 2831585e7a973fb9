"""natter.bench.spec, the Sink of natter.bench.clients and natter.bench.report (pure parts)."""

from __future__ import annotations

from itertools import pairwise

import pytest

from natter.bench.clients import Sink, marker, reaction_marker
from natter.bench.report import compare_document, compare_ratios, compare_table, target_label
from natter.bench.spec import (
    RunParams,
    Scenario,
    TargetKind,
    build_layout,
    is_reaction,
    room_name,
    saturation_rates,
    split_round_robin,
)
from natter.bench.stats import message_key
from shared.subjects import is_valid_room


def test_fanout_layout_has_one_sender_in_one_room() -> None:
    params = RunParams(scenario=Scenario.fanout, members=10, users=3)
    layout = build_layout(params, "ab12cd34")
    assert len(layout.sockets) == 10
    rooms = {s.room for s in layout.sockets}
    assert len(rooms) == 1 and is_valid_room(rooms.pop())
    assert [s.sender_id for s in layout.sockets if s.sender_id is not None] == [0]
    assert layout.sockets[0].sender_id == 0
    assert {s.user for s in layout.sockets} == {0, 1, 2}
    assert layout.members == {layout.sockets[0].room: 10}
    assert layout.room_of_sender == {0: layout.sockets[0].room}


def test_rooms_layout_every_member_sends_and_members_are_distinct_users() -> None:
    params = RunParams(scenario=Scenario.rooms, rooms=5, room_size=4, users=20)
    layout = build_layout(params, "ab12cd34")
    assert len(layout.sockets) == 20
    assert len(layout.members) == 5 and set(layout.members.values()) == {4}
    assert all(s.sender_id == s.index for s in layout.sockets)
    for room in layout.members:
        users = [s.user for s in layout.sockets if s.room == room]
        assert len(set(users)) == 4
    assert all(is_valid_room(room) for room in layout.members)


def test_idle_and_connect_layouts() -> None:
    idle = build_layout(RunParams(scenario=Scenario.idle, connections=7), "x")
    assert len(idle.sockets) == 7 and all(s.room is None and s.sender_id is None for s in idle.sockets)
    assert build_layout(RunParams(scenario=Scenario.connect), "x").sockets == []


def test_split_round_robin_keeps_every_socket_once_and_sender_first() -> None:
    layout = build_layout(RunParams(scenario=Scenario.fanout, members=9), "x")
    parts = split_round_robin(layout.sockets, 2)
    assert [len(p) for p in parts] == [5, 4]
    assert parts[0][0].sender_id == 0
    assert sorted(s.index for p in parts for s in p) == list(range(9))


def test_saturation_rates_grow_geometrically() -> None:
    assert saturation_rates(10, 1.5, 4) == [10.0, 15.0, 22.5, 33.8]


def test_default_rates_and_validation() -> None:
    assert RunParams(scenario=Scenario.fanout).send_rate == 20.0
    assert RunParams(scenario=Scenario.rooms).send_rate == 1.0
    assert RunParams(scenario=Scenario.fanout, rate=5).send_rate == 5.0
    RunParams(scenario=Scenario.fanout, members=1000).validate()
    for bad in (
        {"members": 0},
        {"duration": 0.1},
        {"duration": 10_000},
        {"rate": 0},
        {"workers": 0},
        {"step_factor": 1.0},
    ):
        with pytest.raises(ValueError):
            RunParams(scenario=Scenario.fanout, **bad).validate()  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RunParams(scenario=Scenario.rooms, rooms=10_000, room_size=4).validate()


def test_gateways_scale_natter_messaging_only() -> None:
    RunParams(scenario=Scenario.saturation, gateways=2, workers=2).validate()
    RunParams(scenario=Scenario.rooms, gateways=2, workers=4).validate()


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({"scenario": Scenario.idle, "gateways": 2}, id="idle-measures-one-gateway"),
        pytest.param({"scenario": Scenario.connect, "gateways": 2}, id="connect-measures-one-gateway"),
        pytest.param(
            {"scenario": Scenario.fanout, "gateways": 2, "target": TargetKind.fastapi},
            id="reference-is-one-process",
        ),
        pytest.param({"scenario": Scenario.fanout, "gateways": 2, "workers": 3}, id="uneven-workers"),
        pytest.param({"scenario": Scenario.fanout, "gateways": 9, "workers": 8}, id="too-many"),
        pytest.param({"scenario": Scenario.fanout, "gateways": 0}, id="none"),
    ],
)
def test_gateways_refused(values: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"--gateways|--workers"):
        RunParams(**values).validate()  # type: ignore[arg-type]


def test_room_name_is_bounded() -> None:
    assert room_name("abc", "r1") == "bench-abc-r1"
    with pytest.raises(ValueError):
        room_name("x" * 60, "r1")


def test_sink_counts_unique_duplicates_and_late() -> None:
    sink = Sink()
    sink.reset(3)
    frame = '{"type":"message","room":"r","data":{"seq":1,"message":"' + marker(1_000, 3, 2, 7) + '"}}'
    sink.delivery(0, frame, 5_000)
    sink.delivery(1, frame, 6_000)
    sink.delivery(0, frame, 7_000)  # same socket again: duplicate
    sink.delivery(0, marker(1_000, 2, 2, 8), 7_000)  # an earlier phase: late
    sink.delivery(0, '{"type":"message","data":{"message":"hello"}}', 7_000)  # not ours
    assert sink.unique == 2 and sink.duplicates == 1 and sink.late == 1 and sink.foreign == 1
    assert sink.per_msg == {message_key(2, 7): 2}
    assert list(sink.latencies) == [4_000, 5_000]
    sink.expected = 3
    sink.delivery(2, frame, 8_000)
    assert sink.done.is_set()


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.2, 0.25, 0.5])
def test_reaction_share_is_exact_and_never_the_first_send(fraction: float) -> None:
    picks = [is_reaction(n, fraction) for n in range(1000)]
    assert sum(picks) == int(1000 * fraction)
    assert not picks[0]
    if fraction:  # evenly spread: never two reactions in a row below one half
        assert all(not (a and b) for a, b in pairwise(picks))


def test_reaction_marker_fits_an_emoji_and_counts_like_a_message() -> None:
    longest = reaction_marker(10**10 - 1, 99, 99_999, 99_999)
    assert len(longest) <= 32 and not any(c.isspace() for c in longest)
    sink = Sink()
    base_us = 1_765_000_000_000_000
    sink.reset(4, base_us)
    emoji = reaction_marker(2_500, 4, 0, 9)
    frame = (
        '{"type":"reaction","room":"r","data":{"seq":12,"type":"reaction","user_id":"u",'
        f'"username":"a","timestamp":"t","target":11,"emoji":"{emoji}","op":"add"}}}}'
    ).encode()
    sent_ns = (base_us + 2_500) * 1000
    sink.reaction(0, frame, sent_ns + 3_000)
    sink.reaction(0, frame, sent_ns + 4_000)  # same socket again: duplicate
    sink.reaction(1, b'{"type":"reaction","data":{"emoji":"+1"}}', sent_ns)  # not ours
    assert sink.unique == 1 and sink.duplicates == 1 and sink.foreign == 1
    assert sink.per_msg == {message_key(0, 9): 1}
    assert list(sink.latencies) == [3_000]


def test_reactions_are_natter_only_and_bounded() -> None:
    RunParams(scenario=Scenario.saturation, reactions=0.2).validate()
    with pytest.raises(ValueError, match="--reactions"):
        RunParams(scenario=Scenario.saturation, reactions=0.2, target=TargetKind.fastapi).validate()
    with pytest.raises(ValueError, match="--reactions"):
        RunParams(scenario=Scenario.saturation, reactions=0.6).validate()


def test_sink_close_codes() -> None:
    sink = Sink()
    sink.socket_closed(1013)
    sink.socket_closed(1013)
    sink.socket_closed(None)
    assert sink.closed == {"1013": 2, "none": 1}


def _result(target: str, deliveries: float, p99: float) -> dict[str, object]:
    return {
        "scenario": "fanout",
        "target": target,
        "summary": {"deliveries_per_s": deliveries, "latency_ms": {"p99": p99}},
    }


def test_compare_ratios_are_natter_over_reference() -> None:
    results = {"natter": _result("natter", 100, 20), "fastapi": _result("fastapi", 200, 10)}
    ratios = compare_ratios(results)  # type: ignore[arg-type]
    assert ratios["fastapi"]["deliveries/s"] == 0.5
    assert ratios["fastapi"]["latency p99 ms"] == 2.0
    assert ratios["fastapi"]["server CPU %"] is None
    document = compare_document(results, {"scenario": "fanout"})  # type: ignore[arg-type]
    assert document["schema"] == "natter-bench-compare/1" and document["ratios"] == ratios
    assert compare_ratios({"fastapi": _result("fastapi", 1, 1)}) == {}  # type: ignore[dict-item]


def test_a_rooms_compare_carries_the_jetstream_floor_and_natters_ratio_to_it() -> None:
    results = {"natter": _result("natter", 4000, 12.0), "fastapi": _result("fastapi", 4000, 3.0)}
    floor = {"rate": 1000.0, "streams": 4, "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 4.0, "max_ms": 9.0}
    document = compare_document(results, {"scenario": "rooms"}, floor)  # type: ignore[arg-type]
    assert document["floor"] == floor
    assert document["ratios"]["jetstream_floor"] == {"latency p99 ms": 3.0}
    assert document["ratios"]["fastapi"]["latency p99 ms"] == 4.0
    rows = compare_table(document).row_count
    assert rows == compare_table(compare_document(results, {"scenario": "rooms"})).row_count + 2  # type: ignore[arg-type]


def test_target_kinds() -> None:
    assert {t.value for t in TargetKind} == {"natter", "fastapi", "socketio"}


def test_target_label_names_a_scaled_out_natter() -> None:
    assert target_label({"target": "natter", "params": {"gateways": 2}}) == "natter (2 gateways)"
    assert target_label({"target": "natter", "params": {"gateways": 1}}) == "natter"
    assert target_label({"target": "fastapi", "params": {}}) == "fastapi"
