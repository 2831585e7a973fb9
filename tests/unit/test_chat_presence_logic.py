"""Presence key parsing, online lists and the janitor's dead-gateway rule (pure logic)."""

from __future__ import annotations

from chat_service.janitor import dead_gateways
from chat_service.kvscan import KvItem
from chat_service.presence import online_users, split_key


def test_split_key() -> None:
    assert split_key("general.u1.gw1") == ("general", "u1", "gw1")
    assert split_key("general.u1") is None
    assert split_key("a.b.c.d") is None
    assert split_key("general..gw1") is None


def test_online_users_are_unique_and_sorted() -> None:
    items = [
        KvItem("r.u2.g1", b'{"username":"bob"}', 1),
        KvItem("r.u1.g1", b'{"username":"Alice"}', 2),
        KvItem("r.u2.g2", b'{"username":"bob"}', 3),
        KvItem("bad-key", b"{}", 4),
        KvItem("r.u3.g1", b"not json", 5),
    ]
    users = online_users(items)
    assert [(u.user_id, u.username) for u in users] == [("u3", ""), ("u1", "Alice"), ("u2", "bob")]


def test_dead_gateways_need_the_grace_period() -> None:
    missing: dict[str, float] = {}
    present = ["g1", "g2", "g2", "g3"]
    assert dead_gateways(present, {"g1"}, missing, now=100.0, grace=5.0) == set()
    assert missing == {"g2": 100.0, "g3": 100.0}
    assert dead_gateways(present, {"g1"}, missing, now=104.9, grace=5.0) == set()
    assert dead_gateways(present, {"g1", "g3"}, missing, now=105.0, grace=5.0) == {"g2"}
    assert missing == {"g2": 100.0}  # g3 came back: forgotten


def test_dead_gateway_with_zero_grace_is_dead_at_once() -> None:
    assert dead_gateways(["g9"], set(), {}, now=1.0, grace=0.0) == {"g9"}


def test_gateway_without_keys_is_forgotten() -> None:
    missing = {"old": 1.0}
    assert dead_gateways([], set(), missing, now=50.0, grace=5.0) == set()
    assert missing == {}
