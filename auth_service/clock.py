"""Wall-clock time in the units the auth records use."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the Unix epoch (``created_ms``, ``expires_ms``, ``before_ms``, ``iat_ms``)."""
    return time.time_ns() // 1_000_000
