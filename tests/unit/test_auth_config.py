"""auth_service.config: defaults, the NATTER_AUTH_ prefix, and the common unprefixed aliases."""

from __future__ import annotations

import pytest

from auth_service.config import Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NATS_URL", "NATTER_NATS_URL", "NATTER_AUTH_ACCESS_TTL_SECONDS", "NATTER_STREAM_REPLICAS"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.access_ttl_seconds == 900
    assert (settings.issuer, settings.audience) == ("natter", "natter")
    assert settings.refresh_ttl_days == 30
    assert settings.hash_concurrency == 2
    assert (settings.login_max_failures, settings.login_failure_window_seconds) == (5, 900)
    assert settings.nats_url == "nats://127.0.0.1:4222"


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATTER_AUTH_ACCESS_TTL_SECONDS", "60")
    monkeypatch.setenv("NATTER_AUTH_LOGIN_MAX_FAILURES", "3")
    monkeypatch.setenv("ACCESS_TTL_SECONDS", "1")  # unprefixed service fields are not read
    monkeypatch.setenv("NATS_URL", "nats://a:1,nats://b:2")
    monkeypatch.setenv("NATTER_STREAM_REPLICAS", "3")
    monkeypatch.setenv("NATTER_LOG_LEVEL", "DEBUG")
    settings = Settings()
    assert settings.access_ttl_seconds == 60
    assert settings.login_max_failures == 3
    assert settings.nats_servers == ["nats://a:1", "nats://b:2"]
    assert settings.stream_replicas == 3
    assert settings.log_level == "DEBUG"


def test_refresh_ttl_cannot_outlive_the_buckets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATTER_AUTH_REFRESH_TTL_DAYS", "31")
    with pytest.raises(ValueError):
        Settings()
