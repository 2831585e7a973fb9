"""Pure logic of auth_service.throttle: key sanitising and window arithmetic."""

from __future__ import annotations

import re

import pytest

from auth_service.throttle import (
    MAX_DELAY_SECONDS,
    Bucket,
    FailureCount,
    delay_seconds,
    ip_key,
    known_key,
    live_count,
    pair_key,
    parse_count,
    register_key,
    take_token,
    username_key,
    wait_seconds,
)

KV_KEY_RE = re.compile(r"^[-/_=.a-zA-Z0-9]+$")  # what NATS KV accepts


@pytest.mark.parametrize(
    ("client_ip", "key"),
    [
        ("10.0.0.1", "ip.10_0_0_1"),
        ("::1", "ip.__1"),
        ("2001:db8::a:b", "ip.2001_db8__a_b"),
        ("fe80::1%eth0", "ip.fe80__1_eth0"),
        ("a b*c>d", "ip.a_b_c_d"),
        ("host-name_1", "ip.host-name_1"),
    ],
)
def test_ip_key_sanitises(client_ip: str, key: str) -> None:
    assert ip_key(client_ip) == key
    assert KV_KEY_RE.fullmatch(key)
    assert key.count(".") == 1  # one token after the prefix, never a wider subject


def test_username_key_is_lowercase_and_safe() -> None:
    assert username_key("Alice_01") == "u.alice_01"
    assert username_key("a.b*c d") == "u.a_b_c_d"
    assert username_key("ÉLAN") == "u._lan"


def test_parse_count_tolerates_garbage() -> None:
    assert parse_count({"count": 3, "last_ms": 10}) == FailureCount(3, 10)
    assert parse_count({"count": "3", "last_ms": 10}) == FailureCount(0, 0)
    assert parse_count({}) == FailureCount(0, 0)


def test_live_count_expires_after_the_window() -> None:
    stored = FailureCount(count=5, last_ms=1_000_000)
    assert live_count(stored, now_ms=1_000_000, window_seconds=900) == 5
    assert live_count(stored, now_ms=1_000_000 + 899_999, window_seconds=900) == 5
    assert live_count(stored, now_ms=1_000_000 + 900_000, window_seconds=900) == 0


@pytest.mark.parametrize(
    ("count", "free", "delay"),
    [
        (0, 5, 0),
        (4, 5, 0),
        (5, 5, 1),
        (6, 5, 2),
        (9, 5, 16),
        (10, 5, 32),
        (11, 5, 60),
        (500, 5, 60),
        (10, 10, 1),
    ],
)
def test_delay_grows_progressively_and_never_passes_a_minute(count: int, free: int, delay: int) -> None:
    assert delay_seconds(count, free=free) == delay
    assert delay_seconds(count, free=free) <= MAX_DELAY_SECONDS


def test_wait_counts_from_the_last_failure_and_rounds_up() -> None:
    stored = FailureCount(count=6, last_ms=1_000_000)  # 6 live failures, 5 free: 2 s delay
    assert wait_seconds(stored, now_ms=1_000_000, window_seconds=900, free=5) == 2
    assert wait_seconds(stored, now_ms=1_000_001, window_seconds=900, free=5) == 2
    assert wait_seconds(stored, now_ms=1_001_500, window_seconds=900, free=5) == 1
    assert wait_seconds(stored, now_ms=1_002_000, window_seconds=900, free=5) == 0
    assert wait_seconds(FailureCount(1000, 0), now_ms=59_999, window_seconds=900, free=5) == 1
    assert wait_seconds(FailureCount(1000, 0), now_ms=60_000, window_seconds=900, free=5) == 0


def test_registration_bucket_allows_a_burst_then_a_rate() -> None:
    state = None
    for _ in range(3):
        state, wait = take_token(state, now_ms=0, burst=3, per_second=2.0)
        assert wait == 0.0
    state, wait = take_token(state, now_ms=0, burst=3, per_second=2.0)
    assert wait == pytest.approx(0.5)
    state, wait = take_token(state, now_ms=500, burst=3, per_second=2.0)
    assert wait == 0.0
    state, wait = take_token(state, now_ms=10_000_000, burst=3, per_second=2.0)
    assert wait == 0.0 and state.tokens == pytest.approx(2.0)  # refilled to the burst, one taken


def test_pair_and_known_keys_are_single_safe_tokens() -> None:
    assert pair_key("Al.ice", "10.0.0.1") == "ua.al_ice.10_0_0_1"
    assert known_key("Alice", "::1") == "alice.__1"
    assert register_key("a.b") == "reg.a_b"


def test_a_request_that_started_earlier_does_not_refill_an_interval_twice() -> None:
    # Concurrent registrations stamp the bucket with their own start times, out of order.
    empty = Bucket(0.0, 10_000)
    late_stamp, wait = take_token(empty, now_ms=9_000, burst=100, per_second=2.0)
    assert wait > 0 and late_stamp.stamp_ms == 10_000  # the stamp never moves back
    # Half a second after the latest stamp: one token, not the 2.5 s since 9_000 again.
    _, wait = take_token(late_stamp, now_ms=10_500, burst=100, per_second=2.0)
    assert wait == 0.0
    taken, _ = take_token(late_stamp, now_ms=10_500, burst=100, per_second=2.0)
    _, wait = take_token(taken, now_ms=10_500, burst=100, per_second=2.0)
    assert wait > 0
