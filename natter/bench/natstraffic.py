"""What natter's processes did over one measured window, read from their own endpoints: messages
through nats-server (its monitoring endpoint) and garbage-collection pauses (each process's
``/metrics``).

``GET /varz`` (NATS docs, "Monitoring": General Information) carries ``in_msgs`` and
``out_msgs``: every message a client published to the server and every copy the server sent to a
subscriber, JetStream API requests, PubAcks and KV operations included. Their growth per stored
message (or per connect) is the count of NATS operations natter spends on it, the number issue 12
asks to "count and cut", independent of how fast this machine happens to be.
"""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families


def read_varz(monitor_url: str, *, timeout: float = 2.0) -> tuple[int, int] | None:
    """``(in_msgs, out_msgs)`` of the server at ``monitor_url`` (``http://host:port``); None when
    it cannot be read (no monitoring port, server gone): the window then reports no traffic."""
    try:
        varz = httpx.get(f"{monitor_url}/varz", timeout=timeout).json()
        return int(varz["in_msgs"]), int(varz["out_msgs"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


class NatsTrafficMeter:
    """``in_msgs``/``out_msgs`` growth between :meth:`start` and :meth:`stop`; a meter without
    a URL (the reference servers have no NATS) reports None."""

    def __init__(self, monitor_url: str) -> None:
        self.monitor_url = monitor_url
        self._start: tuple[int, int] | None = None

    def start(self) -> None:
        self._start = read_varz(self.monitor_url) if self.monitor_url else None

    def stop(self) -> dict[str, int] | None:
        """``{"in_msgs", "out_msgs"}`` of the window, or None."""
        if self._start is None:
            return None
        end = read_varz(self.monitor_url)
        if end is None:
            return None
        return {"in_msgs": end[0] - self._start[0], "out_msgs": end[1] - self._start[1]}


def per_unit(traffic: dict[str, int] | None, units: int) -> dict[str, Any] | None:
    """``{"in", "out"}`` messages per unit (stored message, connect), 2 decimals; None without
    traffic or units."""
    if traffic is None or units <= 0:
        return None
    return {"in": round(traffic["in_msgs"] / units, 2), "out": round(traffic["out_msgs"] / units, 2)}


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
