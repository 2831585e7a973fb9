"""Per-socket token bucket (PROTOCOL.md section 1: 20 frames/s sustained, burst 40) and the
rule for "persistent abuse": only frames that arrive before the time the client was told to come
back (``retry_after``) count against it, so a client that obeys ``retry_after`` is never closed.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque


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


class KeyedBuckets:
    """One :class:`TokenBucket` per key (a user id): ``rate`` per second, ``burst`` stored, for
    at most ``capacity`` keys (the least recently used dropped first; a dropped key starts again
    with a full bucket, so the bound costs at most one burst per eviction).

    ``take(key)`` returns 0.0 when a token was taken, else the seconds until one is available.
    """

    def __init__(self, rate: float, burst: int, *, capacity: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.capacity = capacity
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str, now: float | None = None) -> float:
        bucket = self._buckets.pop(key, None) or TokenBucket(self.rate, self.burst)
        self._buckets[key] = bucket
        if len(self._buckets) > self.capacity:
            self._buckets.popitem(last=False)
        return bucket.take(now)


def retry_after_seconds(wait: float) -> float:
    """``wait`` seconds rounded *up* to the next hundredth (at least 0.01), so that a client
    coming back after exactly the announced time finds a token (PROTOCOL.md section 1)."""
    return max(1, math.ceil(round(wait * 100, 6))) / 100


class AbuseCounter:
    """Counts early frames in a sliding window; :meth:`reject` is True once ``limit`` is reached.

    A rejected frame is *early* when it arrives before the latest time this socket was told to
    retry at (``retry_at``, server clock): only those count. Frames that come back on time are
    rejected again at most (another client of the same socket may have used the token), never
    counted as abuse.
    """

    __slots__ = ("hits", "limit", "retry_at", "window")

    def __init__(self, limit: int, window: float = 10.0) -> None:
        self.limit = limit
        self.window = window
        self.retry_at = 0.0
        self.hits: deque[float] | None = None  # created on the first early frame

    def reject(self, wait: float, now: float | None = None) -> tuple[bool, float]:
        """Record a rate-limited frame that needs ``wait`` more seconds for a token.

        Returns:
            ``(abusive, retry_after)``: whether the socket has now sent ``limit`` early frames
            within ``window`` seconds, and the seconds to announce (rounded up).
        """
        now = time.monotonic() if now is None else now
        early = now < self.retry_at
        retry_after = retry_after_seconds(wait)
        self.retry_at = now + retry_after
        if not early:
            return False, retry_after
        return self.hit(now), retry_after

    def hit(self, now: float | None = None) -> bool:
        """Count one early frame; True once ``limit`` of them fell within ``window`` seconds."""
        now = time.monotonic() if now is None else now
        hits = self.hits
        if hits is None:
            hits = self.hits = deque()
        hits.append(now)
        while hits and now - hits[0] > self.window:
            hits.popleft()
        return len(hits) >= self.limit
