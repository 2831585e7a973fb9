"""Prometheus metrics of one gateway process (prometheus-client, text format at ``/metrics``).

Each gateway has its own :class:`CollectorRegistry` so that several apps in one process (tests)
do not collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


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

    def relayed(self, kind: str, count: int) -> None:
        """Count ``count`` relayed frames of ``kind`` (one call per fan-out, not per socket)."""
        if count:
            self.frames_out.labels(kind).inc(count)

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format."""
        return generate_latest(self.registry)
