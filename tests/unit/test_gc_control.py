"""shared.gc_control: collections are timed per generation; startup objects can be frozen."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry

from shared.gc_control import GcPauses, freeze_startup_objects


def test_every_collection_is_timed_by_generation_until_closed() -> None:
    registry = CollectorRegistry()
    pauses = GcPauses(registry)
    try:
        gc.collect(0)
        gc.collect(2)
        young = registry.get_sample_value("natter_gc_pause_seconds_count", {"generation": "0"})
        full = registry.get_sample_value("natter_gc_pause_seconds_count", {"generation": "2"})
        assert young is not None and young >= 1 and full is not None and full >= 1
        total = registry.get_sample_value("natter_gc_pause_seconds_sum", {"generation": "2"})
        assert total is not None and 0 < total < 5
    finally:
        pauses.close()
    before = registry.get_sample_value("natter_gc_pause_seconds_count", {"generation": "2"})
    gc.collect(2)
    assert registry.get_sample_value("natter_gc_pause_seconds_count", {"generation": "2"}) == before


def test_frozen_objects_are_left_out_of_later_collections() -> None:
    try:
        frozen = freeze_startup_objects()
        assert frozen == gc.get_freeze_count() > 1000  # this test process's modules at least
        survivor = [object() for _ in range(10)]
        assert gc.get_freeze_count() == frozen  # new objects are collected as usual
        assert survivor
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0
