"""Messages through nats-server over one measured window, read from its monitoring endpoint.

``GET /varz`` (NATS docs, "Monitoring": General Information) carries ``in_msgs`` and
``out_msgs``: every message a client published to the server and every copy the server sent to a
subscriber, JetStream API requests, PubAcks and KV operations included. Their growth per stored
message (or per connect) is the count of NATS operations natter spends on it, the number issue 12
asks to "count and cut", independent of how fast this machine happens to be.
"""

from __future__ import annotations

from typing import Any

import httpx


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
