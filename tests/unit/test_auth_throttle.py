"""Pure logic of auth_service.throttle: key sanitising and window arithmetic."""

from __future__ import annotations

import re

import pytest

from auth_service.throttle import (
    FailureCount,
    ip_key,
    live_count,
    parse_count,
    retry_after_seconds,
    username_key,
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


def test_retry_after_rounds_up_and_is_at_least_one() -> None:
    stored = FailureCount(count=5, last_ms=0)
    assert retry_after_seconds(stored, now_ms=0, window_seconds=900) == 900
    assert retry_after_seconds(stored, now_ms=100, window_seconds=900) == 900
    assert retry_after_seconds(stored, now_ms=1_000, window_seconds=900) == 899
    assert retry_after_seconds(stored, now_ms=899_999, window_seconds=900) == 1
    assert retry_after_seconds(stored, now_ms=2_000_000, window_seconds=900) == 1
