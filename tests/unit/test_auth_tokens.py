"""Pure logic of auth_service.tokens: refresh token format and JWT claim building."""

from __future__ import annotations

import pytest
from jose import jwt

from auth_service.keys import generate_signing_key
from auth_service.tokens import (
    RefreshToken,
    access_claims,
    hash_secret,
    new_refresh_token,
    parse_refresh_token,
    service_claims,
    sign,
)


def test_new_refresh_token_round_trips_through_parse() -> None:
    token = new_refresh_token()
    text = str(token)
    assert text.count(".") == 1
    assert parse_refresh_token(text) == token
    assert len(token.token_id) == 32 and len(token.secret) >= 43  # 32 random bytes, base64url


def test_refresh_tokens_are_unique() -> None:
    assert len({str(new_refresh_token()) for _ in range(200)}) == 200


@pytest.mark.parametrize(
    "text",
    [
        "",
        ".",
        "abc",
        "0" * 32,
        "0" * 32 + ".",
        "." + "s" * 43,
        "0" * 31 + "." + "s" * 43,  # id too short
        "0" * 33 + "." + "s" * 43,  # id too long
        "G" * 32 + "." + "s" * 43,  # id not hex
        "A" * 32 + "." + "s" * 43,  # id not lowercase
        "0" * 32 + "." + "s" * 31,  # secret too short
        "0" * 32 + "." + "s" * 129,  # secret too long
        "0" * 32 + "." + "s" * 42 + "=",  # not base64url
        "0" * 32 + "." + "s" * 20 + "." + "s" * 22,  # a second dot
        "0" * 32 + ".>" + "s" * 42,
        "0.*" + "s" * 40,
    ],
)
def test_parse_refresh_token_rejects_malformed(text: str) -> None:
    assert parse_refresh_token(text) is None


def test_parse_refresh_token_accepts_the_documented_shape() -> None:
    parsed = parse_refresh_token("0123456789abcdef0123456789abcdef." + "Ab_-" * 11)
    assert parsed == RefreshToken(token_id="0123456789abcdef0123456789abcdef", secret="Ab_-" * 11)


def test_secret_hash_is_sha256_hex() -> None:
    assert hash_secret("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    token = RefreshToken(token_id="0" * 32, secret="abc")
    assert token.secret_hash == hash_secret("abc")


def test_access_claims() -> None:
    claims = access_claims(
        user_id="u1",
        username="alice",
        session_id="s1",
        role="user",
        now_ms=1_767_225_600_999,
        ttl_seconds=900,
        issuer="natter",
        audience="natter",
        jti="j1",
    )
    assert claims == {
        "sub": "u1",
        "name": "alice",
        "iat": 1_767_225_600,
        "exp": 1_767_226_500,
        "iss": "natter",
        "aud": "natter",
        "jti": "j1",
        "sid": "s1",
        "role": "user",
        "iat_ms": 1_767_225_600_999,
    }


def test_access_claims_get_a_fresh_jti() -> None:
    kwargs = dict(user_id="u", username="n", session_id="s", role="user", now_ms=0, ttl_seconds=1)
    first = access_claims(**kwargs, issuer="i", audience="a")  # type: ignore[arg-type]
    second = access_claims(**kwargs, issuer="i", audience="a")  # type: ignore[arg-type]
    assert first["jti"] != second["jti"] and len(first["jti"]) == 32


def test_service_claims_have_no_session() -> None:
    claims = service_claims(
        name="billing", role="admin", now_ms=1_000_500, ttl_days=2, issuer="natter", audience="natter"
    )
    assert claims["sub"] == "svc-billing" and claims["name"] == "billing" and claims["role"] == "admin"
    assert "sid" not in claims
    assert claims["iat"] == 1000 and claims["exp"] == 1000 + 2 * 86_400 and claims["iat_ms"] == 1_000_500


def test_sign_sets_kid_and_verifies_with_the_public_jwk() -> None:
    key = generate_signing_key()
    claims = service_claims(
        name="x", role="service", now_ms=0, ttl_days=1, issuer="natter", audience="natter"
    )
    claims["exp"] = 4_102_444_800  # 2100: not expired when the test runs
    token = sign(claims, key)
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "kid": key.kid, "typ": "JWT"}
    decoded = jwt.decode(token, key.public_jwk, algorithms=["RS256"], audience="natter", issuer="natter")
    assert decoded["sub"] == "svc-x"
