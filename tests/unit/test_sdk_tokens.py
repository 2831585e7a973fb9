"""natter.sdk tokens, frames and errors: refresh schedule, unverified JWT claims, URL helpers,
typed errors (pure logic)."""

from __future__ import annotations

import base64
import json

import pytest

from natter.sdk import frames
from natter.sdk.errors import ERROR_CLASSES, NotJoined, RateLimited, RequestError, error_from_frame
from natter.sdk.tokens import Tokens, jwt_claims, refresh_at


def fake_jwt(claims: dict[str, object]) -> str:
    def part(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'kid': 'k'})}.{part(claims)}.c2ln"


def test_refresh_60s_before_expiry_for_long_tokens() -> None:
    assert refresh_at(issued_at=1000, expires_at=1900) == 1840


def test_refresh_at_80_percent_for_short_tokens() -> None:
    assert refresh_at(issued_at=1000, expires_at=1006) == pytest.approx(1004.8)
    assert refresh_at(issued_at=1000, expires_at=1120) == pytest.approx(1096)


def test_refresh_of_an_already_expired_token_is_now_or_past() -> None:
    assert refresh_at(issued_at=1000, expires_at=990) <= 1000


def test_jwt_claims_are_read_without_verification() -> None:
    token = fake_jwt({"sub": "u1", "name": "alice", "iat": 100, "exp": 1000})
    assert jwt_claims(token) == {"sub": "u1", "name": "alice", "iat": 100, "exp": 1000}
    assert jwt_claims("not-a-jwt") == {}
    assert jwt_claims("a.!!!.c") == {}
    assert jwt_claims(f"a.{base64.urlsafe_b64encode(b'[1]').decode()}.c") == {}


def test_tokens_from_login_body_use_the_jwt_times() -> None:
    access = fake_jwt({"sub": "u1", "name": "alice", "iat": 100, "exp": 1000})
    tokens = Tokens.from_response(
        {
            "access_token": access,
            "refresh_token": "r1",
            "expires_in": 900,
            "user_id": "u1",
            "username": "alice",
        },
        now=150,
    )
    assert (tokens.expires_at, tokens.issued_at, tokens.refresh_token) == (1000, 100, "r1")
    assert tokens.expires_within(60, now=950) and not tokens.expires_within(60, now=900)


def test_tokens_without_claims_fall_back_to_expires_in() -> None:
    tokens = Tokens.from_access_token("opaque", expires_in=30, now=500)
    assert (tokens.expires_at, tokens.issued_at, tokens.refresh_token) == (530, 500, None)


def test_http_base_url_and_query_token() -> None:
    assert frames.http_base_url("ws://127.0.0.1:8000/ws") == "http://127.0.0.1:8000"
    assert frames.http_base_url("wss://chat.example.com/natter/ws/") == "https://chat.example.com/natter"
    url = frames.with_query_token("ws://h:1/ws?token=old&x=1", "a.b.c")
    assert url == "ws://h:1/ws?x=1&token=a.b.c"
    assert frames.redact(url) == "ws://h:1/ws"


def test_builders_leave_out_none_and_never_set_id() -> None:
    assert frames.join_frame("r") == {"type": "join", "room": "r"}
    assert frames.join_frame("r", 0) == {"type": "join", "room": "r", "since": 0}
    assert frames.history_frame("r", None, 20) == {"type": "history", "room": "r", "limit": 20}
    assert frames.mark_read_frame(all=True) == {"type": "mark_read", "all": True}
    assert frames.mark_read_frame(["a"]) == {"type": "mark_read", "ids": ["a"]}
    assert frames.dumps(frames.chat_message_frame("r", "é", "c1")) == (
        '{"type":"chat_message","room":"r","message":"é","client_msg_id":"c1"}'
    )


def test_error_frames_become_typed_exceptions() -> None:
    limited = error_from_frame(
        {
            "type": "error",
            "code": "rate_limited",
            "message": "Rate limit exceeded",
            "retry_after": 0.05,
            "id": "x",
        }
    )
    assert isinstance(limited, RateLimited) and limited.retry_after == 0.05 and limited.frame["id"] == "x"
    not_joined = error_from_frame({"type": "error", "code": "not_joined", "message": "Not joined"})
    assert isinstance(not_joined, NotJoined) and str(not_joined) == "not_joined: Not joined"
    other = error_from_frame({"type": "error", "code": "something_new"})
    assert type(other) is RequestError and other.code == "something_new"
    assert set(ERROR_CLASSES) >= {"forbidden", "invalid_room", "unavailable", "validation_error"}
