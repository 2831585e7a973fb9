"""Room records and chat settings (pure logic)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from pydantic import ValidationError

from chat_service.config import Settings
from chat_service.floors import floor_interval
from chat_service.moderation import authorise, may_delete
from chat_service.rooms import Room, dm_name, is_dm_name
from shared.errors import ProtocolError


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
        "dm": {},
        "moderators": [],
        "bans": {},
        "mutes": {},
    }
    assert Room.decode(room.encode(), revision=7) == replace(room, revision=7)
    assert room.as_reply() == {
        "name": "secret",
        "private": True,
        "owner": "o",
        "members": ["o", "m"],
        "dm": False,
        "moderators": [],
    }


def test_roles_bans_and_mutes() -> None:
    room = Room(
        name="r",
        private=True,
        owner="o",
        members=("o", "m", "b"),
        created_at="t",
        moderators=("m",),
        bans=(("b", 0), ("old", 1_000)),
        mutes=(("m", 5_000),),
    )
    assert [room.role_of(u) for u in ("o", "m", "x")] == ["owner", "moderator", "member"]
    assert room.is_banned("b", now_ms=10**13) and not room.may_join("b", now_ms=10**13)
    assert not room.is_banned("old", now_ms=2_000)  # a timed ban ends by itself
    assert room.is_muted("m", now_ms=4_999) and not room.is_muted("m", now_ms=5_000)
    assert Room.decode(room.encode(), revision=1) == replace(room, revision=1)


def test_direct_message_rooms() -> None:
    assert dm_name("a", "b") == dm_name("b", "a") and is_dm_name(dm_name("a", "b"))
    room = Room(
        name=dm_name("a", "b"),
        private=True,
        owner=None,
        members=("a", "b"),
        created_at="t",
        dm=(("a", "ann"), ("b", "bob")),
    )
    assert room.peer_of("a") == {"user_id": "b", "username": "bob"}
    assert Room(name="x", private=False, owner=None, members=(), created_at="t").peer_of("a") is None


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


def _room(**fields: object) -> Room:
    base: dict[str, object] = {
        "name": "r",
        "private": True,
        "owner": "o",
        "members": ("o", "m", "m2", "u"),
        "created_at": "t",
        "moderators": ("m", "m2"),
    }
    return Room(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("actor", "token_role", "action", "target", "outcome"),
    [
        ("o", "user", "ban", "u", None),
        ("m", "user", "ban", "u", None),
        ("m", "user", "ban", "m2", "forbidden"),  # a moderator cannot act on another moderator
        ("m", "user", "mute", "o", "forbidden"),  # nor on the owner
        ("o", "user", "ban", "m", None),  # the owner can
        ("svc", "service", "ban", "m", None),  # a service token acts as the owner
        ("u", "user", "ban", "m", "forbidden"),
        ("u", "user", "remove", "u", None),  # anyone may remove themselves
        ("o", "user", "leave", "o", "conflict"),  # but the owner cannot leave
        ("m", "user", "role", "u", "forbidden"),  # roles are the owner's
        ("o", "user", "role", "o", "forbidden"),
        ("m", "user", "add", "x", None),
    ],
)
def test_moderation_rules(actor: str, token_role: str, action: str, target: str, outcome: str | None) -> None:
    room = _room()
    if outcome is None:
        authorise(room, actor, token_role, action, target)  # type: ignore[arg-type]
    else:
        with pytest.raises(ProtocolError) as caught:
            authorise(room, actor, token_role, action, target)  # type: ignore[arg-type]
        assert caught.value.code.value == outcome


def test_direct_messages_refuse_every_membership_change() -> None:
    dm = _room(dm=(("a", "ann"), ("b", "bob")), owner=None, moderators=())
    for action in ("add", "remove", "ban", "mute", "role", "leave"):
        with pytest.raises(ProtocolError) as caught:
            authorise(dm, "svc", "admin", action, "a")  # type: ignore[arg-type]
        assert caught.value.code.value == "conflict"
    assert may_delete(_room(), "m", "user", "u") and not may_delete(_room(), "u", "user", "m")
