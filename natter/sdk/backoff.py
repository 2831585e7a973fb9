"""Jittered exponential backoff for reconnects and retries ("full jitter").

The delay before attempt ``n`` (0-based) is uniform in ``[0, min(cap, base * 2**n)]`` (AWS
Architecture Blog, "Exponential Backoff And Jitter", 2015: full jitter spreads reconnecting
clients best). The SDK uses ``base`` 0.2 s and ``cap`` 10 s.
"""

from __future__ import annotations

import random
from collections.abc import Callable

#: Exponents above this would only overflow; the cap is reached long before.
_MAX_EXPONENT = 32


def full_jitter(attempt: int, *, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): ``rng() * min(cap, base*2**n)``.

    ``rng`` returns a float in ``[0, 1)``; negative ``attempt`` counts as 0.
    """
    ceiling = min(cap, base * 2.0 ** min(max(attempt, 0), _MAX_EXPONENT))
    return rng() * ceiling


class Backoff:
    """A counter of failed attempts that turns into full-jitter delays.

    Args:
        base: seconds, the ceiling of the first delay.
        cap: seconds, the largest ceiling.
        rng: a ``[0, 1)`` random source (injectable for tests).
    """

    def __init__(
        self, base: float = 0.2, cap: float = 10.0, rng: Callable[[], float] = random.random
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError("need 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.rng = rng
        self.attempt = 0

    def ceiling(self) -> float:
        """The upper bound of the next delay, in seconds."""
        return min(self.cap, self.base * 2.0 ** min(self.attempt, _MAX_EXPONENT))

    def next_delay(self) -> float:
        """The delay before the next attempt (seconds); counts one more attempt."""
        delay = full_jitter(self.attempt, base=self.base, cap=self.cap, rng=self.rng)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Start over after a success: the next delay is at most ``base`` again."""
        self.attempt = 0
