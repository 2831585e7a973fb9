"""Room records and chat settings (pure logic)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from chat_service.config import Settings
from chat_service.floors import floor_interval
from chat_service.rooms import Room


def test_access_rules() -> None:
    public = Room(name="general", private=False, owner=None, members=(), created_at="t")
    private = Room(name="secret", private=True, owner="o", members=("o", "m"), created_at="t")
    assert public.may_join("anyone")
    assert private.may_join("o") and private.may_join("m")
    assert not private.may_join("stranger")
    # the owner keeps access even if the member list lost them
    assert Room(name="x", private=True, owner="o", members=(), created_at="t").may_join("o")


def test_round_trip_and_reply_shape() -> None:
    room = Room(
        name="secret", private=True, owner="o", members=("o", "m"), created_at="2026-01-01T00:00:00.000Z"
    )
    stored = json.loads(room.encode())
    assert stored == {
        "name": "secret",
        "private": True,
        "owner": "o",
        "members": ["o", "m"],
        "created_at": "2026-01-01T00:00:00.000Z",
        "seq_floor": 0,
    }
    assert Room.decode(room.encode(), revision=7) == Room(**{**stored, "members": ("o", "m"), "revision": 7})
    assert room.as_reply() == {"name": "secret", "private": True, "owner": "o", "members": ["o", "m"]}


def test_decode_is_tolerant() -> None:
    room = Room.decode(b'{"private":true,"members":["a",3],"seq_floor":true}', revision=1, name="fallback")
    assert room.name == "fallback" and room.private and room.owner is None and room.members == ("a",)
    assert room.seq_floor == 0
    assert Room.decode(b'{"seq_floor":41}', revision=1, name="x").seq_floor == 41


@pytest.mark.parametrize(
    ("days", "seconds"), [(0.00001, 1.0), (4.0 / 86_400, 1.0), (1.0, 3600.0), (0.01, 216.0)]
)
def test_floor_interval(days: float, seconds: float) -> None:
    assert floor_interval(days) == pytest.approx(seconds)


def test_settings_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    assert (defaults.retention_days, defaults.janitor_interval_seconds) == (0.0, 10.0)
    assert (defaults.recovery_limit, defaults.join_latest) == (1000, 50)
    monkeypatch.setenv("NATTER_CHAT_RETENTION_DAYS", "7")
    monkeypatch.setenv("NATTER_CHAT_JANITOR_INTERVAL_SECONDS", "1")
    monkeypatch.setenv("NATS_URL", "nats://10.0.0.1:4222")
    configured = Settings()
    assert configured.retention_days == 7.0
    assert configured.janitor_interval_seconds == 1.0
    assert configured.nats_servers == ["nats://10.0.0.1:4222"]


@pytest.mark.parametrize("days", ["0.001", "-1"])
def test_retention_shorter_than_the_dedup_window_is_refused(
    monkeypatch: pytest.MonkeyPatch, days: str
) -> None:
    monkeypatch.setenv("NATTER_CHAT_RETENTION_DAYS", days)
    with pytest.raises(ValidationError):
        Settings()
