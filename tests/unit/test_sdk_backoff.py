"""natter.sdk.backoff: full-jitter exponential backoff (base 0.2 s, cap 10 s)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natter.sdk.backoff import Backoff, full_jitter


def test_ceilings_double_from_base_up_to_cap() -> None:
    backoff = Backoff(0.2, 10.0, rng=lambda: 1.0)
    delays = [backoff.next_delay() for _ in range(9)]
    assert delays == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0, 10.0])


def test_full_jitter_scales_the_ceiling_and_can_be_zero() -> None:
    assert full_jitter(3, base=0.2, cap=10.0, rng=lambda: 0.5) == pytest.approx(0.8)
    assert full_jitter(3, base=0.2, cap=10.0, rng=lambda: 0.0) == 0.0
    assert full_jitter(-4, base=0.2, cap=10.0, rng=lambda: 1.0) == pytest.approx(0.2)


def test_reset_starts_over() -> None:
    backoff = Backoff(0.2, 10.0, rng=lambda: 1.0)
    for _ in range(5):
        backoff.next_delay()
    assert backoff.ceiling() == pytest.approx(6.4)
    backoff.reset()
    assert backoff.attempt == 0 and backoff.next_delay() == pytest.approx(0.2)


def test_huge_attempt_counts_do_not_overflow() -> None:
    assert full_jitter(10_000, base=0.2, cap=10.0, rng=lambda: 1.0) == 10.0


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        Backoff(0, 10)
    with pytest.raises(ValueError):
        Backoff(2, 1)


def test_delays_are_spread_not_synchronised() -> None:
    rng = random.Random(7)
    delays = [Backoff(0.2, 10.0, rng=rng.random).next_delay() for _ in range(200)]
    assert all(0 <= d <= 0.2 for d in delays)
    assert len({round(d, 4) for d in delays}) > 150
    assert min(delays) < 0.02 and max(delays) > 0.18


@given(st.integers(min_value=0, max_value=200), st.floats(min_value=0, max_value=0.999999))
def test_delay_is_within_zero_and_capped_ceiling(attempt: int, draw: float) -> None:
    delay = full_jitter(attempt, base=0.2, cap=10.0, rng=lambda: draw)
    assert 0 <= delay <= min(10.0, 0.2 * 2 ** min(attempt, 32))
