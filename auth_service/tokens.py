"""Access tokens (RS256 JWTs) and refresh token strings: pure functions, no I/O.

Access token claims (docs/subjects.md "Access tokens"): ``sub`` (user id), ``name``, ``iat``,
``exp`` (Unix seconds), ``iss``, ``aud``, ``jti``, ``sid`` (session id), ``role``, ``iat_ms``
(issue time in ms, compared with revocation ``before_ms``); header ``kid``. Service tokens have
``sub`` = ``svc-<name>`` and no ``sid``.

A refresh token is ``<token_id>.<secret>``: ``token_id`` (uuid4 hex) names the KV entry, and
only the SHA-256 of ``secret`` is stored, so a leaked KV bucket does not leak usable tokens.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, Final

from jose import jwt

from auth_service.keys import ALGORITHM, SigningKey

TOKEN_ID_RE: Final = re.compile(r"^[0-9a-f]{32}$")
SECRET_RE: Final = re.compile(r"^[A-Za-z0-9_-]{32,128}$")
SECRET_BYTES: Final = 32
DAY_SECONDS: Final = 86_400


@dataclass(frozen=True, slots=True)
class RefreshToken:
    """A refresh token split into its KV key (``token_id``) and its ``secret``."""

    token_id: str
    secret: str

    def __str__(self) -> str:
        return f"{self.token_id}.{self.secret}"

    @property
    def secret_hash(self) -> str:
        """Hex SHA-256 of the secret, as stored in ``natter_refresh``."""
        return hash_secret(self.secret)


def new_refresh_token() -> RefreshToken:
    """A fresh token: uuid4 hex id and 32 random bytes of secret (``secrets.token_urlsafe``)."""
    return RefreshToken(token_id=uuid.uuid4().hex, secret=secrets.token_urlsafe(SECRET_BYTES))


def parse_refresh_token(text: str) -> RefreshToken | None:
    """Split ``<token_id>.<secret>``; ``None`` unless the id is 32 lowercase hex characters and
    the secret 32..128 base64url characters (so the id is always a safe KV key)."""
    token_id, dot, secret = text.partition(".")
    if not dot or TOKEN_ID_RE.fullmatch(token_id) is None or SECRET_RE.fullmatch(secret) is None:
        return None
    return RefreshToken(token_id=token_id, secret=secret)


def hash_secret(secret: str) -> str:
    """Hex SHA-256 of ``secret`` (refresh secrets are 256-bit random, so no salt/stretching)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def access_claims(
    *,
    user_id: str,
    username: str,
    session_id: str,
    role: str,
    now_ms: int,
    ttl_seconds: int,
    issuer: str,
    audience: str,
    jti: str | None = None,
) -> dict[str, Any]:
    """Claims of a user access token issued at ``now_ms`` (ms since the epoch)."""
    iat = now_ms // 1000
    return {
        "sub": user_id,
        "name": username,
        "iat": iat,
        "exp": iat + ttl_seconds,
        "iss": issuer,
        "aud": audience,
        "jti": jti or uuid.uuid4().hex,
        "sid": session_id,
        "role": role,
        "iat_ms": now_ms,
    }


def service_claims(
    *,
    name: str,
    role: str,
    now_ms: int,
    ttl_days: int,
    issuer: str,
    audience: str,
    jti: str | None = None,
) -> dict[str, Any]:
    """Claims of a service token: ``sub`` = ``svc-<name>``, ``role`` service/admin, no ``sid``."""
    iat = now_ms // 1000
    return {
        "sub": f"svc-{name}",
        "name": name,
        "iat": iat,
        "exp": iat + ttl_days * DAY_SECONDS,
        "iss": issuer,
        "aud": audience,
        "jti": jti or uuid.uuid4().hex,
        "role": role,
        "iat_ms": now_ms,
    }


def sign(claims: dict[str, Any], key: SigningKey) -> str:
    """The compact RS256 JWS of ``claims`` with header ``kid`` = ``key.kid``."""
    token: str = jwt.encode(claims, key.private_pem, algorithm=ALGORITHM, headers={"kid": key.kid})
    return token
