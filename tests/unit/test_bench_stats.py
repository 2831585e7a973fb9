"""natter.bench.stats and natter.bench.procstat: pure accounting and /proc parsing."""

from __future__ import annotations

import math
import os

import pytest

from natter.bench.procstat import (
    CpuMeter,
    parse_cpu_ticks,
    parse_machine_ticks,
    parse_vmrss_kib,
    read_cpu_ticks,
    read_rss_kib,
)
from natter.bench.stats import (
    cpu_percent,
    dig,
    expected_deliveries,
    key_sender,
    latency_summary,
    lost_deliveries,
    merge_counts,
    message_key,
    percentile,
    ratio,
)


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7], 1) == 7
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_latency_summary_is_ordered_and_in_milliseconds() -> None:
    ns = [5_000_000, 1_000_000, 2_000_000, 100_000_000, 3_000_000]
    summary = latency_summary(ns)
    assert summary["count"] == 5
    assert summary["max"] == 100.0
    assert summary["p50"] == 3.0
    assert summary["p50"] <= summary["p90"] <= summary["p99"] <= summary["max"]  # type: ignore[operator]
    assert summary["mean"] == pytest.approx(22.2)


def test_latency_summary_of_nothing() -> None:
    assert latency_summary([]) == {
        "count": 0,
        "p50": None,
        "p90": None,
        "p99": None,
        "max": None,
        "mean": None,
    }


def test_message_key_round_trip_and_bounds() -> None:
    key = message_key(37, 12345)
    assert key_sender(key) == 37
    assert key & ((1 << 24) - 1) == 12345
    assert message_key(0, 0) != message_key(1, 0) != message_key(0, 1)
    with pytest.raises(ValueError):
        message_key(1, 1 << 24)


def test_loss_accounting_per_room() -> None:
    room_of_sender = {0: "a", 1: "b"}
    members = {"a": 3, "b": 2}
    acked = [message_key(0, 0), message_key(0, 1), message_key(1, 0)]
    assert expected_deliveries(acked, room_of_sender, members) == 3 + 3 + 2
    received = {message_key(0, 0): 3, message_key(0, 1): 1, message_key(1, 0): 2, message_key(1, 9): 2}
    # message (0,1) reached 1 of 3 members; the unacked (1,9) does not count.
    assert lost_deliveries(acked, received, room_of_sender, members) == 2
    # more receivers than members (never negative per message)
    assert lost_deliveries([message_key(1, 0)], {message_key(1, 0): 5}, room_of_sender, members) == 0


def test_merge_counts_adds_per_key() -> None:
    assert merge_counts([{1: 2, 3: 1}, {1: 1}, {}]) == {1: 3, 3: 1}


def test_cpu_percent_and_ratio() -> None:
    assert cpu_percent(150, 100, 1.0) == 150.0
    assert cpu_percent(10, 100, 0) == 0.0
    assert ratio(2.0, 4.0) == 0.5
    assert ratio(1.0, 0) is None
    assert ratio(None, 1.0) is None
    assert ratio(math.nan, 1.0) is None


def test_dig() -> None:
    data = {"a": {"b": {"c": 3}}}
    assert dig(data, "a.b.c") == 3
    assert dig(data, "a.x.c") is None
    assert dig({"a": 1}, "a.b") is None


def test_parse_cpu_ticks_with_spaces_in_the_command_name() -> None:
    fields = ["S"] + ["0"] * 10 + ["120", "30"] + ["0"] * 30
    text = "4242 (weird ) name) " + " ".join(fields)
    assert parse_cpu_ticks(text) == 150
    with pytest.raises(ValueError):
        parse_cpu_ticks("garbage")


def test_parse_vmrss() -> None:
    assert parse_vmrss_kib("Name:\tpython\nVmRSS:\t   51234 kB\nThreads: 1\n") == 51234
    assert parse_vmrss_kib("Name:\tzombie\n") is None


def test_parse_machine_ticks() -> None:
    busy, total = parse_machine_ticks("cpu  100 5 50 800 40 1 2 3 0 0\ncpu0 1 2 3 4\n")
    assert total == 100 + 5 + 50 + 800 + 40 + 1 + 2 + 3
    assert busy == total - 800 - 40
    with pytest.raises(ValueError):
        parse_machine_ticks("intr 1 2 3\n")


def test_reading_this_process() -> None:
    assert (read_cpu_ticks(os.getpid()) or 0) >= 0
    assert (read_rss_kib(os.getpid()) or 0) > 1000
    meter = CpuMeter({"me": os.getpid(), "gone": 2**22 + 12345})
    meter.start()
    sum(i * i for i in range(200_000))
    usage = meter.stop()
    assert set(usage["processes"]) == {"me"}  # type: ignore[arg-type]
    assert usage["total_pct"] >= 0  # type: ignore[operator]


def test_nats_traffic_per_unit_and_without_a_server() -> None:
    from natter.bench.natstraffic import NatsTrafficMeter, per_unit

    assert per_unit({"in_msgs": 835, "out_msgs": 1045}, 100) == {"in": 8.35, "out": 10.45}
    assert per_unit(None, 100) is None and per_unit({"in_msgs": 1, "out_msgs": 1}, 0) is None
    references = NatsTrafficMeter("")  # the in-process references have no NATS
    references.start()
    assert references.stop() is None
    unreachable = NatsTrafficMeter("http://127.0.0.1:9")  # discard port: nothing listens
    unreachable.start()
    assert unreachable.stop() is None


def test_gc_pauses_are_read_from_prometheus_text() -> None:
    from natter.bench.gcpauses import GcPauseMeter, parse_gc_pauses

    text = (
        "# HELP natter_gc_pause_seconds Pause.\n# TYPE natter_gc_pause_seconds histogram\n"
        'natter_gc_pause_seconds_bucket{generation="0",le="+Inf"} 12.0\n'
        'natter_gc_pause_seconds_count{generation="0"} 12.0\n'
        'natter_gc_pause_seconds_sum{generation="0"} 0.0024\n'
        'natter_gc_pause_seconds_count{generation="2"} 1.0\n'
        'natter_gc_pause_seconds_sum{generation="2"} 0.031\n'
    )
    assert parse_gc_pauses(text) == {"0": (12.0, 0.0024), "2": (1.0, 0.031)}
    assert parse_gc_pauses("# nothing here\n") is None
    nobody = GcPauseMeter({"gateway": "http://127.0.0.1:9/metrics"})  # nothing listens
    nobody.start()
    assert nobody.stop() is None
