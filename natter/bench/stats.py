"""Numbers from raw observations (pure): latency percentiles, delivery accounting, CPU, ratios.

Latency is send-to-delivery: the sender writes ``time.time_ns()`` into the message text just
before sending it, the receiving socket subtracts it from ``time.time_ns()`` when the frame is
handed to it (the same system clock in every process of this machine).

A delivery is *lost* when an acked message did not reach a socket that was a member of its
room within the grace period after the send phase; *duplicated* when one socket got the same
message twice. Messages are keyed by :func:`message_key` (sender id, per-sender counter).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

K = TypeVar("K")

#: Bits of the per-sender counter inside a message key.
COUNTER_BITS = 24


def message_key(sender_id: int, counter: int) -> int:
    """One int per message: ``sender_id`` in the high bits, ``counter`` (< 2**24) in the low."""
    if not 0 <= counter < 1 << COUNTER_BITS:
        raise ValueError(counter)
    return (sender_id << COUNTER_BITS) | counter


def key_sender(key: int) -> int:
    """The sender id of a :func:`message_key`."""
    return key >> COUNTER_BITS


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (``q`` in 0..100); NaN when empty."""
    if not sorted_values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(q)
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def latency_summary(values_ns: Iterable[int]) -> dict[str, float | int | None]:
    """``{"count","p50","p90","p99","max","mean"}`` in milliseconds (None when there is none).

    Nearest-rank percentiles, so ``p50 <= p90 <= p99 <= max`` always holds.
    """
    values = sorted(values_ns)
    if not values:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    ms = 1e6
    return {
        "count": len(values),
        "p50": round(percentile(values, 50) / ms, 3),
        "p90": round(percentile(values, 90) / ms, 3),
        "p99": round(percentile(values, 99) / ms, 3),
        "max": round(values[-1] / ms, 3),
        "mean": round(sum(values) / len(values) / ms, 3),
    }


def expected_deliveries(
    acked: Iterable[int], room_of_sender: Mapping[int, str], members: Mapping[str, int]
) -> int:
    """Deliveries owed for the acked message keys: each goes to every member of its room."""
    return sum(members.get(room_of_sender.get(key_sender(key), ""), 0) for key in acked)


def lost_deliveries(
    acked: Iterable[int],
    received: Mapping[int, int],
    room_of_sender: Mapping[int, str],
    members: Mapping[str, int],
) -> int:
    """Sum over acked messages of (members of its room - sockets that received it), at least 0
    per message. ``received`` maps message key -> distinct sockets that got it."""
    lost = 0
    for key in acked:
        owed = members.get(room_of_sender.get(key_sender(key), ""), 0)
        lost += max(0, owed - received.get(key, 0))
    return lost


def merge_counts(parts: Iterable[Mapping[K, int]]) -> dict[K, int]:
    """Add up per-key counts from several workers."""
    total: dict[K, int] = {}
    for part in parts:
        for key, count in part.items():
            total[key] = total.get(key, 0) + count
    return total


def cpu_percent(ticks: int, clock_ticks_per_second: int, wall_seconds: float) -> float:
    """CPU use in percent of one core (a process using two cores fully shows 200)."""
    if wall_seconds <= 0:
        return 0.0
    return round(100.0 * ticks / clock_ticks_per_second / wall_seconds, 1)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator`` rounded to 3 digits; None when either is missing or 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    if isinstance(numerator, float) and math.isnan(numerator):
        return None
    return round(numerator / denominator, 3)


def dig(data: Mapping[str, Any], path: str) -> Any:
    """``dig(d, "a.b.c")`` = ``d["a"]["b"]["c"]``, or None when a part is missing."""
    current: Any = data
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return None
        current = current[part]
    return current
