"""Access tokens (RS256 JWTs) and refresh token strings: pure functions, no I/O.

Access token claims (docs/subjects.md "Access tokens"): ``sub`` (user id), ``name``, ``iat``,
``exp`` (Unix seconds), ``iss``, ``aud``, ``jti``, ``sid`` (session id), ``role``, ``iat_ms``
(issue time in ms, compared with revocation ``before_ms``); header ``kid``. Service tokens have
``sub`` = ``svc-<name>`` and no ``sid``.

A refresh token is ``<token_id>.<secret>``: ``token_id`` (uuid4 hex) names the KV entry, and
only the SHA-256 of ``secret`` is stored, so a leaked KV bucket does not leak usable tokens.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
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


def seal_successor(pair: dict[str, Any], secret: str) -> str:
    """Encrypt the token pair that replaced a refresh token, with a key only the holder of that
    token's ``secret`` can derive (HKDF-SHA256, RFC 5869; AES-256-GCM): stored on the rotated
    token's record so that presenting it again within the reuse interval returns the same pair
    (PROTOCOL.md section 6), while a copy of the KV bucket reveals nothing usable.

    Returns:
        ``base64url(nonce || ciphertext)``.
    """
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(_successor_key(secret)).encrypt(nonce, json.dumps(pair).encode(), _SUCCESSOR_INFO)
    return base64.urlsafe_b64encode(nonce + sealed).decode()


def open_successor(blob: str, secret: str) -> dict[str, Any] | None:
    """Inverse of :func:`seal_successor`; ``None`` for a wrong secret or a damaged blob."""
    try:
        raw = base64.urlsafe_b64decode(blob.encode())
        plain = AESGCM(_successor_key(secret)).decrypt(raw[:12], raw[12:], _SUCCESSOR_INFO)
        pair = json.loads(plain)
    except (ValueError, InvalidTag):
        return None
    return pair if isinstance(pair, dict) else None


_SUCCESSOR_INFO: Final = b"natter refresh successor v1"


def _successor_key(secret: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SUCCESSOR_INFO).derive(secret.encode())


def sign(claims: dict[str, Any], key: SigningKey) -> str:
    """The compact RS256 JWS of ``claims`` with header ``kid`` = ``key.kid``."""
    token: str = jwt.encode(claims, key.private_pem, algorithm=ALGORITHM, headers={"kid": key.kid})
    return token
