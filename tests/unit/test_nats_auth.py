"""The NATS permission model as data (shared/nats_auth.py) and the files generated from it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from natter.credentials import NatsCredentials, operator_login, with_userinfo
from natter.envdoc import replace_block
from shared import subjects
from shared.nats_auth import (
    AUTH,
    BACKEND,
    CHAT,
    CONFIG_BEGIN,
    CONFIG_END,
    GATEWAY,
    NOTIFY,
    OPERATOR,
    TIERS,
    authorization_block,
    inbox_prefix,
    new_password,
    permissions,
)

ROOT = Path(__file__).resolve().parents[2]


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` one token, ``>`` one or more trailing tokens."""
    want, have = pattern.split("."), subject.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have) or (token != "*" and token != have[index]):
            return False
    return len(want) == len(have)


def may(tier: str, action: str, subject: str) -> bool:
    allowed = permissions(tier)[action]["allow"]  # type: ignore[index]
    return any(matches(pattern, subject) for pattern in allowed)


def test_subject_matching_helper() -> None:
    assert matches("a.>", "a.b.c") and not matches("a.>", "a")
    assert matches("a.*", "a.b") and not matches("a.*", "a.b.c")
    assert matches("$JS.API.DIRECT.GET.S", "$JS.API.DIRECT.GET.S") and not matches("x.y", "x")


@pytest.mark.parametrize("tier", [t for t in TIERS if t != OPERATOR])
def test_no_tier_but_the_operator_manages_streams(tier: str) -> None:
    for verb in ("CREATE", "UPDATE", "DELETE", "PURGE"):
        for stream in ("CHAT_MESSAGES", "KV_natter_rooms", "STEAL", "KV_natter_auth_keys"):
            assert not may(tier, "publish", f"$JS.API.STREAM.{verb}.{stream}"), (tier, verb, stream)
    assert not may(tier, "publish", "$JS.API.STREAM.MSG.DELETE.CHAT_MESSAGES")


@pytest.mark.parametrize("tier", [t for t in TIERS if t not in (OPERATOR, AUTH)])
def test_only_auth_touches_its_buckets(tier: str) -> None:
    for bucket in ("natter_auth_keys", "natter_users", "natter_refresh", "natter_sessions"):
        assert not may(tier, "publish", f"$JS.API.DIRECT.GET.KV_{bucket}.$KV.{bucket}.signing")
        assert not may(tier, "publish", f"$JS.API.DIRECT.GET.KV_{bucket}")
        assert not may(tier, "publish", f"$JS.API.CONSUMER.CREATE.KV_{bucket}")
        assert not may(tier, "publish", f"$KV.{bucket}.signing")
        assert not may(tier, "subscribe", f"$KV.{bucket}.signing")
    assert may(AUTH, "publish", "$JS.API.DIRECT.GET.KV_natter_auth_keys.$KV.natter_auth_keys.signing")


def test_the_gateway_relays_and_receives_only_what_it_must() -> None:
    for subject in (
        "auth.login",
        "auth.jwks",
        "chat.send",
        "chat.join",
        "notify.list",
        "deliver.room.general",
    ):
        assert may(GATEWAY, "publish", subject), subject
    for subject in (
        "auth.service_token",
        "auth.lookup",
        "chat.access",
        "msgs.general",
        "notif.u1",
        "events.x",
    ):
        assert not may(GATEWAY, "publish", subject), subject
    assert may(GATEWAY, "subscribe", "deliver.user.u1") and may(GATEWAY, "subscribe", "_INBOX.gateway.x.1")
    for subject in ("_INBOX.auth.x.1", "auth.login", "$KV.natter_rooms.general", "msgs.general"):
        assert not may(GATEWAY, "subscribe", subject), subject
    assert "allow_responses" not in permissions(GATEWAY)


@pytest.mark.parametrize("tier", [t for t in TIERS if t != OPERATOR])
def test_each_tier_reads_replies_only_below_its_own_inbox(tier: str) -> None:
    assert may(tier, "subscribe", f"{inbox_prefix(tier)}.nuid.1")
    for other in TIERS:
        if other not in (tier, OPERATOR):
            assert not may(tier, "subscribe", f"{inbox_prefix(other)}.nuid.1"), (tier, other)
    assert not may(tier, "subscribe", ">") and not may(tier, "subscribe", "_INBOX.x")


def test_services_answer_requests_and_only_the_gateway_gets_deliveries() -> None:
    for tier, endpoint in ((AUTH, "auth.login"), (CHAT, "chat.send"), (NOTIFY, "notify.list")):
        assert may(tier, "subscribe", endpoint) and permissions(tier)["allow_responses"] is True
        assert not may(tier, "subscribe", "deliver.all")
    assert not may(BACKEND, "subscribe", "deliver.all")
    assert may(BACKEND, "publish", subjects.NOTIFY_SEND) and not may(BACKEND, "publish", subjects.CHAT_SEND)
    assert may(NOTIFY, "publish", subjects.CHAT_ACCESS) and not may(CHAT, "publish", "notif.u1")
    # v2: chat pushes read markers to a user's sockets; only gateways receive deliveries
    assert may(CHAT, "publish", "deliver.user.u1") and not may(CHAT, "subscribe", "deliver.user.u1")
    with pytest.raises(ValueError):
        permissions("mallory")


def test_deploy_configs_hold_the_current_authorization_block() -> None:
    block = authorization_block()
    for name in ("nats.conf", "cluster.conf"):
        text = (ROOT / "deploy" / "nats" / name).read_text()
        assert replace_block(text, block, begin=CONFIG_BEGIN, end=CONFIG_END, gap="") == text, (
            f"deploy/nats/{name} is stale: natter nats-config --update deploy/nats/{name}"
        )
        for tier in TIERS:
            assert f"$NATTER_NATS_PASSWORD_{tier.upper()}" in text


def test_passwords_survive_nats_config_parsing_and_urls() -> None:
    for _ in range(200):
        password = new_password()
        assert password[0].isalpha() and password.isalnum() and len(password) >= 40
    assert with_userinfo("nats://h:4222", "gateway", "pw") == "nats://gateway:pw@h:4222"
    assert with_userinfo("nats://old:x@h:4222", "chat", "pw") == "nats://chat:pw@h:4222"


def test_credentials_file_is_private_and_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    created = NatsCredentials.load_or_create(tmp_path)
    path = tmp_path / "nats-credentials.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert NatsCredentials.load_or_create(tmp_path) == created
    assert set(created.passwords) == set(TIERS)
    assert created.env(GATEWAY) == {
        "NATTER_NATS_USER": "gateway",
        "NATTER_NATS_PASSWORD": created.passwords["gateway"],
    }
    assert created.passwords["operator"] in created.authorization()
    for name in ("NATTER_NATS_USER", "NATTER_NATS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NATTER_DATA_DIR", str(tmp_path))
    login, source = operator_login()
    assert (login.user, login.password, source) == ("operator", created.passwords["operator"], str(path))
    monkeypatch.setenv("NATTER_NATS_USER", "operator")
    monkeypatch.setenv("NATTER_NATS_PASSWORD", "from-env")
    assert operator_login(tmp_path)[0].password == "from-env"
