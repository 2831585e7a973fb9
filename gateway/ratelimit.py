"""Per-socket token bucket (PROTOCOL.md section 1: 20 frames/s sustained, burst 40)."""

from __future__ import annotations

import time
from collections import deque


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` stored.

    ``take()`` returns 0.0 when a token was taken, else the seconds until one is available.
    """

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class AbuseCounter:
    """Counts rejected frames in a sliding window; ``hit()`` is True once ``limit`` is reached."""

    __slots__ = ("hits", "limit", "window")

    def __init__(self, limit: int, window: float = 10.0) -> None:
        self.limit = limit
        self.window = window
        self.hits: deque[float] | None = None  # created on the first rejection

    def hit(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        hits = self.hits
        if hits is None:
            hits = self.hits = deque()
        hits.append(now)
        while hits and now - hits[0] > self.window:
            hits.popleft()
        return len(hits) >= self.limit
