"""Garbage-collection pauses of natter's processes over one measured window, read from each
process's ``/metrics`` (``natter_gc_pause_seconds``, :mod:`shared.gc_control`): so that a
phase's p99 can be set against the pauses that happened in it."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def read_gc_pauses(metrics_url: str, *, timeout: float = 2.0) -> dict[str, tuple[float, float]] | None:
    """``{generation: (collections, seconds)}`` from ``natter_gc_pause_seconds`` at
    ``metrics_url`` (a natter process's ``/metrics``, :mod:`shared.gc_control`); None when it
    cannot be read."""
    try:
        text = httpx.get(metrics_url, timeout=timeout).text
    except httpx.HTTPError:
        return None
    return parse_gc_pauses(text)


def parse_gc_pauses(text: str) -> dict[str, tuple[float, float]] | None:
    """``{generation: (collections, seconds)}`` of ``natter_gc_pause_seconds`` in Prometheus
    text ``text``; None when the series is not there."""
    counts: dict[str, float] = {}
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "natter_gc_pause_seconds":
            continue
        for sample in family.samples:
            generation = sample.labels.get("generation", "")
            if sample.name.endswith("_count"):
                counts[generation] = sample.value
            elif sample.name.endswith("_sum"):
                sums[generation] = sample.value
    return {g: (counts[g], sums.get(g, 0.0)) for g in counts} or None


class GcPauseMeter:
    """Garbage-collection pauses of each natter process over a window: ``{process: {generation:
    {"collections", "ms"}}}`` (processes whose metrics cannot be read are left out)."""

    def __init__(self, metrics_urls: dict[str, str]) -> None:
        self.metrics_urls = metrics_urls
        self._start: dict[str, dict[str, tuple[float, float]]] = {}

    def start(self) -> None:
        self._start = {}
        for label, url in self.metrics_urls.items():
            found = read_gc_pauses(url)
            if found is not None:
                self._start[label] = found

    def stop(self) -> dict[str, dict[str, dict[str, float]]] | None:
        """The pauses since :meth:`start`, or None when no process could be read."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for label, before in self._start.items():
            after = read_gc_pauses(self.metrics_urls[label])
            if after is None:
                continue
            out[label] = {
                generation: {
                    "collections": int(count - before.get(generation, (0.0, 0.0))[0]),
                    "ms": round(1000 * (seconds - before.get(generation, (0.0, 0.0))[1]), 2),
                }
                for generation, (count, seconds) in sorted(after.items())
            }
        return out or None
