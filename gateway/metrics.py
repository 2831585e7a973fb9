"""Prometheus metrics of one gateway process (prometheus-client, text format at ``/metrics``).

Each gateway has its own :class:`CollectorRegistry` so that several apps in one process (tests)
do not collide.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)


class Metrics:
    """Connections, frames in/out by type, errors by code, NATS request latency (seconds)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.connections = Gauge(
            "natter_gateway_connections", "Open authenticated WebSocket connections.", registry=self.registry
        )
        self.frames_in = Counter(
            "natter_gateway_frames_in", "Client frames received, by type.", ["type"], registry=self.registry
        )
        self.frames_out = Counter(
            "natter_gateway_frames_out", "Frames sent to clients, by type.", ["type"], registry=self.registry
        )
        self.errors = Counter(
            "natter_gateway_errors", "Error frames sent, by code.", ["code"], registry=self.registry
        )
        self.closes = Counter(
            "natter_gateway_closes",
            "Sockets closed by the gateway, by close code.",
            ["code"],
            registry=self.registry,
        )
        self.nats_latency = Histogram(
            "natter_gateway_nats_request_seconds",
            "Latency of NATS requests to services, by subject.",
            ["subject"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.gap_fills = Counter(
            "natter_gateway_gap_fills", "Ordering gaps filled from storage.", registry=self.registry
        )
        self.delivery = Histogram(
            "natter_gateway_delivery_seconds",
            "From chat publishing a room event (after storing it) to this gateway handing it to its "
            "sockets' queues; one observation per fan-out.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self.send_queue = Gauge(
            "natter_gateway_send_queue_frames",
            "Frames waiting in the sockets' send queues, summed over this gateway's sockets.",
            registry=self.registry,
        )
        self.send_queue_max = Gauge(
            "natter_gateway_send_queue_frames_max",
            "The longest send queue of any socket of this gateway (a slow client shows here first).",
            registry=self.registry,
        )
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)

        self._out: dict[str, Any] = {}
        self._in: dict[str, Any] = {}
        self._errors: dict[str, Any] = {}

    def relayed(self, kind: str, count: int) -> None:
        """Count ``count`` relayed frames of ``kind`` (one call per fan-out, not per socket)."""
        if count:
            self.frame_out(kind, count)

    def frame_out(self, kind: str, count: int = 1) -> None:
        """Count frames sent, by type (label children cached: ``labels()`` costs a lock and a
        tuple per call)."""
        child = self._out.get(kind)
        if child is None:
            child = self._out[kind] = self.frames_out.labels(kind)
        child.inc(count)

    def frame_in(self, kind: str) -> None:
        """Count one client frame received, by type."""
        child = self._in.get(kind)
        if child is None:
            child = self._in[kind] = self.frames_in.labels(kind)
        child.inc()

    def error(self, code: str) -> None:
        """Count one error frame sent, by code."""
        child = self._errors.get(code)
        if child is None:
            child = self._errors[code] = self.errors.labels(code)
        child.inc()

    def delivered_after(self, stored_ms: str) -> None:
        """Observe the delivery latency of one fan-out from its ``Natter-Stored-Ms`` header
        (ignored when unreadable; clocks of different hosts make it approximate there)."""
        try:
            seconds = time.time() - int(stored_ms) / 1000
        except ValueError:
            return
        self.delivery.observe(max(0.0, seconds))

    def track_queues(self, queue_sizes: Callable[[], Iterable[int]]) -> None:
        """Compute the send-queue gauges from ``queue_sizes()`` at each scrape."""

        def total() -> float:
            return float(sum(queue_sizes()))

        def longest() -> float:
            return float(max(queue_sizes(), default=0))

        self.send_queue.set_function(total)
        self.send_queue_max.set_function(longest)

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format."""
        return generate_latest(self.registry)
