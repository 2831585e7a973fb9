"""Python's cyclic garbage collector in a long-running natter process (Python docs, "gc").

A full (generation 2) collection walks every object the collector tracks, and the process does
nothing else meanwhile: every socket and every request of that process waits. A natter process
holds about 107,000 tracked objects before it serves anything (the modules of FastAPI, pydantic,
nats-py, uvicorn and its own), and a full collection of those alone took 50-80 ms on the
benchmark machine: a stall that lands in every percentile above the 99th. Nearly all of them live
as long as the process, which is what ``gc.freeze()`` is for ("move all objects tracked by the
garbage collector into a permanent generation ... ignored in all the future collections"): each
process freezes what exists once it is set up (:func:`freeze_startup_objects`), and later
collections walk only what was allocated since.

:class:`GcPauses` times every collection into the histogram ``natter_gc_pause_seconds``
(label ``generation``), so an operator sees the pauses a process takes rather than guessing.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any, Final

from prometheus_client import CollectorRegistry, Histogram

logger = logging.getLogger(__name__)

#: Pause buckets, seconds: young collections take microseconds, full ones milliseconds.
PAUSE_BUCKETS: Final = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


def freeze_startup_objects() -> int:
    """Collect once, then move every tracked object into the permanent generation; returns how
    many were frozen. Call it once the process is set up (modules imported, connections made),
    before it serves: objects created later are collected as usual."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.info("gc: %d objects of startup frozen (not walked by later collections)", frozen)
    return frozen


class GcPauses:
    """Times every collection of this process into ``natter_gc_pause_seconds{generation}`` of
    ``registry`` (one callback in ``gc.callbacks``; :meth:`close` removes it)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.histogram = Histogram(
            "natter_gc_pause_seconds",
            "Time the process stood still in one cyclic garbage collection, by generation.",
            ["generation"],
            buckets=PAUSE_BUCKETS,
            registry=registry,
        )
        self._children = [self.histogram.labels(str(generation)) for generation in range(3)]
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            self._children[int(info.get("generation", 2))].observe(time.perf_counter() - self._started)
            self._started = 0.0

    def close(self) -> None:
        """Stop timing (tests build several apps in one process)."""
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
